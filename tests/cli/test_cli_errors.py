"""End-to-end refusals of bad input through the CLI (issue 7).

Every case must end with exit status 2, exactly one `error: ...` line on
stderr, no traceback, and the working folder exactly as it was: nothing
written (no output, no temporary file) and no input touched. The loader-level
checks have their own unit tests (test_model.py, test_data.py); these go
through `main()` the way a pipeline calls the tool.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.support.cli import folder_state, run_cli, save_npz
from tests.support.models import tiny_cnn

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_refused(
    args: list[object], capsys: pytest.CaptureFixture[str], folder: Path, pattern: str
) -> str:
    """Run the CLI and check the refusal contract; returns the error line."""
    before = folder_state(folder)
    status, out, err = run_cli(args, capsys)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert re.search(pattern, lines[0]), lines[0]
    assert out == ""
    assert folder_state(folder) == before, "a refused command changed the folder"
    return lines[0]


class Workspace:
    """The tiny model and data in a fresh folder, and the CLI run against them."""

    def __init__(self, folder: Path, model: Path, data: Path, capsys: pytest.CaptureFixture[str]):
        self.folder, self.model, self.data, self.capsys = folder, model, data, capsys

    def refuse(self, args: list[object], pattern: str) -> str:
        return assert_refused(args, self.capsys, self.folder, pattern)

    def run(self, args: list[object]) -> tuple[int, str, str]:
        return run_cli(args, self.capsys)


@pytest.fixture
def ws(
    tmp_path: Path, tiny_model_path: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> Workspace:
    return Workspace(tmp_path, tiny_model_path, tiny_data, capsys)


# --- models ------------------------------------------------------------------------------------


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _proto(model: onnx.ModelProto) -> Callable[[Path], Path]:
    return lambda folder: _write(folder / "bad.onnx", model.SerializeToString())


def _changed(change: Callable[[onnx.GraphProto], None]) -> onnx.ModelProto:
    model = tiny_cnn()
    change(model.graph)
    return model


def _add_input(graph: onnx.GraphProto) -> None:
    graph.input.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [None, 4]))


def _integer_input(graph: onnx.GraphProto) -> None:
    graph.input[0].type.tensor_type.elem_type = TensorProto.INT64


def _rank3_output(graph: onnx.GraphProto) -> None:
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 4, 1]))


def _single_score_output(graph: onnx.GraphProto) -> None:
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 1]))


def no_weights_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["scores"])],
        "no_weights",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def unsupported_ops_model() -> onnx.ModelProto:
    """The tiny CNN with two Unique nodes and a NonMaxSuppression node as side outputs."""
    model = tiny_cnn()
    graph = model.graph
    rng = np.random.default_rng(0)
    graph.initializer.extend(
        [
            numpy_helper.from_array(rng.random((1, 5, 4)).astype(np.float32), "boxes"),
            numpy_helper.from_array(rng.random((1, 1, 5)).astype(np.float32), "box_scores"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Unique", ["logits"], ["classes_seen"], name="distinct"),
            helper.make_node("Unique", ["classes_seen"], ["again_seen"], name="again"),
            helper.make_node("NonMaxSuppression", ["boxes", "box_scores"], ["kept"], name="nms"),
        ]
    )
    graph.output.extend(
        [
            helper.make_tensor_value_info("again_seen", TensorProto.FLOAT, [None]),
            helper.make_tensor_value_info("kept", TensorProto.INT64, [None, 3]),
        ]
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _truncated(folder: Path) -> Path:
    raw = tiny_cnn().SerializeToString()
    return _write(folder / "bad.onnx", raw[: len(raw) * 2 // 3])


def _random_bytes(folder: Path) -> Path:
    content = np.random.default_rng(7).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    return _write(folder / "bad.onnx", content)


def _folder(folder: Path) -> Path:
    (folder / "model_dir.onnx").mkdir()
    return folder / "model_dir.onnx"


def _npz_as_model(folder: Path) -> Path:
    return save_npz(folder / "data_as_model.npz", x=np.zeros((2, 1, 8, 8), np.float32), y=[0, 1])


def _external(location: str) -> Callable[[Path], Path]:
    """The tiny CNN with its first initializer stored externally at `location`."""

    def build(folder: Path) -> Path:
        model = tiny_cnn()
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", location
        (folder / "models").mkdir(exist_ok=True)
        return _write(folder / "models" / "ext.onnx", model.SerializeToString())

    return build


def _external_symlink(folder: Path) -> Path:
    """External data named inside the folder, but through a symlink that leads outside it."""
    path = _external("weights.bin")(folder)
    secret = _write(folder / "secret.bin", np.zeros(54, np.float32).tobytes())
    (path.parent / "weights.bin").symlink_to(secret)
    return path


def _external_symlink_loop(folder: Path) -> Path:
    path = _external("loop.bin")(folder)
    (path.parent / "loop.bin").symlink_to("loop.bin")
    return path


MODEL_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda folder: folder / "nope.onnx", "model file not found"),
    "folder": (_folder, "is a folder"),
    "empty": (lambda folder: _write(folder / "bad.onnx", b""), "empty"),
    "truncated": (_truncated, "ONNX model"),
    "random bytes": (_random_bytes, "ONNX model"),
    "text": (lambda folder: _write(folder / "bad.onnx", b"a text file\n" * 40), "not an ONNX"),
    "npz given as model": (_npz_as_model, "ONNX model"),
    "tensor protobuf": (
        _proto(numpy_helper.from_array(np.ones(3, np.float32), "t")),  # type: ignore[arg-type]
        "not an ONNX model",
    ),
    "graph protobuf": (_proto(tiny_cnn().graph), "not an ONNX model"),  # type: ignore[arg-type]
    "external data ../": (_external("../secret.bin"), "outside the model's folder"),
    "external data absolute": (_external("/etc/hostname"), "outside the model's folder"),
    "external data symlink": (_external_symlink, "outside the model's folder"),
    "external data missing": (_external("weights.bin"), "external data file .* is missing"),
    "external data NUL byte": (_external("w\x00.bin"), "external data"),
    "external data long name": (_external("w" * 300), "external data"),
    "external data symlink loop": (_external_symlink_loop, "external data"),
    "no weights": (_proto(no_weights_model()), "no weight initializers"),
    "two inputs": (_proto(_changed(_add_input)), "2 inputs"),
    "integer input": (_proto(_changed(_integer_input)), "float input"),
    "rank-3 output": (_proto(_changed(_rank3_output)), "not class scores"),
    "one-score output": (_proto(_changed(_single_score_output)), "not class scores"),
}


def _commands(model: Path, data: Path, folder: Path) -> dict[str, list[object]]:
    out = folder / "out.onnx"
    return {
        "inspect": ["inspect", model],
        "evaluate": ["evaluate", model, "-d", data, "--json"],
        "localize": ["localize", model, "-d", data, "--scenario", "wrong", "-o", folder / "f.json"],
        "repair": ["repair", model, "-d", data, "--scenario", "wrong", "-o", out, "--epochs", "2"],
    }


EVALUATE_REFUSALS = {
    "no weights": r"x has shape \[N, 1, 8, 8\] but the model input 'x' expects \[N, 4\]",
    "two inputs": "no array 'mask'",
    "integer input": "x is float32, but model input 'x' takes int64",
}
# Models that are ONNX but not what repair needs: `inspect` describes them and says why.
REPORTED_BY_INSPECT = ("no weights", "two inputs", "integer input", "rank-3 output", "one-score")


@pytest.mark.parametrize("command", ["inspect", "evaluate", "localize", "repair"])
@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_bad_model_refused(case: str, command: str, ws: Workspace) -> None:
    build, pattern = MODEL_CASES[case]
    model = build(ws.folder)
    if command == "inspect" and case.startswith(REPORTED_BY_INSPECT):
        status, out, err = ws.run(["inspect", model, "--json"])
        assert status == 0, err
        problems = json.loads(out)["problems"]
        assert len(problems) == 1 and re.search(pattern, problems[0]), problems
        return
    if command == "evaluate":
        # evaluating runs any model onnxruntime runs: the image data is what does not fit
        pattern = EVALUATE_REFUSALS.get(case, pattern)
    ws.refuse(_commands(model, ws.data, ws.folder)[command], pattern)


def test_external_data_outside_refused_before_reading(
    monkeypatch: pytest.MonkeyPatch, ws: Workspace
) -> None:
    """The refusal comes from the path alone: the outside file is never opened."""
    model = _external("../secret.bin")(ws.folder)
    secret = _write(ws.folder / "secret.bin", np.zeros(54, np.float32).tobytes())
    opened: list[Path] = []

    def spy(real: Callable) -> Callable:
        def opening(file, *args, **kwargs):
            if isinstance(file, (str, Path)):
                opened.append(Path(file).resolve())
            return real(file, *args, **kwargs)

        return opening

    with monkeypatch.context() as patched:
        for target in (builtins, io, os):
            patched.setattr(target, "open", spy(target.open))
        status, _, err = ws.run(["inspect", model])
    assert status == 2 and "outside the model's folder" in err
    assert model.resolve() in opened, "the spy saw nothing: it is not watching the loader"
    assert secret.resolve() not in opened


def unsupported_scores_model() -> onnx.ModelProto:
    """`unsupported_ops_model` whose class scores pass two ai.onnx.ml Binarizer nodes, which
    onnxruntime runs and the torch view does not."""
    model = unsupported_ops_model()
    graph = model.graph
    binarize = [
        helper.make_node(
            "Binarizer", [source], [target], name=name, domain="ai.onnx.ml", threshold=0.0
        )
        for source, target, name in (
            ("logits", "signs", "binarize"),
            ("signs", "scores", "binarize_again"),
        )
    ]
    graph.node.extend(binarize)
    graph.output[0].CopyFrom(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 4]))
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 3))
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("command", ["localize", "repair"])
def test_unsupported_ops_named_with_nodes(command: str, ws: Workspace) -> None:
    """Only the nodes the class scores need are named: the side outputs' Unique and
    NonMaxSuppression are left to onnxruntime."""
    model = _proto(unsupported_scores_model())(ws.folder)
    line = ws.refuse(_commands(model, ws.data, ws.folder)[command], "unsupported")
    assert re.search(r"Binarizer \(node binarize\b.*1 more", line), line
    assert "Unique" not in line and "NonMaxSuppression" not in line


def test_unsupported_ops_refused_for_attacks(ws: Workspace) -> None:
    """Attacks need the torch view; plain evaluation runs in onnxruntime and is allowed."""
    model = _proto(unsupported_scores_model())(ws.folder)
    args = ["evaluate", model, "-d", ws.data, "--attack", "fgsm:eps=0.1"]
    assert "Binarizer" in ws.refuse(args, "unsupported")
    status, _, err = ws.run(["evaluate", model, "-d", ws.data])
    assert status == 0, err


def test_side_outputs_the_view_cannot_run_do_not_stop_attacks(ws: Workspace) -> None:
    """Unsupported nodes off the class scores' path (a scikit-learn export's label lookup,
    here Unique and NonMaxSuppression) stay in the graph for onnxruntime alone."""
    model = _proto(unsupported_ops_model())(ws.folder)
    args = ["evaluate", model, "-d", ws.data, "--attack", "fgsm:eps=0.1", "--json"]
    status, out, err = ws.run(args)
    assert status == 0, err
    assert json.loads(out)["robust_accuracy"] is not None


def test_inspect_lists_unsupported_ops_without_failing(ws: Workspace) -> None:
    model = _proto(unsupported_ops_model())(ws.folder)
    status, out, err = ws.run(["inspect", model, "--json"])
    assert status == 0, err
    assert '"node": "distinct"' in out and '"op": "NonMaxSuppression"' in out


# --- data --------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
X = RNG.random((12, 1, 8, 8)).astype(np.float32)
Y = RNG.integers(0, 4, 12)

DATA_CASES: dict[str, tuple[dict[str, object], str]] = {
    "no x": ({"y": Y}, "no array 'x'"),
    "no y": ({"x": X}, "no array 'y'"),
    "pickled objects": ({"x": np.array([{"a": 1}] * 12, dtype=object), "y": Y}, "pickled"),
    "NaN": ({"x": np.where(X > 0.95, np.nan, X), "y": Y}, "NaN or infinite"),
    "inf": ({"x": np.where(X > 0.95, -np.inf, X), "y": Y}, "NaN or infinite"),
    "NHWC for NCHW": ({"x": X.transpose(0, 2, 3, 1), "y": Y}, r"transpose\(0, 3, 1, 2\)"),
    "no channel axis": ({"x": X[:, 0], "y": Y}, "channel axis"),
    "wrong size": ({"x": np.zeros((12, 1, 9, 9), np.float32), "y": Y}, "expects"),
    "float64": ({"x": X.astype(np.float64), "y": Y}, "float32"),
    "float labels": ({"x": X, "y": Y.astype(np.float32)}, "integer class labels"),
    "label out of range": ({"x": X, "y": np.where(Y == 0, 4, Y)}, "out of range"),
    "negative label": ({"x": X, "y": Y - 1}, "negative"),
    "empty": ({"x": X[:0], "y": Y[:0]}, "empty"),
    "mismatched lengths": ({"x": X, "y": Y[:5]}, "12 samples but y has 5"),
}


def _data_file(folder: Path, case: str) -> Path:
    arrays, _ = DATA_CASES[case]
    return save_npz(folder / "bad_data.npz", **arrays)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", ["inspect", "evaluate", "localize", "repair"])
@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_refused(case: str, command: str, ws: Workspace) -> None:
    data = _data_file(ws.folder, case)
    args = _commands(ws.model, data, ws.folder)[command]
    if command == "inspect":
        args += ["-d", data]
    ws.refuse(args, DATA_CASES[case][1])


@pytest.mark.parametrize("case", ["pickled objects", "label out of range", "mismatched lengths"])
@pytest.mark.parametrize("command", ["evaluate", "repair"])
def test_bad_bad_samples_refused(case: str, command: str, ws: Workspace) -> None:
    bad = _data_file(ws.folder, case)
    args: list[object] = [command, ws.model, "-d", ws.data, "--bad", bad]
    if command == "repair":
        args += ["--scenario", "backdoor", "--target-label", "0", "-o", ws.folder / "o.onnx"]
    ws.refuse(args, DATA_CASES[case][1])


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A .npy that declares `shape` but holds 16 bytes of data."""
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + bytes(16)


