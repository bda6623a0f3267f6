"""The repair methods compared, all on the torch view with the same data.

Every fine-tuning method is `MaskedTrainer` with its own masks (which values
may change) and the same settings, loss, validation split and early stopping;
INNER alone adds the probe terms. Fine-Pruning zeroes the pruned channels and
leaves them out of the masks; ANP prunes and does not fine-tune.

A method returns the repaired ModelProto; the benchmark measures it in
onnxruntime like any other model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from benchmarks.scenarios import Case
from inner_onnx.io.model import OnnxModel, Unit
from inner_onnx.localize.faults import FaultNeuron, FaultSet
from inner_onnx.progress import QUIET
from inner_onnx.repair.pipeline import MaskedTrainer, ProbeTerm, fault_masks, probe_terms_for_faults
from inner_onnx.torchview import TorchView

Masks = dict[str, np.ndarray]

# Fine-Pruning (Liu et al. 2018): prune until clean validation accuracy has lost this much.
FINE_PRUNING_ACCURACY_DROP = 0.04
FINE_PRUNING_MAX_SHARE = 0.9
# ANP (Wu & Wang 2021), the paper's defaults except the iteration count (set per run).
ANP_EPS = 0.4
ANP_TRADEOFF = 0.2
ANP_MASK_LR = 0.2
ANP_THRESHOLD = 0.2
ANP_BATCH = 128


def fine_tune(
    case: Case,
    masks: Masks,
    probe_terms: list[ProbeTerm] | None = None,
    zeroed: Masks | None = None,
) -> onnx.ModelProto:
    """Fine-tune the masked values; `zeroed` values are set to 0 first and stay 0."""
    view = case.fresh_view()
    if zeroed:
        with torch.no_grad():
            for name, mask in zeroed.items():
                view.parameter(name)[torch.from_numpy(mask)] = 0.0
        masks = {name: mask & ~zeroed.get(name, False) for name, mask in masks.items()}
    trainer = MaskedTrainer(case.model, view, masks, probe_terms or [], case.settings)
    trainer.fit(case.train, case.train_bad, case.validation, case.kind)
    return view.write_back()


def neuron_masks(model: OnnxModel, neurons: list[tuple[str, int]]) -> Masks:
    """Masks covering the weight slices and biases of the given (unit, index) neurons."""
    chosen = FaultSet(model.sha256, "neuron", [], [FaultNeuron(u, i, 0) for u, i in neurons])
    return chosen.masks(model)


def all_neurons(units: list[Unit]) -> list[tuple[str, int]]:
    return [(unit.name, index) for unit in units for index in range(unit.neurons)]


# ---------------------------------------------------------------- the fine-tuning family


def inner(case: Case) -> onnx.ModelProto:
    faults = case.faults
    terms = probe_terms_for_faults(case.runner, case.train, faults, case.settings, QUIET)
    return fine_tune(case, faults.masks(case.model), terms)


def ft_all(case: Case) -> onnx.ModelProto:
    return fine_tune(case, fault_masks(case.model, None))


def ft_last_two(case: Case) -> onnx.ModelProto:
    return fine_tune(case, neuron_masks(case.model, all_neurons(case.model.units[-2:])))


def ft_faults(case: Case) -> onnx.ModelProto:
    return fine_tune(case, case.faults.masks(case.model))


def random_neurons(case: Case) -> onnx.ModelProto:
    """As many neurons as INNER's fault set, drawn uniformly from every unit; for a
    weight-level fault set, as many values as it covers."""
    rng = np.random.default_rng(case.seed)
    if case.faults.granularity == "weight":
        allowed = fault_masks(case.model, None)
        scores = {name: rng.random(mask.shape) for name, mask in allowed.items()}
        return fine_tune(case, top_masks(scores, allowed, case.faults.weights_covered(case.model)))
    candidates = all_neurons(case.model.units)
    rows = rng.choice(len(candidates), size=len(case.faults.neurons), replace=False)
    return fine_tune(case, neuron_masks(case.model, [candidates[i] for i in rows]))


# ---------------------------------------------------------------- gradient ratio


def gradient_ratio(case: Case) -> dict[str, np.ndarray]:
    """|d loss_bad / d w| / |d loss_clean / d w| for every unit weight and bias."""
    view = case.fresh_view()
    names = list(fault_masks(case.model, None))
    parameters = [view.parameter(name) for name in names]

    def gradients(x: np.ndarray, y: np.ndarray) -> list[torch.Tensor]:
        totals = [torch.zeros_like(p) for p in parameters]
        for start in range(0, len(x), 256):
            xb = torch.from_numpy(x[start : start + 256])
            yb = torch.from_numpy(y[start : start + 256].astype(np.int64))
            loss = F.cross_entropy(view(xb), yb, reduction="sum")
            for total, grad in zip(totals, torch.autograd.grad(loss, parameters)):
                total += grad
        return [(t / len(x)).abs() for t in totals]

    bad = gradients(case.train_bad.data.x, case.train_bad.data.y)
    clean = gradients(case.train.x, case.train.y)
    return {name: (b / (c + 1e-12)).numpy() for name, b, c in zip(names, bad, clean, strict=True)}


def top_masks(scores: dict[str, np.ndarray], allowed: Masks, count: int) -> Masks:
    """Masks of the `count` highest scores among the allowed values."""
    names = list(allowed)
    flat = np.concatenate([np.where(allowed[n], scores[n], -np.inf).ravel() for n in names])
    keep = np.zeros(flat.shape, dtype=bool)
    keep[np.argsort(-flat, kind="stable")[:count]] = True
    keep &= np.isfinite(flat)
    masks, start = {}, 0
    for name in names:
        size = allowed[name].size
        masks[name] = keep[start : start + size].reshape(allowed[name].shape)
        start += size
    return masks


def grad_ratio(case: Case) -> onnx.ModelProto:
    """The top values network-wide, as many as INNER's fault set covers."""
    count = case.faults.weights_covered(case.model)
    allowed = fault_masks(case.model, None)
    return fine_tune(case, top_masks(gradient_ratio(case), allowed, count))


