import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from inner_onnx.errors import InputError
from inner_onnx.io.model import OnnxModel
from inner_onnx.runtime import (
    CPU,
    CUDA,
    OFFSET_SUFFIX,
    DeviceFallbackWarning,
    Runner,
    capture_pooled,
    make_session,
    pool_activation,
    pool_activation_torch,
    predict,
    predict_scores,
    select_providers,
    session_options,
    with_offsets,
)
from tests.support.torch_models import TinyTorchCNN, dense_sequence_model, export_torch


@pytest.fixture(scope="module")
def torch_cnn() -> tuple[TinyTorchCNN, OnnxModel]:
    module = TinyTorchCNN()
    return module, OnnxModel(export_torch(module, torch.zeros(2, 1, 8, 8)))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(40, 1, 8, 8)).astype(np.float32)


def hooked_activations(module: TinyTorchCNN, x: np.ndarray, names: tuple[str, ...]) -> dict:
    """Module outputs by module name, mean-pooled over the spatial axes (written out here)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(module, name).register_forward_hook(
            lambda _m, _i, out, name=name: seen.__setitem__(name, out.detach())
        )
        for name in names
    ]
    with torch.no_grad():
        module(torch.from_numpy(x))
    for hook in hooks:
        hook.remove()
    return {n: (t.mean(dim=(2, 3)) if t.dim() == 4 else t).numpy() for n, t in seen.items()}


def test_captured_activations_equal_torch_forward_hooks(torch_cnn, images) -> None:
    module, model = torch_cnn
    expected = hooked_activations(module, images, TinyTorchCNN.activation_modules)
    captured = capture_pooled(model, images, device="cpu")
    assert list(captured) == [unit.name for unit in model.units]
    for unit, module_name in zip(model.units, TinyTorchCNN.activation_modules):
        assert captured[unit.name].dtype == np.float32
        np.testing.assert_allclose(captured[unit.name], expected[module_name], atol=1e-5)


def test_marking_a_relu_output_keeps_conv_relu_fused_and_exact(torch_cnn, tmp_path: Path) -> None:
    """onnxruntime fuses Conv+Relu even with the Relu output marked; the value stays the Relu's."""
    _, model = torch_cnn
    marked = onnx.ModelProto()
    marked.CopyFrom(model.proto)
    marked.graph.output.extend(onnx.ValueInfoProto(name=u.activation) for u in model.units[:2])
    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(marked.SerializeToString(), options, providers=[CPU])
    optimized_ops = [node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node]
    assert "Relu" not in optimized_ops[: optimized_ops.index("Flatten")]


def test_pre_activation_outputs_are_captured_too(torch_cnn, images) -> None:
    """Marking a Conv output that onnxruntime would fuse into Conv+Relu still gives the Conv."""
    module, model = torch_cnn
    conv_units = [dataclasses.replace(u, activation=u.output) for u in model.units[:2]]
    expected = hooked_activations(module, images, ("conv1", "conv2"))
    captured = Runner(model, "cpu").pooled(images, conv_units)
    for unit, module_name in zip(conv_units, ("conv1", "conv2")):
        np.testing.assert_allclose(captured[unit.name], expected[module_name], atol=1e-5)


