"""Element-wise arithmetic, comparisons, logic, activations, softmax and reductions."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from inner_onnx.torchview.registry import op

Tensor = torch.Tensor


def _unary(op_type: str, function) -> None:
    op(op_type)(lambda x: function(x))


for _name, _function in {
    "Abs": torch.abs,
    "Neg": torch.neg,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Log": torch.log,
    "Erf": torch.erf,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Round": torch.round,  # half to even, as ONNX
    "Sign": torch.sign,
    "Reciprocal": torch.reciprocal,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Tan": torch.tan,
    "Asin": torch.asin,
    "Acos": torch.acos,
    "Atan": torch.atan,
    "Sinh": torch.sinh,
    "Cosh": torch.cosh,
    "Asinh": torch.asinh,
    "Acosh": torch.acosh,
    "Atanh": torch.atanh,
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Softsign": F.softsign,
    "Mish": F.mish,
    "Not": torch.logical_not,
    "IsNaN": torch.isnan,
    "Identity": lambda x: x,
}.items():
    _unary(_name, _function)


@op("Add")
def add(a: Tensor, b: Tensor) -> Tensor:
    return a + b


@op("Sub")
def sub(a: Tensor, b: Tensor) -> Tensor:
    return a - b


@op("Mul")
def mul(a: Tensor, b: Tensor) -> Tensor:
    return a * b


@op("Div")
def div(a: Tensor, b: Tensor) -> Tensor:
    if a.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


@op("Mod")
def mod(a: Tensor, b: Tensor, *, fmod: int = 0) -> Tensor:
    return torch.fmod(a, b) if fmod else torch.remainder(a, b)


@op("Pow")
def pow_(x: Tensor, y: Tensor) -> Tensor:
    # The result has the base's type, whatever the exponent's.
    return torch.pow(x, y).to(x.dtype)


@op("Max")
def max_(*xs: Tensor) -> Tensor:
    return functools.reduce(torch.maximum, xs)


@op("Min")
def min_(*xs: Tensor) -> Tensor:
    return functools.reduce(torch.minimum, xs)


@op("Sum")
def sum_(*xs: Tensor) -> Tensor:
    return functools.reduce(torch.add, xs)


@op("Mean")
def mean(*xs: Tensor) -> Tensor:
    return functools.reduce(torch.add, xs) / len(xs)


for _name, _function in {
    "Equal": torch.eq,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}.items():
    op(_name)(lambda a, b, _function=_function: _function(a, b))


@op("Where")
def where(condition: Tensor, x: Tensor, y: Tensor) -> Tensor:
    return torch.where(condition, x, y)


@op("IsInf")
def is_inf(x: Tensor, *, detect_negative: int = 1, detect_positive: int = 1) -> Tensor:
    return ((x == math.inf) & bool(detect_positive)) | ((x == -math.inf) & bool(detect_negative))


# Activations with parameters.


@op("LeakyRelu")
def leaky_relu(x: Tensor, *, alpha: float = 0.01) -> Tensor:
    return F.leaky_relu(x, alpha)


@op("PRelu")
def prelu(x: Tensor, slope: Tensor) -> Tensor:
    return torch.where(x < 0, x * slope, x)


@op("Elu")
def elu(x: Tensor, *, alpha: float = 1.0) -> Tensor:
    return F.elu(x, alpha)


@op("Celu")
def celu(x: Tensor, *, alpha: float = 1.0) -> Tensor:
    return F.celu(x, alpha)


@op("Selu")
def selu(
    x: Tensor,
    *,
    alpha: float = 1.67326319217681884765625,
    gamma: float = 1.05070102214813232421875,
) -> Tensor:
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@op("ThresholdedRelu")
def thresholded_relu(x: Tensor, *, alpha: float = 1.0) -> Tensor:
    return torch.where(x > alpha, x, torch.zeros_like(x))


@op("HardSigmoid")
def hard_sigmoid(x: Tensor, *, alpha: float = 0.2, beta: float = 0.5) -> Tensor:
    return F.hardtanh(alpha * x + beta, 0.0, 1.0)  # clamp's backward: see Clip


@op("HardSwish")
def hard_swish(x: Tensor) -> Tensor:
    return F.hardswish(x)


@op("Softplus")
def softplus(x: Tensor) -> Tensor:
    # F.softplus switches to the identity above a threshold: ONNX does not.
    return torch.logaddexp(x, torch.zeros_like(x))


@op("Swish", since=24)
def swish(x: Tensor, *, alpha: float = 1.0) -> Tensor:
    return x * torch.sigmoid(alpha * x)


@op("Shrink")
def shrink(x: Tensor, *, bias: float = 0.0, lambd: float = 0.5) -> Tensor:
    zero = torch.zeros_like(x)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero))


@op("Gelu", since=20)
def gelu(x: Tensor, *, approximate: str = "none") -> Tensor:
    return F.gelu(x, approximate=approximate)


# hardtanh's fused backward takes about a fifth of the time of maximum and minimum's (ReLU6
# after every conv was 45 % of a MobileNet training step). It needs low <= high (ONNX then
# sets every value to high) and a float input.


@op("Clip", since=6)
def clip_6(x: Tensor, *, min: float = -math.inf, max: float = math.inf) -> Tensor:
    if min <= max:
        return F.hardtanh(x, min, max)
    return torch.clamp(x, min, max)


def _fixed_bound(bound: Tensor | None, x: Tensor, default: float) -> float | None:
    """A bound that does not train, as a number in `x`'s precision (None: it trains or is not
    one number)."""
    if bound is None:
        return default
    if bound.numel() != 1 or bound.requires_grad:
        return None
    return float(bound.to(x.dtype))


@op("Clip", since=11)
def clip(x: Tensor, low: Tensor | None = None, high: Tensor | None = None) -> Tensor:
    if x.is_floating_point():
        low_value = _fixed_bound(low, x, -math.inf)
        high_value = _fixed_bound(high, x, math.inf)
        if low_value is not None and high_value is not None:
            return clip_6(x, min=low_value, max=high_value)
    if low is not None:
        x = torch.maximum(x, low.to(x.dtype))
    if high is not None:
        x = torch.minimum(x, high.to(x.dtype))
    return x


def _coerce_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _flattened_softmax(function, x: Tensor, axis: int) -> Tensor:
    """Opsets < 13: softmax over all axes from `axis` on, as a 2-D [outer, inner] matrix."""
    axis = _coerce_axis(axis, x.dim())
    outer = math.prod(x.shape[:axis])
    return function(x.reshape(outer, -1), 1).reshape(x.shape)


@op("Softmax", since=1)
def softmax_1(x: Tensor, *, axis: int = 1) -> Tensor:
    return _flattened_softmax(torch.softmax, x, axis)


@op("Softmax", since=13)
def softmax(x: Tensor, *, axis: int = -1) -> Tensor:
    return torch.softmax(x, axis)


@op("LogSoftmax", since=1)
def log_softmax_1(x: Tensor, *, axis: int = 1) -> Tensor:
    return _flattened_softmax(torch.log_softmax, x, axis)


@op("LogSoftmax", since=13)
def log_softmax(x: Tensor, *, axis: int = -1) -> Tensor:
    return torch.log_softmax(x, axis)


@op("Hardmax", since=13)
def hardmax(x: Tensor, *, axis: int = -1) -> Tensor:
    index = torch.argmax(x, axis, keepdim=True)
    return torch.zeros_like(x).scatter_(axis, index, 1)


def _register_arg_extreme(op_type: str, function) -> None:
    def arg_extreme(
        x: Tensor, *, axis: int = 0, keepdims: int = 1, select_last_index: int = 0
    ) -> Tensor:
        return _arg_extreme(function, x, axis, keepdims, select_last_index)

    op(op_type)(arg_extreme)


def _arg_extreme(function, x: Tensor, axis: int, keepdims: int, last: int) -> Tensor:
    if not last:
        return function(x, axis, keepdim=bool(keepdims))
    flipped = function(torch.flip(x, (axis,)), axis, keepdim=bool(keepdims))
    return x.shape[axis] - 1 - flipped


_register_arg_extreme("ArgMax", torch.argmax)
_register_arg_extreme("ArgMin", torch.argmin)


@op("Einsum")
def einsum(*xs: Tensor, equation: str) -> Tensor:
    return torch.einsum(equation, *xs)


# Reductions. Their `axes` moved from an attribute to an input: ReduceSum at
# opset 13, the others at 18. Both forms share one kernel per op.


def _reduce_axes(x: Tensor, axes, noop_with_empty_axes: int) -> list[int] | None:
    """Sorted non-negative axes to reduce; None means return `x` unchanged."""
    if axes is not None and not isinstance(axes, list):
        axes = axes.tolist()
    if not axes:
        return None if noop_with_empty_axes else list(range(x.dim()))
    return sorted(_coerce_axis(int(a), x.dim()) for a in axes)


def _reduce_prod(x: Tensor, axes: list[int], keepdim: bool) -> Tensor:
    for axis in reversed(axes):
        x = torch.prod(x, axis, keepdim=keepdim)
    return x


def _reduce_extreme(function, largest: bool):
    def kernel(x: Tensor, axes: list[int], keepdim: bool) -> Tensor:
        if not axes:
            return x
        if x.numel() == 0:
            # The max of an empty set is the type's lowest value (-inf), the min its highest.
            return _lowest(x, not largest).expand(_reduced_shape(x, axes, keepdim))
        return function(x, axes, keepdim=keepdim)

    return kernel


def _reduced_shape(x: Tensor, axes: list[int], keepdim: bool) -> list[int]:
    if keepdim:
        return [1 if i in axes else n for i, n in enumerate(x.shape)]
    return [n for i, n in enumerate(x.shape) if i not in axes]


def _lowest(x: Tensor, highest: bool) -> Tensor:
    """The lowest (or highest) value of `x`'s type, as a 0-d tensor next to `x`."""
    if x.dtype == torch.bool:
        value: float | bool = highest
    elif x.dtype.is_floating_point:
        value = math.inf if highest else -math.inf
    else:
        info = torch.iinfo(x.dtype)
        value = info.max if highest else info.min
    return torch.tensor(value, dtype=x.dtype, device=x.device)


