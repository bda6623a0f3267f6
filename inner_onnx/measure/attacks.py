"""Untargeted L-inf adversarial examples (FGSM, PGD) against any differentiable torch callable.

`forward` maps an input batch to LOGITS; the torch view of the ONNX model is
what the CLI passes. Gradients are taken with `torch.autograd.grad` with respect
to the input only, so a model whose parameters require grad is left with no
accumulated `.grad`, and the attacks run even inside `torch.no_grad()`.
`forward` is called as given: put a module in eval mode first.

Results are float32, inside the valid input range `clip` and within `eps`
(L-inf) of `x`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from inner_onnx.context import device_of
from inner_onnx.errors import InputError
from inner_onnx.io.specs import AttackSpec, FgsmSpec, PgdSpec

Forward = Callable[[torch.Tensor], torch.Tensor]
# Called with the number of samples finished after each batch (total: len(x)).
Advance = Callable[[int], None]


def parse_clip(text: str) -> tuple[float, float]:
    """`--clip LO,HI` -> (LO, HI); both finite and LO < HI."""
    try:
        lo, hi = map(float, text.split(","))  # a count other than two fails the unpacking
    except ValueError:
        lo = hi = math.nan
    limit = float(np.finfo(np.float32).max)
    if not (math.isfinite(lo) and math.isfinite(hi) and -limit <= lo < hi <= limit):
        raise InputError(
            f"malformed --clip {text!r}: expected LO,HI, two float32 numbers with LO < HI "
            "(e.g. 0,1)"
        )
    return lo, hi


def input_range(x: np.ndarray, clip: tuple[float, float] | None) -> tuple[float, float]:
    """The valid input range: `clip` if given (the data must lie inside it), else the data's.
    Every attack starts here, so this is where inputs without a gradient are refused."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise InputError(
            "adversarial attacks need one float input; this model takes integer inputs "
            "(a text model's token ids), and attacks in embedding space are not supported yet"
        )
    lo, hi = float(x.min()), float(x.max())
    if clip is None:
        if lo == hi:
            raise InputError(
                f"every input value is {lo:g}: cannot infer the valid input range; "
                "give --clip LO,HI"
            )
        return lo, hi
    # Data saved as float32 may round just past a bound like 1.0.
    slack = 1e-6 * (clip[1] - clip[0])
    if lo < clip[0] - slack or hi > clip[1] + slack:
        raise InputError(
            f"the data range [{lo:g}, {hi:g}] lies outside --clip {clip[0]:g},{clip[1]:g}; "
            "give the range of the preprocessed inputs"
        )
    return float(clip[0]), float(clip[1])


def _input_gradient(forward: Forward, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d CE(forward(x), y) / dx, summed over the batch so each sample keeps its own scale."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(forward(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


BatchAttack = Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor]


def _by_batch(
    attack: BatchAttack,
    forward: Forward,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    progress: Advance | None,
) -> np.ndarray:
    """Run `attack(x_batch, y_batch, rows)` over the set, each batch on `forward`'s device;
    float32 out, progress per batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = np.empty(x.shape, dtype=np.float32)
    device = device_of(forward)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    for start in range(0, len(x), batch_size):
        rows = slice(start, min(start + batch_size, len(x)))
        xb = torch.as_tensor(x[rows], dtype=torch.float32).to(device)
        out[rows] = attack(xb, labels[rows].to(device), rows).detach().cpu().numpy()
        if progress is not None:
            progress(rows.stop - rows.start)
    return out


def _project(
    x_adv: torch.Tensor, x: torch.Tensor, eps: float, clip: tuple[float, float]
) -> torch.Tensor:
    """Back into the eps-ball around x, then into the valid input range."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(*clip)


def fgsm(
    forward: Forward,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    clip: tuple[float, float],
    batch_size: int = 256,
    progress: Advance | None = None,
) -> np.ndarray:
    """Fast gradient sign method: x + eps * sign(grad CE), clipped to the input range."""

    def attack(xb: torch.Tensor, yb: torch.Tensor, _rows: slice) -> torch.Tensor:
        grad = _input_gradient(forward, xb, yb)
        return _project(xb + eps * grad.sign(), xb, eps, clip)

    return _by_batch(attack, forward, x, y, batch_size, progress)


def pgd(
    forward: Forward,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    steps: int,
    alpha: float,
    clip: tuple[float, float],
    batch_size: int = 256,
    seed: int = 0,
    progress: Advance | None = None,
) -> np.ndarray:
    """Projected gradient descent (Madry et al.) from a uniform random start in the eps-ball."""
    # One generator draws the starts batch after batch, in row order: the same stream as one
    # draw for the whole set (the result does not depend on batch_size), one batch in memory.
    noise = np.random.default_rng(seed)

    def attack(xb: torch.Tensor, yb: torch.Tensor, rows: slice) -> torch.Tensor:
        start = noise.uniform(-eps, eps, size=(rows.stop - rows.start, *x.shape[1:]))
        x_adv = _project(
            xb + torch.from_numpy(start.astype(np.float32)).to(xb.device), xb, eps, clip
        )
        for _ in range(steps):
            grad = _input_gradient(forward, x_adv, yb)
            x_adv = _project(x_adv + alpha * grad.sign(), xb, eps, clip)
        return x_adv

    return _by_batch(attack, forward, x, y, batch_size, progress)


def _generate_fgsm(
    spec: FgsmSpec, forward: Forward, x: np.ndarray, y: np.ndarray, clip: tuple[float, float], **kw
) -> np.ndarray:
    kw.pop("seed", None)  # FGSM is deterministic
    return fgsm(forward, x, y, spec.eps, clip, **kw)


def _generate_pgd(
    spec: PgdSpec, forward: Forward, x: np.ndarray, y: np.ndarray, clip: tuple[float, float], **kw
) -> np.ndarray:
    return pgd(forward, x, y, spec.eps, spec.steps, spec.alpha, clip, **kw)  # type: ignore[arg-type]


GENERATORS: dict[type, Callable[..., np.ndarray]] = {
    FgsmSpec: _generate_fgsm,
    PgdSpec: _generate_pgd,
}


def generate(
    spec: AttackSpec,
    forward: Forward,
    x: np.ndarray,
    y: np.ndarray,
    clip: tuple[float, float],
    **kw: object,
) -> np.ndarray:
    """Adversarial examples for `spec`; `kw`: batch_size, progress, seed (PGD's random start)."""
    # A step or ball wider than the valid range is clipped to it anyway; capping it keeps
    # float32 arithmetic (and the random start) finite for any eps the user writes.
    width = clip[1] - clip[0]
    capped = {
        name: min(getattr(spec, name), width) for name in ("eps", "alpha") if hasattr(spec, name)
    }
    spec = dataclasses.replace(spec, **capped)
    return GENERATORS[type(spec)](spec, forward, x, y, clip, **kw)
