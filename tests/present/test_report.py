"""The repair report: every section, embedded plots only, escaping, JSON, and how it renders."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from matplotlib.image import imread
from onnx import TensorProto, helper, numpy_helper

from inner_onnx.errors import InputError
from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.faults import FaultNeuron, FaultSet, UnitScore
from inner_onnx.measure.metrics import summarize
from inner_onnx.present.report import write_report
from inner_onnx.repair.result import RepairResult
from inner_onnx.repair.trainer import EpochRecord, TrainOutcome

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshot_report.py"
SECTIONS = ("summary", "per-class", "layer-selection", "votes", "training", "changed", "provenance")
CLASSES = 10
HOSTILE = "<script>alert('x')</script>$a$"


def small_cnn(first_conv_name: str = "conv1") -> onnx.ModelProto:
    """Conv8-Relu-Conv16-Relu-GAP-Gemm32-Relu-Gemm10 on 1x12x12 images, four units."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], first_conv_name, pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], "conv2", strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "f1.w", "f1.b"], ["f1"], "fc1", transB=1),
        helper.make_node("Relu", ["f1"], ["r3"], "relu3"),
        helper.make_node("Gemm", ["r3", "f2.w", "f2.b"], ["logits"], "fc2", transB=1),
    ]
    inits = [
        init("c1.w", 8, 1, 3, 3),
        init("c1.b", 8),
        init("c2.w", 16, 8, 3, 3),
        init("c2.b", 16),
        init("f1.w", 32, 16),
        init("f1.b", 32),
        init("f2.w", CLASSES, 32),
        init("f2.b", CLASSES),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 12, 12])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def noisy_predictions(y: np.ndarray, error: float, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(y)) < error
    return np.where(flip, (y + rng.integers(1, CLASSES, len(y))) % CLASSES, y)