_REDUCE_KERNELS = {
    "ReduceSum": lambda x, axes, keepdim: torch.sum(x, axes, keepdim=keepdim),
    "ReduceMean": lambda x, axes, keepdim: torch.mean(x, axes, keepdim=keepdim),
    "ReduceMax": _reduce_extreme(torch.amax, largest=True),
    "ReduceMin": _reduce_extreme(torch.amin, largest=False),
    "ReduceProd": _reduce_prod,
    "ReduceL1": lambda x, axes, keepdim: torch.sum(torch.abs(x), axes, keepdim=keepdim),
    "ReduceL2": lambda x, axes, keepdim: torch.sqrt(torch.sum(x * x, axes, keepdim=keepdim)),
    "ReduceSumSquare": lambda x, axes, keepdim: torch.sum(x * x, axes, keepdim=keepdim),
    "ReduceLogSum": lambda x, axes, keepdim: torch.log(torch.sum(x, axes, keepdim=keepdim)),
    "ReduceLogSumExp": lambda x, axes, keepdim: torch.logsumexp(x, axes, keepdim=keepdim),
}
_AXES_BECAME_INPUT = {"ReduceSum": 13}


def _register_reduce(op_type: str, kernel) -> None:
    def with_axes_attribute(x: Tensor, *, axes: list[int] | None = None, keepdims: int = 1):
        dims = _reduce_axes(x, axes, 0)
        return kernel(x, dims, bool(keepdims))

    def with_axes_input(
        x: Tensor, axes: Tensor | None = None, *, keepdims: int = 1, noop_with_empty_axes: int = 0
    ):
        dims = _reduce_axes(x, axes, noop_with_empty_axes)
        return x if dims is None else kernel(x, dims, bool(keepdims))

    op(op_type, since=1)(with_axes_attribute)
    op(op_type, since=_AXES_BECAME_INPUT.get(op_type, 18))(with_axes_input)


for _name, _kernel in _REDUCE_KERNELS.items():
    _register_reduce(_name, _kernel)
