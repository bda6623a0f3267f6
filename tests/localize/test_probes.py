import numpy as np
import pytest
import torch

from inner_onnx.localize.probes import LinearProbe, ProbeSet, holdout_split


def separable(count: int = 600, classes: int = 4, channels: int = 12, seed: int = 0):
    """Gaussian blobs around well-separated class centres, on very different channel scales."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(classes, channels))
    labels = rng.integers(0, classes, count)
    features = centres[labels] + rng.normal(size=(count, channels))
    scales = np.geomspace(1e-3, 1e3, channels)
    return (features * scales).astype(np.float32), labels


def test_probe_recovers_a_linearly_separable_problem() -> None:
    features, labels = separable()
    train, test = holdout_split(len(labels), 0.25, seed=0)
    probe = LinearProbe(num_classes=4).fit(features[train], labels[train])
    assert probe.score(features[test], labels[test]) > 0.95
    proba = probe.predict_proba(features[test])
    assert proba.shape == (len(test), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-5)


def test_probe_is_no_better_than_chance_on_noise() -> None:
    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 400)
    probe = LinearProbe(4).fit(features[:300], labels[:300])
    assert probe.score(features[300:], labels[300:]) < 0.45


def test_probe_fit_is_deterministic() -> None:
    features, labels = separable(seed=1)
    first = LinearProbe(4).fit(features, labels)
    second = LinearProbe(4).fit(features, labels)
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)


def test_torch_logits_match_predict_proba_and_carry_gradients() -> None:
    features, labels = separable(count=200, seed=2)
    probe = LinearProbe(4).fit(features, labels)
    pooled = torch.from_numpy(features[:20]).requires_grad_()
    logits = probe.torch_logits(pooled)
    np.testing.assert_allclose(
        torch.softmax(logits, dim=1).detach().numpy(), probe.predict_proba(features[:20]), atol=1e-6
    )
    logits[:, 0].sum().backward()
    assert pooled.grad is not None and pooled.grad.abs().sum() > 0
    as_double = probe.torch_logits(pooled.detach().double())
    assert as_double.dtype == torch.float64


def test_dead_channels_do_not_break_the_probe() -> None:
    features, labels = separable(count=200)
    features[:, 3] = 0.0  # a Relu channel that never fires
    probe = LinearProbe(4).fit(features, labels)
    assert np.isfinite(probe.predict_proba(features)).all()
    assert probe.score(features, labels) > 0.95


def test_probe_input_checks() -> None:
    probe = LinearProbe(3)
    with pytest.raises(RuntimeError, match="not fitted"):
        probe.predict(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        probe.fit(np.zeros((2, 4), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        probe.fit(np.zeros(4, np.float32), np.array([0, 1, 0, 1]))


def test_probe_set_records_held_out_accuracy_per_unit() -> None:
    features, labels = separable(count=500)
    noise = np.random.default_rng(5).normal(size=(500, 6)).astype(np.float32)
    units = {"informative": features, "noise": noise}
    calls: list[int] = []
    probes = ProbeSet().fit(units, labels, num_classes=4, seed=3, progress=calls.append)
    assert list(probes.probes) == ["informative", "noise"] and calls == [1, 1]
    assert probes.accuracy["informative"] > 0.95 > 0.5 > probes.accuracy["noise"]
    again = ProbeSet().fit(units, labels, num_classes=4, seed=3)
    assert again.accuracy == probes.accuracy
    proba = probes.predict_proba({"noise": noise[:5]})
    np.testing.assert_array_equal(proba["noise"], probes.probes["noise"].predict_proba(noise[:5]))


def test_holdout_split() -> None:
    train, held = holdout_split(10, 0.2, seed=0)
    assert len(held) == 2 and sorted([*train, *held]) == list(range(10))
    assert holdout_split(10, 0.2, seed=0)[1].tolist() == held.tolist()
    assert holdout_split(10, 0.2, seed=1)[1].tolist() != held.tolist()
    assert [len(part) for part in holdout_split(2, 0.01, seed=0)] == [1, 1]
    with pytest.raises(ValueError, match="fraction"):
        holdout_split(10, 1.0, seed=0)