def test_matmul_add_dense_layers_pool_over_positions() -> None:
    proto, w = dense_sequence_model()
    model = OnnxModel(proto)
    x = np.random.default_rng(1).normal(size=(9, 4, 5)).astype(np.float32)
    hidden = np.maximum(x @ w["w1"] + w["b1"], 0)
    logits = hidden.reshape(9, 28) @ w["w2"] + w["b2"]
    capture = Runner(model, "cpu").capture(x)
    np.testing.assert_allclose(capture.pooled["dense1"], hidden.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(capture.pooled["dense2"], logits, atol=1e-5)
    np.testing.assert_allclose(capture.scores, logits, atol=1e-5)


def test_batch_size_does_not_change_results(torch_cnn, images) -> None:
    _, model = torch_cnn
    runner = Runner(model, "cpu")
    small, large = runner.capture(images, batch_size=7), runner.capture(images, batch_size=256)
    np.testing.assert_array_equal(small.scores, large.scores)
    for name in large.pooled:
        np.testing.assert_array_equal(small.pooled[name], large.pooled[name])


def test_marking_outputs_does_not_change_scores(torch_cnn, images) -> None:
    module, model = torch_cnn
    runner = Runner(model, "cpu")
    plain = runner.scores(images, batch_size=16)
    np.testing.assert_allclose(runner.capture(images, batch_size=16).scores, plain, atol=1e-6)
    with torch.no_grad():
        reference = module(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(plain, reference, atol=1e-5)
    np.testing.assert_array_equal(predict(model, images, device="cpu"), plain.argmax(axis=1))
    np.testing.assert_array_equal(predict_scores(model, images, batch_size=5), plain)


def test_fixed_batch_axis_runs_padded_batches(images) -> None:
    module = TinyTorchCNN()
    buffer_model = export_torch(module, torch.zeros(2, 1, 8, 8))
    # Pin the batch axis to 4, as an exporter without dynamic axes would.
    for value in (*buffer_model.graph.input, *buffer_model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    model = OnnxModel(buffer_model)
    assert model.input.shape[0] == 4
    capture = Runner(model, "cpu").capture(images[:10], batch_size=256)
    with torch.no_grad():
        reference = module(torch.from_numpy(images[:10])).numpy()
    assert capture.scores.shape == (10, 3)
    np.testing.assert_allclose(capture.scores, reference, atol=1e-5)


def test_progress_counts_every_sample(torch_cnn, images) -> None:
    _, model = torch_cnn
    advances: list[int] = []
    Runner(model, "cpu").pooled(images, batch_size=16, progress=advances.append)
    assert advances == [16, 16, 8]


def test_sessions_are_reused_per_output_set(torch_cnn) -> None:
    _, model = torch_cnn
    runner = Runner(model, "cpu")
    names = [u.activation for u in model.units[:2]]
    assert runner.session(names) is runner.session(names[::-1])
    assert runner.session(names) is not runner.session()


def test_released_sessions_are_made_again_with_the_same_scores(torch_cnn, images) -> None:
    _, model = torch_cnn
    runner = Runner(model, "cpu")
    first, scores = runner.session(), runner.predict(images)
    runner.release()
    assert runner.session() is not first
    np.testing.assert_array_equal(runner.predict(images), scores)


def test_make_session_leaves_the_proto_alone(torch_cnn, images) -> None:
    _, model = torch_cnn
    before = model.proto.SerializeToString()
    names = [u.activation for u in model.units]
    session = make_session(model.proto, "cpu", names)
    assert [o.name for o in session.get_outputs()] == [model.output_name, *names[:-1]]
    assert model.proto.SerializeToString() == before
    with pytest.raises(InputError, match="no tensor named 'nope'"):
        make_session(model.proto, "cpu", ["nope"])


def test_wrong_input_layout_is_an_input_error(torch_cnn, images) -> None:
    _, model = torch_cnn
    with pytest.raises(InputError, match="transpose"):
        predict_scores(model, images.transpose(0, 2, 3, 1), device="cpu")


def test_device_selection() -> None:
    assert select_providers("cpu") == [CPU]
    auto = select_providers("auto")
    assert auto == ([CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU])
    with pytest.raises(InputError, match="unknown device 'tpu'"):
        select_providers("tpu")


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA is available here")
def test_cuda_falls_back_to_cpu_with_a_warning(torch_cnn) -> None:
    with pytest.warns(DeviceFallbackWarning, match="running on CPU"):
        assert select_providers("cuda") == [CPU]
    with pytest.warns(DeviceFallbackWarning):
        runner = Runner(torch_cnn[1], "cuda")
    assert runner.session().get_providers() == [CPU]


DENSE_UNIT = OnnxModel(dense_sequence_model()[0]).units[0]


def _unit(op: str, neurons: int):
    return dataclasses.replace(DENSE_UNIT, op=op, neurons=neurons)


@pytest.mark.parametrize(
    ("op", "shape", "expected_axes"),
    [
        ("Conv", (3, 5, 4, 4), (2, 3)),
        ("Conv", (3, 5, 6), (2,)),
        ("ConvTranspose", (3, 5, 2, 2, 2), (2, 3, 4)),
        ("MatMul", (3, 4, 5), (1,)),
        ("MatMul", (3, 2, 4, 5), (1, 2)),
        ("Gemm", (3, 5), ()),
    ],
)
def test_numpy_and_torch_pooling_agree(op: str, shape: tuple, expected_axes: tuple) -> None:
    unit = _unit(op, 5)
    array = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    pooled = pool_activation(array, unit)
    assert pooled.shape == (3, 5) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, array.mean(axis=expected_axes), atol=1e-6)
    tensor = torch.from_numpy(array).requires_grad_()
    pooled_torch = pool_activation_torch(tensor, unit)
    np.testing.assert_allclose(pooled_torch.detach().numpy(), pooled, atol=1e-6)
    pooled_torch.sum().backward()
    assert tensor.grad is not None


def test_pooling_rejects_channel_mismatch() -> None:
    with pytest.raises(ValueError, match="4 channels where the unit has 5 neurons"):
        pool_activation(np.zeros((2, 4, 3, 3), np.float32), _unit("Conv", 5))
    with pytest.raises(ValueError, match="rank 1"):
        pool_activation_torch(torch.zeros(5), _unit("Gemm", 5))


def test_units_without_a_row_per_sample_are_found() -> None:
    """The exported nn.MultiheadAttention runs sequence-first: its input projection gives
    [tokens, N, 3C] and its output projection [tokens * N, C]; the MLP keeps [N, tokens, C]."""
    from tests.support.vit import tiny_vit

    model = OnnxModel(tiny_vit())
    runner = Runner(model, "cpu")
    x = np.random.default_rng(0).normal(size=(6, 1, 8, 8)).astype(np.float32)
    kept = runner.batch_first_units(x, model.units)
    left_out = [(u.op, u.neurons) for u in model.units if u not in kept]
    assert left_out == [("MatMul", 48), ("Gemm", 16)]
    assert [(u.op, u.neurons, u.activation_op) for u in kept] == [
        ("Conv", 16, None),
        ("MatMul", 32, "Gelu"),
        ("MatMul", 16, None),
        ("Gemm", 3, None),
    ]
    pooled = runner.pooled(x, kept)
    assert all(pooled[u.name].shape == (6, u.neurons) for u in kept)


@pytest.mark.parametrize("table_type", [TensorProto.FLOAT, TensorProto.FLOAT16])
def test_with_offsets_adds_a_float_input_to_a_node_output(table_type: int) -> None:
    """An embedding offset fed as float32 is added after the Gather, cast to the table's type."""
    table = np.arange(12, dtype=helper.tensor_dtype_to_np_dtype(table_type)).reshape(4, 3)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["emb"]),
            helper.make_node("Cast", ["emb"], ["out"], to=TensorProto.FLOAT),
        ],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 2, 3])],
        [numpy_helper.from_array(table, "table")],
    )
    proto = with_offsets(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), ["emb"]
    )
    ids = np.array([[0, 3]], dtype=np.int64)
    offset = np.full((1, 2, 3), 0.5, dtype=np.float32)
    (out,) = make_session(proto, "cpu").run(["out"], {"ids": ids, "emb" + OFFSET_SUFFIX: offset})
    np.testing.assert_allclose(out, table[ids].astype(np.float32) + 0.5)
