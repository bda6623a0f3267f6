"""Repair as stages: prepare the problem → the method's plan (localizing if it needs to)
→ train → write back → verify. Every "after" number is onnxruntime's, on the model as
it will be written."""

from __future__ import annotations

import time
from dataclasses import asdict, replace

import numpy as np
import onnx
import torch

from inner_onnx.context import RunContext
from inner_onnx.errors import InputError
from inner_onnx.io.data import Dataset
from inner_onnx.io.model import OnnxModel
from inner_onnx.localize.faults import FaultSet
from inner_onnx.measure.evaluation import EvaluationSet, evaluate
from inner_onnx.measure.metrics import Metrics
from inner_onnx.progress import QUIET, Reporter
from inner_onnx.repair.auto import AUTO, Selection, select
from inner_onnx.repair.methods import METHODS, MethodPlan, RepairMethod, method_named
from inner_onnx.repair.problem import RepairProblem
from inner_onnx.repair.result import RepairResult
from inner_onnx.repair.settings import RepairSettings
from inner_onnx.repair.trainer import EpochRecord, MaskedTrainer, TrainOutcome
from inner_onnx.repair.verify import changed_values, verify, with_provenance
from inner_onnx.runtime import Runner
from inner_onnx.scenarios import BadSource, scenario_named
from inner_onnx.torchview import TorchView


def settings_for(scenario: str, **options: object) -> RepairSettings:
    """The scenario's typed defaults with what the user gave (`RepairSettings.with_options`);
    without `epochs`, a method with a reference epoch budget trains for that."""
    method = METHODS.get(str(options.get("method")))
    if options.get("epochs") is None and method is not None and method.reference_epochs:
        options = {**options, "epochs": method.reference_epochs}
    return scenario_named(scenario).default_settings().with_options(**options)  # type: ignore[arg-type]


def check_method(name: str, scenario: str, faults_given: bool) -> RepairMethod | None:
    """The method named (None for auto), or a one-line refusal of a bad combination."""
    if name == AUTO:
        return None
    method = method_named(name, scenario)
    if faults_given and not method.uses_faults:
        users = ", ".join(n for n, m in METHODS.items() if m.uses_faults)
        raise InputError(f"--faults applies only to methods that use a fault set ({users})")
    return method


def repair(
    model: OnnxModel,
    clean: Dataset,
    source: BadSource,
    settings: RepairSettings,
    context: RunContext = RunContext(),
    faults: FaultSet | None = None,
    evaluation: EvaluationSet | None = None,
    reporter: Reporter = QUIET,
) -> RepairResult:
    """Repair `model`; the result's proto is checked and every "after" number is onnxruntime's."""
    method = check_method(settings.method, source.scenario, faults is not None)
    with context.pinned():
        started = time.perf_counter()
        torch.manual_seed(context.seed)
        problem = RepairProblem.prepare(model, clean, source, settings, context, faults, reporter)
        # The training and validation splits are copies: holding the full array beside them
        # for the whole run would add its size to the peak (1.35x at 10x the samples).
        del clean
        selection = None
        device = context.torch_device
        if method is None:
            evaluation = problem.evaluation_set(evaluation)
            before = evaluate(problem.runner, evaluation, context.seed, reporter, device)
            selection = select(problem)
            view, outcome = selection.view, selection.outcome
        else:
            plan = method.plan(problem)
            evaluation = problem.evaluation_set(evaluation)
            before = evaluate(problem.runner, evaluation, context.seed, reporter, device)
            view, outcome = run_plan(problem, plan)
        result = finish(problem, view, outcome, before, evaluation, selection)
        result.seconds = time.perf_counter() - started
        return result


def run_plan(problem: RepairProblem, plan: MethodPlan) -> tuple[TorchView, TrainOutcome]:
    """Apply the plan to a fresh view (or the view the method trained itself): zero what it
    prunes, then train what it masks. Weights that end NaN or infinite where the original's
    were finite are never handed on: the original's are, with a verdict that says so."""
    view, outcome = _run_plan(problem, plan)
    if not _diverged(problem.model, view):
        return view, outcome
    original = problem.fresh_view()
    outcome = untrained_outcome(problem, original)
    outcome.targets_met = False
    outcome.missed = [DIVERGED]
    outcome.confidence = 0.0
    return original, outcome


def _diverged(model: OnnxModel, view: TorchView) -> bool:
    """Whether a value the original holds finite is NaN or infinite in the view (a model
    may hold -inf on purpose, e.g. an attention mask's fill value)."""
    for name, parameter in view.onnx_parameters():
        finite = torch.isfinite(parameter)
        if not finite.all():
            original = onnx.numpy_helper.to_array(model.initializers[name])
            if (np.isfinite(original) & ~finite.cpu().numpy()).any():
                return True
    return False