def backdoor_result(model: OnnxModel) -> RepairResult:
    """What a BadNets repair looks like: ASR 0.96 -> 0.02 at about the same accuracy."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, CLASSES, 500)
    bad_y = rng.integers(1, CLASSES, 300)
    target = 0

    def metrics(error: float, asr: float):
        triggered = np.where(rng.random(len(bad_y)) < asr, target, bad_y)
        return summarize(
            noisy_predictions(y, error, rng),
            y,
            CLASSES,
            bad_pred=triggered,
            bad_y=bad_y,
            target=target,
        )

    units = [
        UnitScore(model.units[0].name, 0.41, 0.52, True),
        UnitScore("conv2", 1.37, 0.71, True),
        UnitScore("fc1", 0.88, 0.83, True),
        UnitScore("fc2", 0.12, 0.90, False),
    ]
    unit_votes = {
        units[0].name: rng.integers(0, 60, 8).tolist(),
        "conv2": rng.integers(0, 60, 16).tolist(),
        "fc1": rng.integers(0, 60, 32).tolist(),
    }
    neurons = []
    for name, votes in unit_votes.items():
        votes[int(rng.integers(len(votes)))] = 97  # one neuron nearly every bad sample routes
        top = np.argsort(votes)[::-1][: max(1, len(votes) // 8)]
        neurons += [FaultNeuron(name, int(i), int(votes[i])) for i in top]
    faults = FaultSet(model.sha256, "neuron", units, neurons, unit_votes=unit_votes)
    history = [EpochRecord(0, float("nan"), 0.902, 0.955, 0.081)]
    for epoch, (loss, acc, asr) in enumerate(
        [(1.92, 0.874, 0.41), (1.10, 0.889, 0.12), (0.71, 0.897, 0.04), (0.55, 0.899, 0.015)], 1
    ):
        history.append(EpochRecord(epoch, loss, acc, asr, 0.07))
    changed = {"c1.w": 9, "c1.b": 1, "c2.w": 2 * 72, "c2.b": 2, "f1.w": 4 * 16, "f1.b": 4}
    return RepairResult(
        proto=model.proto,
        scenario="backdoor",
        method="inner",
        before=metrics(0.10, 0.96),
        after=metrics(0.11, 0.02),
        evaluation_name="samples/eval.npz",
        faults=faults,
        changed=changed,
        weights_total=sum(u.parameters for u in model.units),
        outcome=TrainOutcome(history, kept_epoch=4, stopped_early=True),
        seconds=12.3,
        settings={"seed": 0, "epochs": 30, "bad_source": {"target_label": target}},
    )


def summary_of(result: RepairResult) -> dict:
    return {"output": "out.onnx", **result.summary(), "seconds": round(result.seconds, 2)}


def image_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', page)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RepairResult, dict, str]:
    """One report, rendered once for the tests that only read it: (folder, result, summary,
    model sha256)."""
    model = OnnxModel(small_cnn())
    result = backdoor_result(model)
    summary = summary_of(result)
    folder = tmp_path_factory.mktemp("written") / "report"
    assert write_report(folder, model, result, summary) == folder / "report.html"
    return folder, result, summary, model.sha256


def test_report_has_every_section_and_only_embedded_plots(written) -> None:
    folder, result, _, sha256 = written
    page = folder / "report.html"
    text = page.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    # Per-class accuracy, layer selection, votes, training curves.
    sources = image_sources(text)
    assert len(sources) == 4
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        pixels = imread(io.BytesIO(base64.b64decode(source.split(",", 1)[1])), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 500
        assert pixels[..., :3].std() > 0.05  # something drawn, not a blank canvas
    # Nothing is fetched: no scripts, stylesheets or URLs; links only jump within the page.
    assert "<script" not in text and "<link" not in text and "url(" not in text
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', text))
    # The numbers the summary table must show.
    assert "attack success rate (ASR)" in text
    assert f"{100 * result.before.asr:.2f} %" in text and f"{100 * result.after.asr:.2f} %" in text
    assert "robust accuracy" not in text  # not measured, so no row
    asr_row = re.search(r"<tr><td>attack success rate \(ASR\)</td>.*?</tr>", text).group(0)
    assert "lower is better" in asr_row and "<td>better</td>" in asr_row
    assert sha256 in text
    assert f"{result.changed_count:,} of {result.weights_total:,}" in text


def test_report_json_is_the_summary(written) -> None:
    folder, _, summary, _ = written
    text = (folder / "report.json").read_text()
    assert text.startswith("{\n  ")  # pretty-printed
    # Compared as canonical JSON: epoch 0 has no loss (NaN), and NaN != NaN in a dict compare.
    assert json.dumps(json.loads(text), sort_keys=True) == json.dumps(summary, sort_keys=True)


def test_names_from_the_model_are_escaped_in_html_and_plots(tmp_path: Path) -> None:
    model = OnnxModel(small_cnn(first_conv_name=HOSTILE))
    assert model.units[0].name == HOSTILE
    result = backdoor_result(model)
    result.changed = {HOSTILE: 3, **result.changed}
    result.evaluation_name = "<b>eval</b>.npz"
    text = write_report(tmp_path / "r", model, result, summary_of(result)).read_text()
    assert "<script" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;$a$" in text
    assert "&lt;b&gt;eval&lt;/b&gt;.npz" in text
    assert len(image_sources(text)) == 4  # `$a$` did not break the plots (mathtext)


def test_fine_tuning_without_faults_and_with_few_metrics(tmp_path: Path) -> None:
    model = OnnxModel(small_cnn())
    rng = np.random.default_rng(5)
    y = rng.integers(0, CLASSES - 1, 300)  # the last class has no sample
    before = summarize(noisy_predictions(y, 0.3, rng), y, CLASSES)
    after = summarize(noisy_predictions(y, 0.2, rng), y, CLASSES)
    history = [
        EpochRecord(e, float("nan") if e == 0 else 1.0 / e, 0.7, None, 0.2) for e in range(4)
    ]
    result = replace(
        backdoor_result(model),
        scenario="wrong",
        method="ft",
        before=before,
        after=after,
        faults=None,
        changed={},
        outcome=TrainOutcome(history, kept_epoch=3, stopped_early=False),
        settings={},
    )
    text = write_report(tmp_path / "r", model, result, summary_of(result)).read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    assert text.count("No fault localization for this method") == 2
    assert len(image_sources(text)) == 2  # per-class accuracy and training curves
    assert "attack success rate" not in text and "bad-sample accuracy" not in text
    assert f"Classes {CLASSES - 1} have no evaluation sample." in text
    assert "No value changed." in text


def test_same_result_gives_the_same_bytes(tmp_path: Path) -> None:
    model = OnnxModel(small_cnn())
    result = backdoor_result(model)
    first = write_report(tmp_path / "a", model, result, summary_of(result)).read_bytes()
    second = write_report(tmp_path / "b", model, result, summary_of(result)).read_bytes()
    assert first == second


def test_report_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    model = OnnxModel(small_cnn())
    result = backdoor_result(model)
    occupied = tmp_path / "report"
    occupied.write_text("not a folder")
    with pytest.raises(InputError, match="is a file"):
        write_report(occupied, model, result, summary_of(result))


def load_screenshot_script():
    # By file: scripts/ is not part of the package.
    spec = importlib.util.spec_from_file_location("screenshot_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_renders_in_headless_chromium(written, tmp_path: Path) -> None:
    screenshots = load_screenshot_script()
    if not screenshots.CHROMIUM.is_file():
        pytest.skip(f"{screenshots.CHROMIUM} not installed (Debian package chromium)")
    png = tmp_path / "shot.png"
    screenshots.screenshot(written[0] / "report.html", png, width=1200, height=2400)
    pixels = imread(png)[..., :3]
    assert pixels.shape == (2400, 1200, 3)
    ink = pixels.min(axis=2) < 0.9
    assert ink.mean() > 0.03  # text, tables and plots, not an empty or error page
    # Only the plots use saturated colour (bars, curves); the page's CSS is grey.
    saturated = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.3
    assert saturated.sum() > 20_000
    rows_with_colour = np.flatnonzero(saturated.any(axis=1))
    assert rows_with_colour.max() - rows_with_colour.min() > 1000  # several plots down the page
