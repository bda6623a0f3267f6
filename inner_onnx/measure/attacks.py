"""Untargeted L-inf adversarial examples (FGSM, PGD) against any differentiable torch callable.

`forward` maps an input batch to LOGITS; the torch view of the ONNX model is
what the CLI passes. Gradients are taken with `torch.autograd.grad` with respect
to the input only, so a model whose parameters require grad is left with no
accumulated `.grad`, and the attacks run even inside `torch.no_grad()`.
`forward` is called as given: put a module in eval mode first.

Results are float32, inside the valid input range `clip` and within `eps`
(L-inf) of `x`.

A text model's token ids have no gradient: its attacks perturb the output of the token
embedding (`EmbeddingSpace`), as adversarial training for text does (Miyato et al. 2017,
"Adversarial Training Methods for Semi-Supervised Text Classification"; FreeLB, Zhu et
al. 2020). The perturbation of dimension d lies within `eps * std_d`, std_d the standard
deviation of that dimension over the embedding table: Miyato et al. normalise each
embedding dimension by its standard deviation before they perturb, so that a perturbation
size means the same whatever the scale of the embeddings (with uniform token frequencies
here: the tool does not know the training corpus). The ball is L-inf and the steps are
gradient signs, as for images (FreeLB's L-inf variant, Madry et al.'s PGD); padding
positions (attention mask 0) are never perturbed. The result is the token inputs plus one
array named after the embedding's output, its offset [N, tokens, C], which the torch view
and onnxruntime (`runtime.with_offsets`) add to the embedding.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from inner_onnx.context import as_torch, device_of
from inner_onnx.errors import InputError
from inner_onnx.io.data import Inputs
from inner_onnx.io.model import OnnxModel
from inner_onnx.io.specs import AttackSpec, FgsmSpec, PgdSpec
from inner_onnx.torchview.inputs import TensorInputs

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


@dataclass(frozen=True)
class EmbeddingSpace:
    """Where a text model is attacked: the token embedding's output `tensor` ([N, tokens, C]),
    each dimension's standard deviation over the table (`scale`, [C]), the token ids input,
    and the attention mask input whose zeros mark padding (None: every position is
    perturbed)."""

    tensor: str
    scale: np.ndarray = field(compare=False, repr=False)
    ids: str
    mask: str | None


# The valid input range of a float input, or a text model's embedding space.
Domain = tuple[float, float] | EmbeddingSpace


def embedding_space(model: OnnxModel) -> EmbeddingSpace:
    unit, ids = model.token_embedding, model.token_input
    assert unit is not None and ids is not None, "only text models have an embedding space"
    table = onnx.numpy_helper.to_array(model.initializers[unit.weight]).astype(np.float64)
    mask = model.mask_input
    scale = table.std(axis=0).astype(np.float32)
    return EmbeddingSpace(unit.output, scale, ids.name, mask.name if mask else None)


def attack_domain(model: OnnxModel, x: np.ndarray | Inputs, clip: Domain | None) -> Domain:
    """Where attacks on `model` perturb: a text model's embedding space (`--clip` does not
    apply there), else the valid input range (`input_range`)."""
    if isinstance(clip, EmbeddingSpace):
        return clip
    if model.is_text:
        if clip is not None:
            raise InputError(
                "--clip does not apply to a text model: its attacks perturb the token "
                "embeddings, within eps times each embedding dimension's standard deviation"
            )
        return embedding_space(model)
    return input_range(x, clip)


def input_range(x: np.ndarray | Inputs, clip: tuple[float, float] | None) -> tuple[float, float]:
    """The valid input range: `clip` if given (the data must lie inside it), else the data's.
    Every attack starts here, so this is where inputs without a gradient are refused."""
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise InputError(
            "adversarial attacks need one float input or a text model (token ids read by an "
            "embedding); this model takes integer inputs"
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


def embedding_attack(
    forward: Forward,
    x: np.ndarray | Inputs,
    y: np.ndarray,
    space: EmbeddingSpace,
    eps: float,
    steps: int,
    alpha: float,
    random_start: bool,
    batch_size: int = 256,
    seed: int = 0,
    progress: Advance | None = None,
) -> Inputs:
    """FGSM (one step of `eps`, no random start) or PGD on a text model's token embeddings:
    `x` with the offset of its embeddings, in `eps * space.scale` of zero (L-inf) and zero
    at padding positions (module docstring). A model with one input may give its token ids
    as one array: the result holds them by the input's name."""
    if not isinstance(x, Inputs):
        x = Inputs({space.ids: x})
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = device_of(forward)
    scale = torch.as_tensor(space.scale, dtype=torch.float32, device=device)
    radius = eps * scale
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    noise = np.random.default_rng(seed)  # drawn batch after batch in row order, as `pgd`
    offsets: np.ndarray | None = None
    for start in range(0, len(x), batch_size):
        rows = slice(start, min(start + batch_size, len(x)))
        batch = as_torch(x[rows]).to(device)
        assert isinstance(batch, TensorInputs)
        yb = labels[rows].to(device)
        tokens = batch.tensors[space.ids].shape[1]
        keep = torch.ones((rows.stop - rows.start, tokens, 1), device=device)
        if space.mask is not None:
            keep = (batch.tensors[space.mask] != 0).to(torch.float32)[..., None]
        delta = torch.zeros((*keep.shape[:2], len(scale)), device=device)
        if random_start:
            draw = noise.uniform(-1.0, 1.0, size=tuple(delta.shape)).astype(np.float32)
            delta = torch.from_numpy(draw).to(device) * radius * keep

        def perturbed(d: torch.Tensor, batch: TensorInputs = batch) -> torch.Tensor:
            return forward(TensorInputs({**batch.tensors, space.tensor: d}))

        for _ in range(steps):
            grad = _input_gradient(perturbed, delta, yb)
            step = delta + alpha * scale * grad.sign()
            delta = torch.minimum(torch.maximum(step, -radius), radius) * keep
        if offsets is None:
            offsets = np.empty((len(x), *delta.shape[1:]), dtype=np.float32)
        offsets[rows] = delta.detach().cpu().numpy()
        if progress is not None:
            progress(rows.stop - rows.start)
    assert offsets is not None, "an attack needs at least one sample"
    return Inputs({**x.arrays, space.tensor: offsets})


