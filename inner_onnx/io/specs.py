"""The user's SPEC strings for generated bad samples (DESIGN.md, "Interfaces").

    fgsm:eps=E                   pgd:eps=E[,steps=S][,alpha=A]
    patch:FILE.npy@ROW,COL       blend:FILE.npy,alpha=A       token:ID@POS[,ID@POS...]

`parse_attack` and `parse_trigger` turn them into small frozen dataclasses. A
malformed spec is one `InputError` line that quotes the spec, says what is
wrong and shows the expected form. Trigger files are read here, with
`allow_pickle=False`, so a missing or unsafe file fails before any work starts.

The dataclasses check their own values (a `ValueError` naming the problem), so
code that builds them directly gets the same rules as the parser.
"""

from __future__ import annotations

import math
import tokenize
import zipfile
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import numpy as np

from inner_onnx.errors import InputError

ATTACK_FORMS = "fgsm:eps=E or pgd:eps=E,steps=S,alpha=A"
TRIGGER_FORMS = "patch:FILE.npy@ROW,COL, blend:FILE.npy,alpha=A or token:ID@POS[,ID@POS...]"
PGD_DEFAULT_STEPS = 10
# alpha = eps/4: ten steps can cross the eps-ball more than twice, the usual PGD budget.
PGD_DEFAULT_STEP_FRACTION = 0.25


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value:g}")


@dataclass(frozen=True)
class FgsmSpec:
    """One signed-gradient step of size `eps` (L-inf), untargeted."""

    eps: float

    def __post_init__(self) -> None:
        _check_positive("eps", self.eps)

    def __str__(self) -> str:
        return f"fgsm:eps={self.eps:g}"


@dataclass(frozen=True)
class PgdSpec:
    """`steps` signed-gradient steps of size `alpha` from a random start in the eps-ball.

    `alpha=None` means eps/4.
    """

    eps: float
    steps: int = PGD_DEFAULT_STEPS
    alpha: float | None = None

    def __post_init__(self) -> None:
        _check_positive("eps", self.eps)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a whole number >= 1, got {self.steps}")
        if self.alpha is None:
            object.__setattr__(self, "alpha", self.eps * PGD_DEFAULT_STEP_FRACTION)
        _check_positive("alpha", self.alpha)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"pgd:eps={self.eps:g},steps={self.steps},alpha={self.alpha:g}"


@dataclass(frozen=True)
class PatchSpec:
    """A patch pasted with its top-left corner at (row, col) of the spatial axes.

    The file holds the patch in the model's layout without batch axis: [C,h,w]
    for NCHW, [h,w,C] for NHWC, or [h,w] (applied to every channel).
    """

    path: Path
    row: int
    col: int
    pattern: np.ndarray = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        for name in ("row", "col"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0, got {value}")
        if self.pattern is None:
            object.__setattr__(self, "pattern", load_pattern(self.path))

    @property
    def files(self) -> tuple[Path, ...]:
        """The files the trigger is read from (an output must not replace one)."""
        return (self.path,)

    def __str__(self) -> str:
        return f"patch:{self.path}@{self.row},{self.col}"


@dataclass(frozen=True)
class BlendSpec:
    """x*(1-alpha) + pattern*alpha; the pattern has the input's shape without batch axis.

    For images a [H,W] pattern is also accepted and applied to every channel.
    """

    path: Path
    alpha: float
    pattern: np.ndarray = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not (math.isfinite(self.alpha) and 0 < self.alpha <= 1):
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha:g}")
        if self.pattern is None:
            object.__setattr__(self, "pattern", load_pattern(self.path))

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.path,)

    def __str__(self) -> str:
        return f"blend:{self.path},alpha={self.alpha:g}"


@dataclass(frozen=True)
class TokenSpec:
    """Token ids written at token positions of a text model's input (a trigger word)."""

    # (token id, position) pairs, in the order given
    tokens: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("no ID@POS given")
        for pair in self.tokens:
            for name, value in zip(("token id", "position"), pair):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{name} must be a whole number >= 0, got {value}")
        positions = [position for _, position in self.tokens]
        if len(set(positions)) != len(positions):
            raise ValueError("a position is given twice")

    @property
    def files(self) -> tuple[Path, ...]:
        return ()

    def __str__(self) -> str:
        return "token:" + ",".join(f"{token}@{position}" for token, position in self.tokens)


AttackSpec = FgsmSpec | PgdSpec
TriggerSpec = PatchSpec | BlendSpec | TokenSpec