def grad_ratio_faults(case: Case) -> onnx.ModelProto:
    """The top half of the fault set's values by gradient ratio."""
    allowed = case.faults.masks(case.model)
    count = math.ceil(sum(int(m.sum()) for m in allowed.values()) / 2)
    return fine_tune(case, top_masks(gradient_ratio(case), allowed, count))


# ---------------------------------------------------------------- pruning


def channel_shape(unit: Unit, ndim: int) -> list[int]:
    """Shape that broadcasts a [neurons] vector along the unit weight's neuron axis."""
    shape = [1] * ndim
    shape[unit.neuron_axis] = unit.neurons
    return shape


def scaled_overrides(
    view: TorchView, units: list[Unit], weight_scale: list[torch.Tensor], bias_scale=None
) -> dict[str, torch.Tensor]:
    """Overrides multiplying each unit's weights (and biases) per neuron."""
    overrides = {}
    for index, unit in enumerate(units):
        weight = view.parameter(unit.weight)
        overrides[unit.weight] = weight * weight_scale[index].reshape(
            channel_shape(unit, weight.dim())
        )
        if unit.bias is not None and bias_scale is not None:
            bias = view.parameter(unit.bias)
            overrides[unit.bias] = bias * bias_scale[index].reshape(bias.shape)
    return overrides


def pruned_masks(model: OnnxModel, neurons: list[tuple[str, int]], with_bias: bool) -> Masks:
    masks = neuron_masks(model, neurons)
    if not with_bias:
        biases = {u.bias for u in model.units}
        masks = {name: mask for name, mask in masks.items() if name not in biases}
    return masks


def _accuracy(view: TorchView, x: np.ndarray, y: np.ndarray, overrides) -> float:
    with torch.no_grad():
        return float((view(torch.from_numpy(x), overrides=overrides).argmax(1).numpy() == y).mean())