def _unknown_compression() -> bytes:
    raw = bytearray(_zip({"x.npy": _npy(X), "y.npy": _npy(Y)}))
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # local and central headers
        start = 0
        while (start := raw.find(header, start)) >= 0:
            offset = 8 if header == b"PK\x03\x04" else 10
            raw[start + offset : start + offset + 2] = (99).to_bytes(2, "little")
            start += 4
    return bytes(raw)


UNREADABLE_DATA: dict[str, tuple[bytes, str]] = {
    "empty file": (b"", "not a readable"),
    "broken zip": (b"PK\x03\x04broken", "not a readable"),
    "csv text": (b"x,y\n1,2\n", "zip"),
    "members not .npy": (_zip({"x.npy": b"1 2 3", "y.npy": b""}), "not a saved numpy array"),
    "truncated member": (_zip({"x.npy": _npy(X)[:200], "y.npy": _npy(Y)}), "not a readable"),
    "unknown compression": (_unknown_compression(), "not a readable"),
    "declares 4 TiB": (
        _zip({"x.npy": _npy_header_only((1 << 40,)), "y.npy": _npy(Y)}),
        "too large|not a readable",
    ),
}


@pytest.mark.parametrize("case", list(UNREADABLE_DATA))
def test_unreadable_data_file_refused(case: str, ws: Workspace) -> None:
    content, pattern = UNREADABLE_DATA[case]
    data = _write(ws.folder / "d.npz", content)
    ws.refuse(["evaluate", ws.model, "-d", data], pattern)


