from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inner_onnx.errors import InputError
from inner_onnx.io.model import OnnxModel
from tests.support.models import tiny_cnn


def test_units_and_spec_of_tiny_cnn(tiny_model_path: Path) -> None:
    model = OnnxModel.load(tiny_model_path)
    assert [u.name for u in model.units] == ["Conv_0", "Gemm_4"]
    conv, gemm = model.units
    assert (conv.neurons, conv.parameters, conv.activation) == (6, 6 * 9 + 6, "conv_relu")
    assert (gemm.neurons, gemm.neuron_axis, gemm.bias) == (4, 0, "fc.b")
    assert model.input.layout == "NCHW" and model.input.shape == (None, 1, 8, 8)
    assert model.num_classes == 4 and model.logits_name == "logits"
    assert len(model.sha256) == 64


def test_nhwc_layout_detected(tiny_nhwc_model_path: Path) -> None:
    assert OnnxModel.load(tiny_nhwc_model_path).input.layout == "NHWC"


def test_matmul_add_dense_is_one_unit_with_bias() -> None:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["dense"]),
            helper.make_node("Relu", ["dense"], ["act"]),
            helper.make_node("MatMul", ["act", "w2"], ["out_mm"]),
            helper.make_node("Softmax", ["out_mm"], ["probs"], axis=-1),
        ],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 3])],
        [
            numpy_helper.from_array(rng.normal(size=(5, 7)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(size=7).astype(np.float32), "b"),
            numpy_helper.from_array(rng.normal(size=(7, 3)).astype(np.float32), "w2"),
        ],
    )
    model = OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    first, last = model.units
    assert (first.bias, first.output, first.activation, first.neurons) == ("b", "dense", "act", 7)
    assert (last.neurons, last.bias) == (3, None)
    assert model.input.layout == "NC"
    assert model.logits_name == "out_mm"


def conv_then_add(bias_shape: tuple[int, ...]) -> OnnxModel:
    """A Conv without its own bias, then an Add of an initializer (CNTK, mnist-8), a Relu."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["conv", "b"], ["biased"]),
            helper.make_node("Relu", ["biased"], ["act"]),
            helper.make_node("Flatten", ["act"], ["flat"]),
            helper.make_node("Gemm", ["flat", "fc"], ["logits"]),
        ],
        "conv_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [
            numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(size=bias_shape).astype(np.float32), "b"),
            numpy_helper.from_array(rng.normal(size=(64, 3)).astype(np.float32), "fc"),
        ],
    )
    return OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


@pytest.mark.parametrize("bias_shape", [(4, 1, 1), (1, 4, 1, 1)])
def test_an_add_of_one_value_per_channel_is_the_conv_bias(bias_shape: tuple[int, ...]) -> None:
    conv = conv_then_add(bias_shape).units[0]
    assert (conv.bias, conv.output, conv.parameters) == ("b", "biased", 4 * 9 + 4)


def test_an_add_along_the_width_is_not_a_bias() -> None:
    conv = conv_then_add((4,)).units[0]  # broadcast over the last axis, not the channels
    assert (conv.bias, conv.output, conv.parameters) == (None, "conv", 4 * 9)


def _save(tmp_path: Path, model: onnx.ModelProto) -> Path:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


def _with_graph_change(change) -> onnx.ModelProto:
    model = tiny_cnn()
    change(model.graph)
    return model


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"hello, this is a text file\n" * 20, "not an ONNX model"),
        (bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8)), "ONNX model"),
    ],
)
def test_unreadable_model_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        OnnxModel.load(path)


def test_truncated_model(tmp_path: Path, tiny_model_path: Path) -> None:
    raw = tiny_model_path.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(InputError):
        OnnxModel.load(path)


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        OnnxModel.load(tmp_path / "nope.onnx")


def test_protobuf_that_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "tensor.onnx"
    path.write_bytes(numpy_helper.from_array(np.ones(3, np.float32), "t").SerializeToString())
    with pytest.raises(InputError, match="not an ONNX model"):
        OnnxModel.load(path)


def test_two_inputs_refused(tmp_path: Path) -> None:
    def add_input(graph: onnx.GraphProto) -> None:
        graph.input.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1]))

    model = OnnxModel.load(_save(tmp_path, _with_graph_change(add_input)))
    assert [spec.name for spec in model.inputs] == ["x", "z"]  # evaluable, not repairable
    with pytest.raises(InputError, match="2 inputs"):
        model.check_repairable()


def test_integer_input_refused(tmp_path: Path) -> None:
    def make_int(graph: onnx.GraphProto) -> None:
        graph.input[0].type.tensor_type.elem_type = TensorProto.INT64

    model = OnnxModel(_with_graph_change(make_int))
    with pytest.raises(InputError, match="float input"):
        model.check_repairable()
    with pytest.raises(InputError, match="float input"):
        _ = model.input


def test_output_not_class_scores(tmp_path: Path) -> None:
    def make_rank3(graph: onnx.GraphProto) -> None:
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 2, 2]))

    with pytest.raises(InputError, match="not class scores"):
        OnnxModel(_with_graph_change(make_rank3))


def test_no_weight_initializers() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
    )
    with pytest.raises(InputError, match="no weight initializers"):
        OnnxModel(helper.make_model(graph)).check_repairable()


def test_external_data_outside_folder_refused_before_reading(tmp_path: Path) -> None:
    model = tiny_cnn()
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    path = tmp_path / "ext.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(InputError, match="outside the model's folder"):
        OnnxModel.load(path)


def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    path = tmp_path / "ext_ok.onnx"
    onnx.save(tiny_cnn(), path, save_as_external_data=True, location="w.bin", size_threshold=0)
    assert (tmp_path / "w.bin").exists()
    model = OnnxModel.load(path)
    assert model.units[0].parameters == 60


def test_grouped_conv_transpose_is_not_a_unit() -> None:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("ConvTranspose", ["x", "w"], ["up"], group=2),
            helper.make_node("GlobalAveragePool", ["up"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1),
        ],
        "grouped",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 5, 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 3])],
        [
            numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype(np.float32), "w"),
            numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fc"),
        ],
    )
    model = OnnxModel(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [u.op for u in model.units] == ["Gemm"]