def prune_in_order(case: Case, units: list[Unit], order: list[tuple[int, int]], limit: int) -> int:
    """How many of `order` ((unit index, neuron) pairs, first pruned first) can be zeroed,
    at most `limit`, before clean validation accuracy drops by FINE_PRUNING_ACCURACY_DROP.

    Counts are tried in steps of about 2% of `limit` (every count for small units).
    """
    view = case.fresh_view()
    held = case.validation.clean
    reference = _accuracy(view, held.x, held.y, None)
    pruned, step = 0, max(1, limit // 50)
    for count in range(step, limit + 1, step):
        keep = [torch.ones(u.neurons) for u in units]
        for unit_index, neuron in order[:count]:
            keep[unit_index][neuron] = 0.0
        overrides = scaled_overrides(view, units, keep, keep)
        if _accuracy(view, held.x, held.y, overrides) < reference - FINE_PRUNING_ACCURACY_DROP:
            break
        pruned = count
    return pruned


def fine_pruning(case: Case) -> onnx.ModelProto:
    """Prune the last conv unit's least active channels on clean data (Liu et al. 2018: until
    clean validation accuracy has dropped by 4 points), then fine-tune every weight."""
    model = case.model
    convs = [u for u in model.units if u.op == "Conv"]
    unit = convs[-1] if convs else model.units[-2]
    activity = case.runner.capture(case.train.x, [unit]).pooled[unit.name].mean(axis=0)
    order = [(0, int(i)) for i in np.argsort(activity, kind="stable")]
    pruned = prune_in_order(case, [unit], order, int(FINE_PRUNING_MAX_SHARE * unit.neurons))
    neurons = [(unit.name, i) for _, i in order[:pruned]]
    zeroed = pruned_masks(model, neurons, with_bias=True)
    return fine_tune(case, fault_masks(model, None), zeroed=zeroed)


def anp(case: Case, iterations: int) -> onnx.ModelProto:
    """Adversarial Neuron Pruning: learn neuron masks that keep clean accuracy under
    adversarial neuron perturbations, then zero the weights of the lowest-mask neurons.

    Pruning follows ANP's "by fraction" variant: neurons in increasing mask order while clean
    validation accuracy stays within 4 points (with our few mask iterations the paper's fixed
    threshold 0.2 would prune almost nothing); those under the threshold always go first.
    """
    model = case.model
    units = model.units[:-1]  # every unit but the classifier output
    view = case.fresh_view().requires_grad_(False)
    masks = [torch.ones(u.neurons, requires_grad=True) for u in units]
    noise_w = [torch.zeros(u.neurons, requires_grad=True) for u in units]
    noise_b = [torch.zeros(u.neurons, requires_grad=True) for u in units]
    mask_optimizer = torch.optim.SGD(masks, lr=ANP_MASK_LR, momentum=0.9)
    noise_optimizer = torch.optim.SGD([*noise_w, *noise_b], lr=ANP_EPS)
    generator = torch.Generator().manual_seed(case.seed)
    x_all = torch.from_numpy(case.train.x)
    y_all = torch.from_numpy(case.train.y.astype(np.int64))

    def loss_with(weight_scale, bias_scale, x, y) -> torch.Tensor:
        return F.cross_entropy(
            view(x, overrides=scaled_overrides(view, units, weight_scale, bias_scale)), y
        )

    ones = [torch.ones(u.neurons) for u in units]
    for _ in range(iterations):
        rows = torch.randint(len(x_all), (min(ANP_BATCH, len(x_all)),), generator=generator)
        x, y = x_all[rows], y_all[rows]
        with torch.no_grad():
            for noise in (*noise_w, *noise_b):
                noise.uniform_(-ANP_EPS, ANP_EPS, generator=generator)
        # One ascent step on the perturbation (maximize the loss), then project.
        noise_optimizer.zero_grad()
        perturbed = [m + n for m, n in zip(masks, noise_w)]
        (-loss_with(perturbed, [1 + n for n in noise_b], x, y)).backward()
        noise_optimizer.step()
        with torch.no_grad():
            for noise in (*noise_w, *noise_b):
                noise.clamp_(-ANP_EPS, ANP_EPS)
        mask_optimizer.zero_grad()
        natural = loss_with(masks, ones, x, y)
        perturbed = [m + n.detach() for m, n in zip(masks, noise_w)]
        robust = loss_with(perturbed, [1 + n.detach() for n in noise_b], x, y)
        (ANP_TRADEOFF * natural + (1 - ANP_TRADEOFF) * robust).backward()
        mask_optimizer.step()
        with torch.no_grad():
            for mask in masks:
                mask.clamp_(0.0, 1.0)
    values = torch.cat([m.detach() for m in masks]).numpy()
    flat = [(k, i) for k, u in enumerate(units) for i in range(u.neurons)]
    order = [flat[i] for i in np.argsort(values, kind="stable")]
    below = int(np.sum(values < ANP_THRESHOLD))
    limit = max(below, int(FINE_PRUNING_MAX_SHARE * len(order) / 2))
    pruned = max(below, prune_in_order(case, units, order, limit))
    neurons = [(units[k].name, i) for k, i in order[:pruned]]
    zeroed = case.fresh_view()
    with torch.no_grad():
        for name, mask in pruned_masks(model, neurons, with_bias=False).items():
            zeroed.parameter(name)[torch.from_numpy(mask)] = 0.0
    return zeroed.write_back()


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    run: Callable[[Case], onnx.ModelProto]
    kinds: tuple[str, ...] = ("backdoor", "adversarial", "wrong")
    # Needs INNER's localization (its time is added); random and grad_ratio only borrow the
    # fault set's size.
    uses_faults: bool = False


def methods(anp_iterations: int) -> dict[str, Method]:
    listed = (
        Method("inner", "INNER", inner, uses_faults=True),
        Method("ft_all", "fine-tune all", ft_all),
        Method("ft_last2", "fine-tune last 2 units", ft_last_two),
        Method("fine_pruning", "Fine-Pruning", fine_pruning),
        Method("random", "random neurons or weights", random_neurons),
        Method("grad_ratio", "gradient ratio", grad_ratio),
        Method("anp", "ANP", lambda case: anp(case, anp_iterations), kinds=("backdoor",)),
        Method("ft_faults", "fine-tune fault set", ft_faults, uses_faults=True),
        Method(
            "grad_ratio_faults", "gradient ratio in fault set", grad_ratio_faults, uses_faults=True
        ),
    )
    return {m.name: m for m in listed}