def test_missing_data_file_refused(ws: Workspace) -> None:
    args = ["evaluate", ws.model, "-d", ws.folder / "none.npz"]
    ws.refuse(args, "data file not found")


def test_nchw_data_for_nhwc_model_refused(tiny_nhwc_model_path: Path, ws: Workspace) -> None:
    args = ["evaluate", tiny_nhwc_model_path, "-d", ws.data]
    ws.refuse(args, r"expects NHWC .*transpose\(0, 2, 3, 1\)")


# --- options and specs -------------------------------------------------------------------------


@pytest.fixture
def patch_file(tmp_path: Path) -> Path:
    path = tmp_path / "patch.npy"
    np.save(path, np.ones((1, 3, 3), np.float32))
    return path


def _repair(model: Path, data: Path, folder: Path, *options: object) -> list[object]:
    return ["repair", model, "-d", data, "-o", folder / "out.onnx", "--epochs", "2", *options]


BAD_ATTACKS = [
    "fgsm",
    "fgsm:",
    "fgsm:eps",
    "fgsm:eps=",
    "fgsm:eps=abc",
    "fgsm:eps=-0.1",
    "fgsm:eps=0",
    "fgsm:eps=nan",
    "fgsm:eps=inf",
    "fgsm:eps=0.1,eps=0.2",
    "fgsm:eps=0.1,steps=3",
    "pgd:steps=10",
    "pgd:eps=0.1,steps=0",
    "pgd:eps=0.1,steps=2.5",
    "pgd:eps=0.1,alpha=-1",
    "cw:eps=0.1",
    ":eps=0.1",
    "",
]