def load_pattern(path: Path) -> np.ndarray:
    """Read a trigger .npy: a finite float array with 1 to 3 axes, returned read-only float32."""
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    with path.open("rb") as handle:
        magic = handle.read(6)
    # np.load reads anything it does not recognise as a pickle: say what the file really is.
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK") and not magic.startswith(b"\x80"):
        raise ValueError(f"{path} is not a .npy file; save the pattern with np.save")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ValueError(
                f"{path} holds pickled objects, which are refused; save a plain float array "
                "with np.save"
            ) from None
        raise ValueError(f"{path} is not a readable .npy file ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, SyntaxError, tokenize.TokenError) as exc:
        # a garbled header reaches numpy's literal parser, which raises syntax errors
        raise ValueError(f"{path} is not a readable .npy file ({type(exc).__name__})") from None
    except MemoryError:
        raise ValueError(f"{path} declares an array too large to load") from None
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise ValueError(f"{path} is an .npz archive; save the one pattern array with np.save")
    if loaded.dtype.kind != "f":
        raise ValueError(
            f"{path} holds {loaded.dtype} values; save a float array in the model's input "
            "scale (e.g. pattern.astype(np.float32))"
        )
    if not 1 <= loaded.ndim <= 3 or loaded.size == 0:
        raise ValueError(
            f"{path} has shape {list(loaded.shape)}; expected the input's shape without batch "
            "axis ([C,h,w] for NCHW, [h,w,C] for NHWC) or [h,w]"
        )
    with np.errstate(over="ignore"):
        pattern = loaded.astype(np.float32)
    if not np.isfinite(pattern).all():
        raise ValueError(f"{path} has NaN or infinite values (in float32)")
    pattern.setflags(write=False)
    return pattern


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {text!r}")
    return value


def _whole(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {text!r}") from None


Converter = Callable[[str, str], object]
ATTACK_KINDS: dict[str, tuple[type, dict[str, Converter]]] = {
    "fgsm": (FgsmSpec, {"eps": _number}),
    "pgd": (PgdSpec, {"eps": _number, "steps": _whole, "alpha": _number}),
}


def _options(kind: str, text: str, converters: dict[str, Converter]) -> dict[str, object]:
    """`key=value,key=value` -> converted values; unknown or repeated keys are refused."""
    values: dict[str, object] = {}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise ValueError(f"expected key=value, got {item.strip()!r}")
        if key not in converters:
            raise ValueError(f"unknown key {key!r} for {kind} (keys: {', '.join(converters)})")
        if key in values:
            raise ValueError(f"{key} given twice")
        values[key] = converters[key](key, value)
    return values


def _build(kind: str, cls: type, values: dict[str, object]) -> object:
    missing = [
        f.name
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in values
    ]
    if missing:
        raise ValueError(f"{kind} needs {' and '.join(missing)}")
    return cls(**values)


def _split_kind(text: str, kinds: tuple[str, ...]) -> tuple[str, str]:
    kind, sep, rest = text.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in kinds:
        raise ValueError(f"unknown kind {kind!r}")
    if not sep or not rest.strip():
        raise ValueError(f"nothing after '{kind}:'")
    return kind, rest.strip()


def parse_attack(text: str) -> AttackSpec:
    """`fgsm:eps=E` or `pgd:eps=E[,steps=S][,alpha=A]` -> FgsmSpec | PgdSpec."""
    try:
        kind, rest = _split_kind(text, tuple(ATTACK_KINDS))
        cls, converters = ATTACK_KINDS[kind]
        return _build(kind, cls, _options(kind, rest, converters))  # type: ignore[return-value]
    except ValueError as exc:
        raise InputError(
            f"malformed attack spec {text!r}: {exc} (expected {ATTACK_FORMS})"
        ) from None


def _parse_patch(rest: str) -> PatchSpec:
    path, sep, where = rest.rpartition("@")
    if not sep:
        raise ValueError("missing @ROW,COL after the file")
    position = where.split(",")
    if len(position) != 2:
        raise ValueError(f"position must be ROW,COL, got {where!r}")
    row, col = (_whole(name, p.strip()) for name, p in zip(("row", "col"), position))
    return PatchSpec(_trigger_path(path), row, col)


def _parse_blend(rest: str) -> BlendSpec:
    path, sep, options = rest.rpartition(",")
    if not sep:
        raise ValueError("blend needs alpha")
    values = _options("blend", options, {"alpha": _number})
    return BlendSpec(_trigger_path(path), values["alpha"])  # type: ignore[arg-type]


def _parse_tokens(rest: str) -> TokenSpec:
    pairs = []
    for item in rest.split(","):
        token, sep, position = item.strip().partition("@")
        if not sep:
            raise ValueError(f"expected ID@POS, got {item.strip()!r}")
        pairs.append((_whole("token id", token.strip()), _whole("position", position.strip())))
    return TokenSpec(tuple(pairs))


def _trigger_path(text: str) -> Path:
    if not text.strip():
        raise ValueError("missing file")
    return Path(text.strip())


TRIGGER_KINDS: dict[str, Callable[[str], TriggerSpec]] = {
    "patch": _parse_patch,
    "blend": _parse_blend,
    "token": _parse_tokens,
}


def parse_trigger(text: str) -> TriggerSpec:
    """`patch:FILE.npy@ROW,COL`, `blend:FILE.npy,alpha=A` or `token:ID@POS[,ID@POS...]` ->
    PatchSpec | BlendSpec (loaded) | TokenSpec."""
    try:
        kind, rest = _split_kind(text, tuple(TRIGGER_KINDS))
        return TRIGGER_KINDS[kind](rest)
    except ValueError as exc:
        raise InputError(
            f"malformed trigger spec {text!r}: {exc} (expected {TRIGGER_FORMS})"
        ) from None