# The verdict of a plan whose weights ended NaN or infinite.
DIVERGED = "training diverged (NaN or infinite weights): the original weights are kept"


def _run_plan(problem: RepairProblem, plan: MethodPlan) -> tuple[TorchView, TrainOutcome]:
    view = plan.view if plan.view is not None else problem.fresh_view()
    # A view the method trained itself may hold other values anywhere; zeroing changes some.
    pristine = set() if plan.view is not None else {name for name, _ in view.onnx_parameters()}
    pristine -= set(plan.zeroed or ())
    masks = plan.masks
    if plan.zeroed:
        with torch.no_grad():
            for name, zeroed in plan.zeroed.items():
                parameter = view.parameter(name)
                parameter[torch.from_numpy(zeroed).to(parameter.device)] = 0.0
        masks = {
            name: mask & ~plan.zeroed[name] if name in plan.zeroed else mask
            for name, mask in masks.items()
        }
    if not plan.fine_tune:
        return view, untrained_outcome(problem, view)
    settings = problem.settings
    if plan.training is not None:
        settings = replace(settings, training=plan.training)
    # Training runs on the torch view: onnxruntime's sessions would sit idle through it, each
    # with its own copy of the weights.
    problem.runner.release()
    trainer = MaskedTrainer(
        problem.model,
        view,
        masks,
        plan.probe_terms,
        settings,
        problem.context.seed,
        plan.loss,
        problem.sizes,
        frozenset(pristine),
    )
    return view, trainer.fit(problem.train, problem.train_bad, problem.validation, problem.reporter)


def untrained_outcome(problem: RepairProblem, view: TorchView) -> TrainOutcome:
    """The outcome of a plan that only prunes: the original and the pruned model measured."""
    classes, seed, rule = problem.model.num_classes, problem.context.seed, problem.settings.stopping
    start = problem.validation.measure(problem.fresh_view(), classes, seed)
    now = problem.validation.measure(view, classes, seed)
    history = [EpochRecord(0, None, start.accuracy, start.bad, start.gap)]
    outcome = TrainOutcome(history, 0, False, kept=now, start=start)
    outcome.judge(problem.scenario, rule, seed)
    return outcome


def finish(
    problem: RepairProblem,
    view: TorchView,
    outcome: TrainOutcome,
    before: Metrics,
    evaluation: EvaluationSet,
    selection: Selection | None = None,
) -> RepairResult:
    """Write back, measure in onnxruntime, stamp provenance and verify the bytes."""
    model, context = problem.model, problem.context
    proto = view.write_back()
    repaired = model.with_proto(proto)
    # Same graph, same footprint: the repaired model's runner reuses the batch sizes.
    runner = Runner(repaired, context.device, problem.sizes)
    after = evaluate(runner, evaluation, context.seed, problem.reporter, context.torch_device)
    result = RepairResult(
        proto,
        problem.scenario.name,
        selection.method if selection is not None else problem.settings.method,
        before,
        after,
        evaluation.name or evaluation.data.source,
        problem.found_faults,
        changed_values(model, proto),
        sum(u.parameters for u in model.units),
        outcome,
        0.0,
        settings_record(problem),
        [c.to_dict() for c in selection.candidates] if selection is not None else None,
    )
    result.proto = with_provenance(proto, provenance(result))
    verify(result.proto, repaired, evaluation.data.x)
    return result


def settings_record(problem: RepairProblem) -> dict[str, object]:
    record: dict[str, object] = asdict(problem.settings)
    record["seed"] = problem.context.seed
    record["threads"] = problem.context.thread_count
    record["bad_source"] = {**problem.source.record(), "synthesized": problem.train_bad.origin}
    return record


def provenance(result: RepairResult) -> dict[str, object]:
    return {
        "scenario": result.scenario,
        "method": result.method,
        "seed": result.settings.get("seed"),
        "settings": result.settings,
        "changed_tensors": result.changed,
        "evaluated_on": result.evaluation_name,
        "before": result.before.to_dict(),
        "after": result.after.to_dict(),
        "targets_met": result.targets_met,
        "targets_missed": result.outcome.missed,
        "targets_confidence": result.outcome.confidence,
        # without their seconds: the same inputs and seed must give the same bytes
        "auto_candidates": [
            {key: value for key, value in c.items() if key != "seconds"} for c in result.candidates
        ]
        if result.candidates is not None
        else None,
    }