@pytest.mark.parametrize("spec", BAD_ATTACKS)
def test_malformed_attack_spec(spec: str, ws: Workspace) -> None:
    args = _repair(ws.model, ws.data, ws.folder, "--scenario", "adversarial")
    ws.refuse([*args, "--attack", spec], "attack")


def test_malformed_attack_spec_in_evaluate(ws: Workspace) -> None:
    args = ["evaluate", ws.model, "-d", ws.data, "--attack", "pgd:eps=0.1,steps=-1"]
    ws.refuse(args, r"malformed attack spec .*steps")


BAD_TRIGGERS = [
    ("patch", "malformed trigger"),
    ("patch:{patch}", "@ROW,COL"),
    ("patch:{patch}@1", "ROW,COL"),
    ("patch:{patch}@a,b", "whole number"),
    ("patch:{patch}@-1,0", ">= 0"),
    ("patch:{folder}/none.npy@0,0", "not found"),
    ("patch:{data}@0,0", "not a .npy|npz"),
    ("patch:{text}@0,0", "not a .npy"),
    ("patch:{pickled}@0,0", "pickled"),
    ("patch:{integers}@0,0", "float"),
    ("patch:{nan}@0,0", "NaN"),
    ("patch:@0,0", "missing file"),
    ("blend:{patch}", "alpha"),
    ("blend:{patch},alpha=0", r"\(0, 1\]"),
    ("blend:{patch},alpha=1.5", r"\(0, 1\]"),
    ("blend:{patch},beta=0.2", "unknown key"),
    ("stripes:{patch}", "unknown kind"),
    # Well-formed specs that do not fit the model's 1x8x8 input:
    ("patch:{patch}@7,7", "."),
    ("patch:{large}@0,0", "."),
    ("blend:{patch},alpha=0.2", "."),
]