def _generate_fgsm(
    spec: FgsmSpec, forward: Forward, x: np.ndarray | Inputs, y: np.ndarray, domain: Domain, **kw
) -> np.ndarray | Inputs:
    kw.pop("seed", None)  # FGSM is deterministic
    if isinstance(domain, EmbeddingSpace):
        return embedding_attack(forward, x, y, domain, spec.eps, 1, spec.eps, False, **kw)
    return fgsm(forward, x, y, spec.eps, domain, **kw)  # type: ignore[arg-type]


def _generate_pgd(
    spec: PgdSpec, forward: Forward, x: np.ndarray | Inputs, y: np.ndarray, domain: Domain, **kw
) -> np.ndarray | Inputs:
    if isinstance(domain, EmbeddingSpace):
        return embedding_attack(forward, x, y, domain, spec.eps, spec.steps, spec.alpha, True, **kw)
    return pgd(forward, x, y, spec.eps, spec.steps, spec.alpha, domain, **kw)  # type: ignore[arg-type]


GENERATORS: dict[type, Callable[..., np.ndarray]] = {
    FgsmSpec: _generate_fgsm,
    PgdSpec: _generate_pgd,
}


def generate(
    spec: AttackSpec,
    forward: Forward,
    x: np.ndarray | Inputs,
    y: np.ndarray,
    domain: Domain,
    **kw: object,
) -> np.ndarray | Inputs:
    """Adversarial examples for `spec` in `domain` (`attack_domain`): perturbed inputs, or a
    text model's inputs with an embedding offset; `kw`: batch_size, progress, seed (PGD's
    random start)."""
    if not isinstance(domain, EmbeddingSpace):
        # A step or ball wider than the valid range is clipped to it anyway; capping it keeps
        # float32 arithmetic (and the random start) finite for any eps the user writes.
        width = domain[1] - domain[0]
        capped = {
            name: min(getattr(spec, name), width)
            for name in ("eps", "alpha")
            if hasattr(spec, name)
        }
        spec = dataclasses.replace(spec, **capped)
    return GENERATORS[type(spec)](spec, forward, x, y, domain, **kw)
