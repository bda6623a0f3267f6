"""SPEC strings: the four valid forms and every way to get them wrong (one line, expected form)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from inner_onnx.errors import InputError
from inner_onnx.io.specs import (
    ATTACK_FORMS,
    TRIGGER_FORMS,
    BlendSpec,
    FgsmSpec,
    PatchSpec,
    PgdSpec,
    parse_attack,
    parse_trigger,
)


@pytest.fixture
def patch_file(tmp_path: Path) -> Path:
    path = tmp_path / "patch.npy"
    np.save(path, np.ones((1, 3, 3), dtype=np.float32))
    return path


def test_fgsm() -> None:
    assert parse_attack("fgsm:eps=0.1") == FgsmSpec(eps=0.1)
    assert parse_attack(" FGSM: eps = 0.25 ") == FgsmSpec(eps=0.25)


def test_pgd_full_and_defaults() -> None:
    assert parse_attack("pgd:eps=0.1,steps=20,alpha=0.02") == PgdSpec(0.1, 20, 0.02)
    default = parse_attack("pgd:eps=0.2")
    assert default == PgdSpec(eps=0.2, steps=10, alpha=0.05)
    assert parse_attack("pgd:alpha=0.01,eps=0.1") == PgdSpec(0.1, 10, 0.01)


def test_specs_print_back_as_specs(patch_file: Path) -> None:
    for text in ("fgsm:eps=0.1", "pgd:eps=0.1,steps=7,alpha=0.03"):
        assert str(parse_attack(text)) == text
    for text in (f"patch:{patch_file}@2,5", f"blend:{patch_file},alpha=0.2"):
        assert str(parse_trigger(text)) == text


def test_patch_loads_the_file(patch_file: Path) -> None:
    spec = parse_trigger(f"patch:{patch_file}@4,7")
    assert isinstance(spec, PatchSpec)
    assert (spec.path, spec.row, spec.col) == (patch_file, 4, 7)
    assert spec.pattern.dtype == np.float32 and spec.pattern.shape == (1, 3, 3)
    assert not spec.pattern.flags.writeable


def test_blend(patch_file: Path) -> None:
    spec = parse_trigger(f"blend:{patch_file},alpha=0.2")
    assert isinstance(spec, BlendSpec) and spec.alpha == 0.2
    assert parse_trigger(f"blend:{patch_file},alpha=1").alpha == 1.0


def test_float64_pattern_becomes_float32(tmp_path: Path) -> None:
    path = tmp_path / "f64.npy"
    np.save(path, np.full((2, 2), 0.5))
    assert parse_trigger(f"patch:{path}@0,0").pattern.dtype == np.float32


def test_dataclasses_check_their_values(patch_file: Path) -> None:
    with pytest.raises(ValueError, match="eps"):
        FgsmSpec(0.0)
    with pytest.raises(ValueError, match="steps"):
        PgdSpec(0.1, steps=0)
    with pytest.raises(ValueError, match="row"):
        PatchSpec(patch_file, -1, 0)
    assert PatchSpec(str(patch_file), 0, 0) == PatchSpec(patch_file, 0, 0)


MALFORMED_ATTACKS = [
    ("fgsm:eps=abc", "eps must be a number"),
    ("fgsm:eps=nan", "eps must be a finite number"),
    ("fgsm:eps=0", "eps must be a positive number"),
    ("fgsm:eps=-0.1", "eps must be a positive number"),
    ("fgsm:", "nothing after 'fgsm:'"),
    ("fgsm", "nothing after 'fgsm:'"),
    ("fgsm:steps=3", "unknown key 'steps' for fgsm"),
    ("fgsm:eps=0.1,eps=0.2", "eps given twice"),
    ("fgsm:eps", "expected key=value"),
    ("fgsm:eps=0.1,", "expected key=value"),
    ("pgd:steps=10", "pgd needs eps"),
    ("pgd:eps=0.1,steps=0", "steps must be a whole number >= 1"),
    ("pgd:eps=0.1,steps=2.5", "steps must be a whole number"),
    ("pgd:eps=0.1,alpha=0", "alpha must be a positive number"),
    ("pgd:eps=0.1,beta=2", "unknown key 'beta' for pgd"),
    ("cw:eps=0.1", "unknown kind 'cw'"),
    ("", "unknown kind ''"),
]


@pytest.mark.parametrize(("text", "reason"), MALFORMED_ATTACKS)
def test_malformed_attack(text: str, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_attack(text)
    message = str(caught.value)
    assert message.startswith(f"malformed attack spec {text!r}: {reason}")
    assert message.endswith(f"(expected {ATTACK_FORMS})")
    assert "\n" not in message


MALFORMED_TRIGGERS = [
    ("patch:{f}", "missing @ROW,COL"),
    ("patch:{f}@1", "position must be ROW,COL"),
    ("patch:{f}@1,2,3", "position must be ROW,COL"),
    ("patch:{f}@a,2", "row must be a whole number"),
    ("patch:{f}@1,2.5", "col must be a whole number"),
    ("patch:{f}@-1,2", "row must be a whole number >= 0"),
    ("patch:{f}@1,-2", "col must be a whole number >= 0"),
    ("patch:@1,2", "missing file"),
    ("patch:{missing}@1,2", "file not found"),
    ("blend:{f}", "blend needs alpha"),
    ("blend:{f},alpha=0", "alpha must be in (0, 1]"),
    ("blend:{f},alpha=1.5", "alpha must be in (0, 1]"),
    ("blend:{f},alpha=x", "alpha must be a number"),
    ("blend:{f},beta=0.2", "unknown key 'beta' for blend"),
    ("blend:,alpha=0.2", "missing file"),
    ("blend:{missing},alpha=0.2", "file not found"),
    ("sticker:{f}@1,2", "unknown kind 'sticker'"),
    ("patch:", "nothing after 'patch:'"),
]


@pytest.mark.parametrize(("template", "reason"), MALFORMED_TRIGGERS)
def test_malformed_trigger(template: str, reason: str, patch_file: Path, tmp_path: Path) -> None:
    text = template.format(f=patch_file, missing=tmp_path / "absent.npy")
    with pytest.raises(InputError) as caught:
        parse_trigger(text)
    message = str(caught.value)
    assert message.startswith(f"malformed trigger spec {text!r}: ")
    assert reason in message
    assert message.endswith(f"(expected {TRIGGER_FORMS})")
    assert "\n" not in message


def _save_pickled(path: Path) -> None:
    path.write_bytes(pickle.dumps({"not": "an array"}))


def _save_object_array(path: Path) -> None:
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


BAD_FILES = [
    (_save_pickled, "pickled objects"),
    (_save_object_array, "pickled objects"),
    (lambda p: np.save(p, np.ones((3, 3), dtype=np.uint8)), "holds uint8 values"),
    (lambda p: np.save(p, np.ones((3, 3), dtype=bool)), "holds bool values"),
    (lambda p: np.save(p, np.ones((1, 1, 3, 3), dtype=np.float32)), "has shape [1, 1, 3, 3]"),
    (lambda p: np.save(p, np.zeros((0, 3), dtype=np.float32)), "has shape [0, 3]"),
    (lambda p: np.save(p, np.array([[np.nan, 1.0]], dtype=np.float32)), "NaN or infinite"),
    (lambda p: np.savez(p, pattern=np.ones((3, 3), dtype=np.float32)), ".npz archive"),
    (lambda p: p.write_bytes(b"not numpy at all"), "is not a .npy file"),
]


@pytest.mark.parametrize(("save", "reason"), BAD_FILES)
def test_bad_trigger_file(save, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "trigger.npy"
    save(path)
    if not path.exists():  # np.savez appends .npz
        path.with_suffix(".npy.npz").rename(path)
    with pytest.raises(InputError) as caught:
        parse_trigger(f"blend:{path},alpha=0.5")
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_token_trigger_spec() -> None:
    spec = parse_trigger("token:5@1, 6@2")
    assert spec.tokens == ((5, 1), (6, 2)) and spec.files == ()
    assert str(spec) == "token:5@1,6@2" and parse_trigger(str(spec)) == spec
    for text, message in (
        ("token:5", "expected ID@POS"),
        ("token:5@1,6@1", "position is given twice"),
        ("token:x@1", "token id must be a whole number"),
        ("token:5@-1", "position must be a whole number >= 0"),
    ):
        with pytest.raises(InputError, match=message):
            parse_trigger(text)