@pytest.fixture
def trigger_files(tmp_path: Path, patch_file: Path, tiny_data: Path) -> dict[str, Path]:
    files = {"patch": patch_file, "folder": tmp_path, "data": tiny_data}
    files["text"] = _write(tmp_path / "text.npy", b"1 2 3\n")
    files["pickled"] = tmp_path / "pickled.npy"
    np.save(files["pickled"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files["integers"] = tmp_path / "integers.npy"
    np.save(files["integers"], np.ones((3, 3), np.int64))
    files["nan"] = tmp_path / "nan.npy"
    np.save(files["nan"], np.full((3, 3), np.nan, np.float32))
    files["large"] = tmp_path / "large.npy"
    np.save(files["large"], np.ones((1, 9, 9), np.float32))
    return files


@pytest.mark.parametrize(("template", "pattern"), BAD_TRIGGERS)
def test_malformed_or_unfit_trigger_spec(
    template: str, pattern: str, trigger_files: dict[str, Path], ws: Workspace
) -> None:
    spec = template.format(**trigger_files)
    args = _repair(ws.model, ws.data, ws.folder, "--scenario", "backdoor")
    ws.refuse([*args, "--trigger", spec, "--target-label", "0"], pattern)


@pytest.mark.parametrize(
    ("options", "pattern"),
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
    argvalues=[
        (["--scenario", "poison"], "unknown scenario 'poison'"),
        (["--scenario", ""], "unknown scenario"),
        (["--scenario", "adversarial"], "needs --attack"),
        (["--scenario", "wrong", "--attack", "fgsm:eps=0.1"], "does not fit"),
        (["--scenario", "adversarial", "--bad", "{data}"], "does not fit"),
        (["--scenario", "backdoor", "--bad", "{data}", "--attack", "fgsm:eps=0.1"], "one source"),
        (["--scenario", "backdoor", "--trigger", "patch:{patch}@0,0"], "--target-label"),
        (["--scenario", "backdoor", "--bad", "{data}", "--target-label", "4"], "out of range"),
        (["--scenario", "backdoor", "--bad", "{data}", "--target-label", "-1"], "out of range"),
        (["--scenario", "adversarial", "--attack", "fgsm:eps=0.1", "--clip", "1,0"], "--clip"),
        (["--scenario", "adversarial", "--attack", "fgsm:eps=0.1", "--clip", "0"], "--clip"),
        (["--scenario", "adversarial", "--attack", "fgsm:eps=0.1", "--clip", "0,0.5"], "clip"),
        (["--scenario", "wrong", "--faults", "{folder}/none.json"], "fault set not found"),
        (["--scenario", "wrong", "--faults", "{data}"], "not a JSON fault set"),
        (["--scenario", "wrong", "--eval-bad", "{data}"], "--eval-bad needs --eval"),
        (["--scenario", "wrong", "--eval", "{folder}/none.npz"], "data file not found"),
        (["--scenario", "wrong", "--eval", "{patch}"], "not a zip archive"),
        (
            [
                "--scenario",
                "backdoor",
                "--bad",
                "{data}",
                "--eval",
                "{data}",
                "--eval-bad",
                "{patch}",
            ],
            "not a zip archive",
        ),
        (["--scenario", "wrong", "--epochs", "many"], "epochs"),
        (["--scenario", "wrong", "--seed", "1.5"], "seed"),
        (["--scenario", "wrong", "--seed", "-1"], "seed"),
        (["--scenario", "wrong", "--seed", str(2**70)], "seed"),
        (
            ["--scenario", "adversarial", "--attack", "fgsm:eps=0.1", "--clip", "-1e300,1e300"],
            "clip",
        ),
        (["--scenario", "wrong", "--no-such-option"], "no-such-option"),
        ([], "scenario"),
    ],
)
def test_bad_repair_options(
    options: list[str], pattern: str, patch_file: Path, ws: Workspace
) -> None:
    names = {"data": ws.data, "patch": patch_file, "folder": ws.folder}
    filled = [option.format(**names) for option in options]
    ws.refuse(_repair(ws.model, ws.data, ws.folder, *filled), pattern)


@pytest.mark.parametrize(
    ("options", "pattern"),
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
    argvalues=[
        (["--target-label", "9", "--bad", "{data}"], "out of range"),
        (["--target-label", "1"], "--target-label needs --bad"),
        (["--attack", "fgsm:eps=0.1", "--clip", "a,b"], "--clip"),
        (["--device", "tpu"], "device"),
        (["--attack", "fgsm:eps=0.1", "--seed", "-5"], "seed"),
    ],
)
def test_bad_evaluate_options(options: list[str], pattern: str, ws: Workspace) -> None:
    filled = [option.format(data=ws.data) for option in options]
    args = ["evaluate", ws.model, "-d", ws.data, *filled]
    ws.refuse(args, pattern)


def test_localize_without_bad_source(ws: Workspace) -> None:
    args = ["localize", ws.model, "-d", ws.data, "-o", ws.folder / "f.json"]
    ws.refuse(args, "give --bad, --trigger, --attack or --scenario wrong")


def test_unknown_command_and_missing_argument(ws: Workspace) -> None:
    ws.refuse(["transmogrify"], "transmogrify")
    ws.refuse(["inspect"], "(?i)missing argument .model")


# --- output paths ------------------------------------------------------------------------------


def _outputs(folder: Path, model: Path, data: Path) -> dict[str, tuple[Path, str]]:
    (folder / "taken.onnx").write_bytes(b"precious")
    (folder / "link.onnx").symlink_to(model)
    return {
        "same as model": (model, "same file as the input"),
        "same as data": (data, "same file as the input"),
        "symlink to model": (folder / "link.onnx", "same file as the input"),
        "same via ..": (folder / "sub" / ".." / model.name, "same file as the input|folder"),
        "missing folder": (folder / "no" / "such" / "out.onnx", "output folder does not exist"),
        "is a folder": (folder, "is a folder"),
        "exists": (folder / "taken.onnx", "exists; pass --force"),
    }


OUTPUT_CASES = [
    "same as model",
    "same as data",
    "symlink to model",
    "same via ..",
    "missing folder",
    "is a folder",
    "exists",
]


@pytest.mark.parametrize("command", ["repair", "localize"])
@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_bad_output_path(case: str, command: str, ws: Workspace) -> None:
    output, pattern = _outputs(ws.folder, ws.model, ws.data)[case]
    args = [command, ws.model, "-d", ws.data, "--scenario", "wrong", "-o", output]
    ws.refuse(args, pattern)


def test_output_equal_to_bad_file_refused_even_with_force(ws: Workspace) -> None:
    bad = save_npz(ws.folder / "bad.npz", x=X, y=Y)
    args = _repair(ws.model, ws.data, ws.folder, "--scenario", "backdoor", "--bad", bad)
    args[args.index("-o") + 1] = bad
    ws.refuse([*args, "--target-label", "0", "--force"], "same file")


def test_output_equal_to_model_refused_even_with_force(ws: Workspace) -> None:
    args = _repair(ws.model, ws.data, ws.folder, "--scenario", "wrong", "--force")
    args[args.index("-o") + 1] = ws.model
    ws.refuse(args, "same file as the input")


# --- data that is valid but unusable, or valid and wrongly refused ----------------------------
# These problems show only once the model has run, after progress bars: hence -q.


def _labelled_by_model(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].argmax(axis=1)


@pytest.mark.parametrize("command", ["localize", "repair"])
def test_single_sample_refused(command: str, ws: Workspace) -> None:
    """One sample cannot feed probes with a held-out part; say so instead of crashing."""
    x = X[:1]
    y = (_labelled_by_model(ws.model, x) + 1) % 4  # misclassified: "wrong" has work
    data = save_npz(ws.folder / "one.npz", x=x, y=y)
    args = _commands(ws.model, data, ws.folder)[command]
    ws.refuse([*args, "-q"], "sample")


def test_two_samples_of_two_classes_refused_by_repair(ws: Workspace) -> None:
    """Two samples of two classes: too few for a validation split and layer selection."""
    x = X[:2]
    predicted = _labelled_by_model(ws.model, x)
    wrong = next(c for c in range(4) if c not in (predicted[0], predicted[1]))
    data = save_npz(ws.folder / "two.npz", x=x, y=np.array([predicted[0], wrong]))
    args = _commands(ws.model, data, ws.folder)["repair"]
    ws.refuse([*args, "-q"], "sample")


def test_nothing_wrong_to_repair(ws: Workspace) -> None:
    data = save_npz(ws.folder / "right.npz", x=X, y=_labelled_by_model(ws.model, X))
    args = _commands(ws.model, data, ws.folder)["repair"]
    ws.refuse([*args, "-q"], "every sample right")


def test_inferred_input_range_covers_the_validation_split(ws: Workspace) -> None:
    """Without --clip the valid range is the data's: all of it, not the training split's.

    The brightest pixel is put in a sample of the validation split, so a range
    inferred from the training split alone makes the tool refuse its own split.
    """
    from inner_onnx.scenarios.base import split_indices

    x = (RNG.random((40, 1, 8, 8)) * 0.5).astype(np.float32)
    y = _labelled_by_model(ws.model, x)
    _, held = split_indices(y, 0.2, seed=0)
    x[held[0], 0, 0, 0] = 1.0
    y = _labelled_by_model(ws.model, x)
    assert held.tolist() == split_indices(y, 0.2, seed=0)[1].tolist()
    data = save_npz(ws.folder / "d.npz", x=x, y=y)
    args = _repair(ws.model, data, ws.folder, "--scenario", "adversarial", "-q")
    status, _, err = ws.run([*args, "--attack", "fgsm:eps=0.05", "--seed", "0"])
    assert status in (0, 3), err  # 3: a verified model that misses its targets


@pytest.mark.parametrize(
    ("change", "pattern"),
    ids=lambda value: ",".join(value) if isinstance(value, dict) else "",
    argvalues=[
        ({"granularity": "layer"}, "granularity|fault set"),
        (
            {"neurons": [{"unit": "Conv_0", "index": "1", "votes": 1}]},
            "fault set|Conv_0|whole number",
        ),
        ({"neurons": [{"unit": "Conv_0", "index": 99, "votes": 1}]}, r"Conv_0\[99\] not in"),
        ({"neurons": None}, "fault set"),
        ({"units": [["Conv_0"]]}, "fault set"),
        ({"model_sha256": "0" * 64}, "another model"),
    ],
)
def test_bad_fault_set_refused(change: dict, pattern: str, ws: Workspace) -> None:
    """A fault set edited by hand or made for another model: one line, before any work."""
    from inner_onnx.io.model import OnnxModel
    from inner_onnx.localize.faults import FaultNeuron, FaultSet, UnitScore

    model = OnnxModel.load(ws.model)
    units = [UnitScore(u.name, 0.5, 0.9, True) for u in model.units]
    neurons = [FaultNeuron(u.name, 1, 3) for u in model.units]
    payload = FaultSet(model.sha256, "neuron", units, neurons).to_dict(model)
    faults = ws.folder / "faults.json"
    faults.write_text(json.dumps({**payload, **change}))
    ws.refuse(
        _repair(ws.model, ws.data, ws.folder, "--scenario", "wrong", "--faults", faults), pattern
    )


def test_unexpected_failure_is_one_line_with_exit_1(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug, not a bad input: exit 1 and one line; INNER_ONNX_DEBUG=1 shows the traceback."""
    import inner_onnx.repair.pipeline

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ZeroDivisionError("somewhere deep")

    monkeypatch.setattr(inner_onnx.repair.pipeline, "repair", broken)
    args = _repair(ws.model, ws.data, ws.folder, "--scenario", "wrong")
    before = folder_state(ws.folder)
    status, out, err = ws.run(args)
    assert (status, out) == (1, "")
    assert err.strip().splitlines() == ["internal error: ZeroDivisionError: somewhere deep"]
    assert folder_state(ws.folder) == before
    monkeypatch.setenv("INNER_ONNX_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        ws.run(args)


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
def test_data_the_model_cannot_run_on_refused(
    command: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every input axis dynamic: the shape check passes 3-channel images to a 1-channel Conv.

    onnxruntime's refusal is the user's data not fitting the model: exit 2, one line,
    and onnxruntime's own error log (written to file descriptor 2) kept off stderr.
    """
    model = tiny_cnn()
    for dim in model.graph.input[0].type.tensor_type.shape.dim:
        dim.ClearField("dim_value")
        dim.dim_param = "any"
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, path)
    data = save_npz(tmp_path / "rgb.npz", x=RNG.random((6, 3, 8, 8)).astype(np.float32), y=Y[:6])
    assert_refused([command, path, "-d", data], capfd, tmp_path, "channels|shape")


def test_demo_output_dir_that_is_a_file(ws: Workspace) -> None:
    ws.refuse(["demo", "--output-dir", ws.data, "-q"], "output")


def test_pgd_eps_larger_than_the_input_range_runs(ws: Workspace) -> None:
    """eps past the valid range is legal (the range clips it) and must not overflow."""
    args = ["evaluate", ws.model, "-d", ws.data, "--attack", "pgd:eps=1e308,steps=1", "-q"]
    status, _, err = ws.run(args)
    assert status == 0, err


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
@pytest.mark.parametrize("command", ["repair", "localize"])
def test_output_folder_that_cannot_be_written(command: str, ws: Workspace) -> None:
    """sysfs refuses new files even to root: say so before the work, not after it."""
    args = _commands(ws.model, ws.data, ws.folder)[command]
    args[args.index("-o") + 1] = Path("/sys/kernel/inner_onnx_out")
    ws.refuse(args, "cannot write")
