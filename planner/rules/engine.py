"""The glue: inputs -> estimates of every candidate setup -> decisions -> Plan.

Each decision comes from a small rule in a sibling module; this file only orders them, feeds the
estimator and records every choice (field, value, reason, source) into ``Plan.decisions``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from planner.convert import STRATEGY_FIELDS, plan_values, trainer_traits
from planner.errors import FtplanError
from planner.memory import TrainSetup
from planner.plan import (
    CheckpointSection,
    DataSection,
    Decision,
    EvaluationSection,
    HardwareSection,
    LoraSection,
    ModelSection,
    Plan,
    StrategySection,
    TrainingSection,
)
from planner.rules import advice as advice_rules
from planner.rules import batch, budget, data, evaluation, lora, optim, precision, strategy
from planner.rules import tracking as tracking_rules
from planner.rules.alternatives import Alternative, NoFitError, find_alternatives, no_fit_error
from planner.rules.common import Choice, hours_text
from planner.rules.fallbacks import fallbacks_for
from planner.rules.inputs import check_profile, check_task
from planner.rules.sizing import (
    Estimators,
    Option,
    PlanContext,
    as_estimators,
    estimate_section,
    free_bytes,
    option_hours,
    size_option,
    with_precision,
    with_upcast,
)
from planner.rules.versions import collect_versions
from planner.units import GIB, gib
from planner.vocab import ADAPTER_METHODS

if TYPE_CHECKING:  # annotations only: the rules reach these through the estimator and the inputs
    from planner.dataset.profile import DataProfile
    from planner.estimate import StrategyEstimate
    from planner.hardware import Hardware
    from planner.model_spec import ModelSpec

CPU_MAX_HOURS = 8.0
# When nothing fits the data's p99 length, a shorter sequence is accepted only while it truncates at
# most half the examples (beyond that the run no longer learns the data it was given).
MAX_FALLBACK_TRUNCATION = 0.5  # a CPU plan is offered only when it finishes within a working day






@dataclass
class PlanResult:
    """What make_plan answers: the plan and everything it was decided from (the review, REPORT.md and the
    wizard show them)."""

    plan: Plan
    estimates: list[StrategyEstimate]  # every candidate, side by side (same order as options)
    chosen: StrategyEstimate  # the plan as written (after overrides)
    profile: DataProfile
    spec: ModelSpec
    hardware: Hardware
    alternatives: dict[str, Alternative | None] = field(default_factory=dict)  # cheapest / fastest
    advice: list[advice_rules.Advice] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)
    general_profile: DataProfile | None = None  # --general-data


class Recorder:
    """Collects decisions in the order they are made."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def add(self, path: str, choice: Choice):
        self.decisions.append(Decision(path, _plain(choice.value), choice.reason, choice.source))
        return choice.value


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def _resolve_inputs(request, hardware, profile, spec):
    check_task(request.task)
    if spec is None:
        from planner.model_spec import load_model_spec

        spec = load_model_spec(request.model, trust_remote_code=request.trust_remote_code)
    if hardware is None:
        from planner.hardware import resolve_hardware

        hardware = resolve_hardware(
            request.gpu,
            request.gpus,
            request.gpu_memory_gib,
            request.price_per_hour,
            nodes=getattr(request, "nodes", 1),
            cpu_processes=getattr(request, "cpu_processes", None),
        )
    if profile is None:
        from planner.dataset import TemplateFixes, profile_data

        profile = profile_data(
            request.data,
            tokenizer_path=spec.tokenizer_path,
            task=request.task,
            vocab_size=spec.vocab_size,
            columns=request.columns,
            fixes=TemplateFixes(request.system_turn, request.merge_consecutive),
            model_type=spec.model_type,
            chat_template=(request.overrides or {}).get("data.chat_template"),
            # rows are counted in the shape they train: a classification head sees the text alone
            classification_mode=(request.overrides or {}).get("training.classification_mode", "generate"),
        )
    check_profile(profile, request.task)
    general = None
    if request.general_data:
        from planner.dataset import TemplateFixes, profile_data

        general = profile_data(request.general_data, tokenizer_path=spec.tokenizer_path, task=None)
        if general.valid_rows == 0:
            raise FtplanError(
                f"{request.general_data}: the general corpus has no valid rows",
                hint="point --general-data at a text or instruction file",
            )
    return spec, hardware, profile, general


def _world(hardware) -> int:
    """GPUs x nodes; on CPU, the processes per node (--cpu-processes; the probe's 0: one) x nodes."""
    return max(1, hardware.count * getattr(hardware, "nodes", 1)) if hardware.gpu is not None or hardware.count else 1


# ----------------------------------------------------------------------------------------------
# Sizing one candidate
# ----------------------------------------------------------------------------------------------










@dataclass(frozen=True)
class _Strategy:
    """The outcome of the strategy phase."""

    chosen: Option
    options: list[Option]
    order: tuple[str, ...]
    budget_reason: str
    budget_warnings: list[str]


# ----------------------------------------------------------------------------------------------
# make_plan: one phase per group of decisions, in the order a practitioner decides them
# ----------------------------------------------------------------------------------------------


def make_plan(
    request,
    *,
    hardware=None,
    profile=None,
    spec=None,
    estimator: Callable | None = None,
    versions: dict[str, str] | None = None,
    alternatives: bool = True,
) -> PlanResult:
    """Decide every setting of a fine-tuning run and explain each one (see planner/rules/*.py).

    ``estimator`` defaults to :func:`planner.estimate.estimate` (tests inject a stub); ``versions``
    to :func:`collect_versions` (tests inject fixed values so rendered files are reproducible);
    ``alternatives=False`` skips the GPU-catalog search for cheaper/faster hardware.
    """
    from planner.rules.overrides import apply_plan_overrides, pinned_overrides  # imports this module

    estimator = as_estimators(estimator)
    cpu = getattr(request, "cpu_processes", None)  # checked against --set before the data is read
    nodes = getattr(request, "nodes", 1)
    cpu_choice = None if cpu is None else strategy.cpu_processes_rule(cpu, nodes, request.overrides)
    spec, hardware, profile, general = _resolve_inputs(request, hardware, profile, spec)
    pinned = pinned_overrides(request.overrides)
    first_error = None
    choices = _seq_len_choices(profile, spec, request.task, hardware)
    for seq_choice in choices:
        rec = Recorder()
        if cpu_choice is not None:
            rec.add("hardware.count", cpu_choice)
        ctx = _data_phase(request, spec, hardware, profile, general, rec, seq_choice)
        prec = rec.add("strategy.precision", precision.precision_rule(hardware))
        prec = pinned.get("strategy.precision", prec)
        attn = rec.add("strategy.attn_implementation", precision.attention_rule(spec.model_type, hardware))
        code = lora.is_code_model_or_data(spec.name, profile.format, tuple(profile.fields))
        r_choice = lora.rank_rule(ctx.task, ctx.train_rows, code, ctx.goal)
        lora_rules = LoraSection(
            r=r_choice.value,
            alpha=lora.alpha_rule(r_choice.value).value,
            dropout=lora.dropout_rule(spec.param_counts().total).value,
            target_modules=list(lora.targets_rule(spec).value),
        )
        try:
            st = _strategy_phase(ctx, estimator, rec, prec, attn, lora_rules, pinned)
            break
        except NoFitError as err:  # nothing fits at this length: a shorter one may (more truncation)
            first_error = first_error or err
    else:
        note = (
            "; shorter sequences that truncate at most half the examples do not fit either"
            if len(choices) > 1
            else ""
        )
        raise NoFitError(
            first_error.message + note, hint=first_error.hint, alternatives=first_error.alternatives
        )
    chosen = st.chosen
    method = chosen.candidate.setup.method
    training = _optimisation_phase(ctx, chosen, rec)
    lora_section = None
    if method in ADAPTER_METHODS:
        _record_lora(rec, r_choice, spec)
        lora_section = lora_rules
    ev, ck = _evaluation_phase(ctx, chosen, rec, training)
    if request.max_hours is not None or request.max_cost is not None:
        rec.add(
            "estimate.cost_usd",
            Choice(round(chosen.estimate.cost_usd, 2), st.budget_reason, "--max-hours / --max-cost"),
        )
    adv = advice_rules.advice_rule(
        ctx.task, profile.valid_rows, profile.total_tokens, profile.response_tokens_mean
    )
    plan = Plan(
        model=_model_section(spec, request),
        data=_data_section(ctx),
        task=ctx.task,
        goal=ctx.goal,
        hardware=_hardware_section(hardware),
        strategy=_strategy_section(chosen, prec, attn),
        lora=lora_section,
        training=training,
        evaluation=ev,
        checkpointing=ck,
        tracking=tracking_rules.tracking_section(request, rec),
        estimate=estimate_section(chosen.estimate, chosen.steps),
        decisions=rec.decisions,
        warnings=_warnings(ctx, chosen, st.budget_warnings),
        advice=[a.message for a in adv],
        versions=collect_versions() if versions is None else dict(versions),
    )
    plan.fallbacks = fallbacks_for(plan, chosen, st.options, st.order, lora_rules)
    result = PlanResult(
        plan=plan,
        estimates=[o.estimate for o in st.options],
        chosen=chosen.estimate,
        profile=profile,
        spec=spec,
        hardware=hardware,
        advice=adv,
        options=st.options,
        general_profile=general,
    )
    if alternatives:
        result.alternatives = find_alternatives(spec, hardware, chosen, ctx, estimator)
    if request.overrides:
        result = apply_plan_overrides(result, request.overrides, estimator, ctx, lora_rules)
    return result


def _seq_len_choices(profile, spec, task: str, hardware) -> list[Choice]:
    """The rule's sequence length, then (on a GPU) shorter ones to try when nothing fits it."""
    rule = data.seq_len_rule(profile, spec.max_position_embeddings, task)
    if hardware.gpu is None:
        return [rule]
    out = [rule]
    for shorter in data.shorter_seq_lens(profile, rule.value):
        cut = data.truncated_fraction(profile, shorter, task)
        if cut > MAX_FALLBACK_TRUNCATION:
            break
        reason = (
            f"shortened from {rule.value} (p99-based) to {shorter} because no strategy fits "
            f"{rule.value} tokens on {hardware.gpu.name}: about {cut:.0%} of examples will be truncated"
        )
        out.append(Choice(shorter, reason, "planner.estimate memory verdicts"))
    return out


def _data_phase(request, spec, hardware, profile, general, rec: Recorder, seq_choice: Choice) -> PlanContext:
    """Validation split, sequence length, packing, loss masking, replay, epochs."""
    task, gpu = request.task, hardware.gpu is not None
    val_choice, val_rows = data.val_split_rule(profile.valid_rows)
    rec.add("data.val_split", val_choice)
    train_rows = max(1, profile.valid_rows - profile.duplicates - val_rows)
    seq_len = rec.add("training.seq_len", seq_choice)
    data.check_trainable(profile, seq_len, task)
    cut = data.truncated_fraction(profile, seq_len, task)
    packing = rec.add("training.packing", data.packing_rule(profile, seq_len, task))
    rec.add("training.completion_only_loss", data.completion_only_rule(task))
    replay = rec.add("data.replay_ratio", data.replay_rule(general is not None))
    tokens = data.trained_tokens(profile, seq_len, cut, packing, val_rows, replay)
    units = math.ceil(tokens / seq_len) if packing else math.ceil(train_rows / (1 - replay))
    epochs = rec.add("training.epochs", optim.epochs_rule(task, train_rows, request.goal))
    return PlanContext(
        request=request,
        spec=spec,
        hardware=hardware,
        profile=profile,
        general=general,
        gpu=gpu,
        world=_world(hardware),
        val_rows=val_rows,
        train_rows=train_rows,
        seq_len=seq_len,
        truncated=cut,
        packing=packing,
        replay=replay,
        train_units=units,
        tokens_per_epoch=tokens,
        epochs=epochs,
    )


def _pinned_options(options: list[Option], pinned: dict[str, str], ctx: PlanContext, estimator: Estimators,
                    prec: str) -> list[Option]:
    """The options that match the pinned method/distribution; a method the standard candidates lack (DoRA,
    IA3, prompt/prefix) is sized on the LoRA candidates' layouts."""
    method, dist = pinned.get("strategy.method"), pinned.get("strategy.distribution")
    if method and not any(o.candidate.setup.method == method for o in options):
        lora_like = [o.candidate for o in options if o.candidate.setup.method == "lora"]
        options = options + [
            size_option(with_precision(replace(c, name=c.name.replace("lora", method), family=method,
                                                 setup=c.setup.with_(method=method)), prec), ctx, estimator)
            for c in lora_like
        ]
    return [o for o in options
            if (method is None or o.candidate.setup.method == method)
            and (dist is None or o.candidate.setup.distribution == dist)]


def _strategy_phase(
    ctx: PlanContext, estimator: Estimators, rec: Recorder, prec: str, attn: str, lora_rules: LoraSection,
    pinned: dict[str, str] | None = None,
) -> _Strategy:
    """Estimate every candidate setup, keep the fastest of the first family that fits, check the budget.
    With ``pinned`` --set values, the fastest fitting setup that has them (else the smallest one)."""
    profile, hardware, gpu, world = ctx.profile, ctx.hardware, ctx.gpu, ctx.world
    base = TrainSetup(
        method="lora",
        precision=prec,
        seq_len=ctx.seq_len,
        attn_implementation=attn,
        lora_r=lora_rules.r,
        lora_alpha=lora_rules.alpha,
        gpus=world,
        lora_dropout=lora_rules.dropout,
        gpu_kind=hardware.gpu.name if gpu else "",
        **trainer_traits(ctx.task, ctx.packing, gpu=gpu),
    )
    examples = max(1, profile.valid_rows - profile.duplicates)  # the dataset's size, as the seeds count it
    order_choice = strategy.family_order(ctx.task, examples, profile.total_tokens, ctx.goal, gpu=gpu)
    order = order_choice.value
    options = [
        size_option(with_precision(c, prec), ctx, estimator)
        for c in map(lambda c: with_upcast(c, ctx.spec), strategy.candidates(base, world, gpu, allow_offload=True))
    ]
    keep = _pinned_options(options, pinned, ctx, estimator, prec) if pinned else []
    if keep:
        fitting = [o for o in keep if o.fits]
        idx = {id(o): i for i, o in enumerate(keep)}
        chosen = (min(fitting, key=lambda o: (round(o.estimate.time_hours, 3), idx[id(o)])) if fitting
                  else min(keep, key=lambda o: o.estimate.memory.total))
        said = ", ".join(f"{k}={v}" for k, v in pinned.items())
        method_reason = f"pinned by --set {said}: planned for it ({'fits' if chosen.fits else 'does not fit'})"
        allowed = [chosen]
    else:
        chosen, method_reason = _choose(options, order, ctx.goal, gpu, hardware)
        if chosen is None or (not gpu and chosen.estimate.time_hours > CPU_MAX_HOURS):
            raise no_fit_error(ctx.spec, hardware, options, ctx, estimator)
        allowed = [o for o in options if o.fits and _allowed(o, ctx.goal, gpu, options)]
    chosen, budget_choice, budget_warnings = budget.budget_rule(
        chosen, allowed, {f: i for i, f in enumerate(order)}, ctx.request.max_hours, ctx.request.max_cost
    )
    setup = chosen.candidate.setup
    rec.add(
        "strategy.method",
        Choice(setup.method, f"{order_choice.reason}. {method_reason} -> {chosen.name}", order_choice.source),
    )
    fitting = [o.name for o in options if o.fits]
    rec.add(
        "strategy.distribution",
        Choice(
            setup.distribution,
            strategy.distribution_reason(chosen.name, world, fitting, gpu=gpu),
            strategy.DISTRIBUTION_SOURCE,
        ),
    )
    rec.add("strategy.mixed_precision", precision.mixed_precision_rule(setup.method, prec))
    rec.add("strategy.optimizer", precision.optimizer_rule(setup.method, hardware))
    if setup.method == "qlora":
        rec.add("strategy.qlora_upcast", precision.qlora_upcast_for(setup, ctx.spec))
    rec.add("strategy.gradient_checkpointing", batch.grad_ckpt_reason(chosen.gradient_checkpointing, chosen.name))
    upper = max(1, min(batch.MAX_MICRO_BATCH, chosen.effective.value // world))
    reason = batch.micro_batch_reason(chosen.micro_batch, upper, chosen.gradient_checkpointing)
    rec.add("training.micro_batch", Choice(chosen.micro_batch, reason, batch.MICRO_BATCH_SOURCE))
    rec.add("training.grad_accum", batch.grad_accum_rule(chosen.effective.value, chosen.micro_batch, world))
    return _Strategy(chosen, options, order, budget_choice.reason, budget_warnings)


def _optimisation_phase(ctx: PlanContext, chosen: Option, rec: Recorder) -> TrainingSection:
    """Learning rate, warmup, schedule, weight decay, clipping, layer-wise decay, seed."""
    method, steps = chosen.candidate.setup.method, chosen.steps
    return TrainingSection(
        seq_len=ctx.seq_len,
        micro_batch=chosen.micro_batch,
        grad_accum=chosen.grad_accum,
        packing=ctx.packing,
        epochs=float(ctx.epochs),
        lr=rec.add("training.lr", optim.lr_rule(method, ctx.task, ctx.spec.param_counts().total)),
        warmup_ratio=rec.add("training.warmup_ratio", optim.warmup_rule(steps)),
        lr_scheduler=rec.add("training.lr_scheduler", optim.schedule_rule(steps, ctx.epochs)),
        weight_decay=rec.add("training.weight_decay", optim.weight_decay_rule(method, ctx.train_rows)),
        max_grad_norm=rec.add("training.max_grad_norm", optim.clipping_rule()),
        layerwise_lr_decay=rec.add("training.layerwise_lr_decay", optim.layerwise_rule(method)),
        completion_only_loss=data.completion_only_rule(ctx.task).value,
        seed=rec.add("training.seed", evaluation.seed_rule()),
    )


def _record_lora(rec: Recorder, r_choice: Choice, spec) -> None:
    rec.add("lora.r", r_choice)
    rec.add("lora.alpha", lora.alpha_rule(r_choice.value))
    rec.add("lora.dropout", lora.dropout_rule(spec.param_counts().total))
    rec.add("lora.target_modules", lora.targets_rule(spec))


def _evaluation_phase(ctx: PlanContext, chosen: Option, rec: Recorder, training: TrainingSection):
    """Metric, eval cadence, checkpoints (<= 30 min apart), early stopping, forgetting check."""
    sps = evaluation.seconds_per_step(chosen.estimate.time_hours, chosen.steps)
    metric = rec.add("evaluation.metric", evaluation.metric_rule(ctx.task, ctx.profile.response_tokens_mean))
    eval_steps = rec.add("evaluation.eval_steps", evaluation.eval_steps_rule(chosen.steps, sps))
    save_steps = rec.add("checkpointing.save_steps", evaluation.save_steps_rule(eval_steps, sps))
    ev = EvaluationSection(
        eval_steps=eval_steps,
        early_stopping_patience=rec.add(
            "evaluation.early_stopping_patience", evaluation.early_stopping_rule(ctx.val_rows)
        ),
        metric=metric,
        compare_base=rec.add("evaluation.compare_base", evaluation.compare_base_rule()),
        forgetting_check=rec.add(
            "evaluation.forgetting_check", evaluation.forgetting_rule(ctx.general is not None)
        ),
    )
    return ev, CheckpointSection(save_steps=save_steps, save_total_limit=3)


def _warnings(ctx: PlanContext, chosen: Option, budget_warnings: list[str]) -> list[str]:
    out = data.data_warnings(ctx.profile, ctx.truncated, ctx.seq_len, ctx.task) + list(budget_warnings)
    if not ctx.gpu:
        out.append(
            f"no GPU: this is a CPU plan (fp32, ~{hours_text(chosen.estimate.time_hours)}); a GPU "
            "would be far faster (see alternatives in REPORT.md)"
        )
    return out


def _data_section(ctx: PlanContext) -> DataSection:
    p, general, request = ctx.profile, ctx.general, ctx.request
    cut, untrained = data.cut_rows(p, ctx.seq_len, ctx.task)
    return DataSection(
        path=os.path.abspath(p.path),  # launch.sh runs from the plan folder
        sha256=p.sha256,
        format=p.format,
        rows=p.rows,
        valid_rows=p.valid_rows,
        val_split=round(ctx.val_rows / p.valid_rows, 4) if ctx.val_rows else 0.0,
        val_rows=ctx.val_rows,
        drop_duplicates=True,
        general_path=os.path.abspath(request.general_data) if request.general_data else None,
        general_sha256=general.sha256 if general else "",
        replay_ratio=ctx.replay,
        duplicates=p.duplicates,
        invalid_rows=p.invalid_count,
        columns=dict(p.columns or {}),
        system_turn=p.system_turn,
        merge_consecutive=p.merge_consecutive,
        template=p.template,
        tokens_counted="heuristic" if str(p.tokenizer).startswith("heuristic") else "exact",
        truncated_rows=cut,
        untrained_rows=untrained,
        skipped=dict(p.skipped or {}),
    )




def _strategy_section(chosen: Option, prec: str, attn: str) -> StrategySection:
    setup = chosen.candidate.setup.with_(precision=prec, attn_implementation=attn,
                                         gradient_checkpointing=chosen.gradient_checkpointing)
    values = plan_values(setup)
    return StrategySection(**{name: values[f"strategy.{name}"] for name in STRATEGY_FIELDS})














def _allowed(opt: Option, goal: str, gpu: bool, options: list[Option]) -> bool:
    """Offload setups are slow: used by goal=quality, or when nothing on the GPU alone fits."""
    if not opt.candidate.offload:
        return True
    return goal == "quality" or not any(o.fits and not o.candidate.offload for o in options)


def _choose(options: list[Option], order: tuple[str, ...], goal: str, gpu: bool, hardware=None):
    """The fastest fitting setup of the first family (in ``order``) that has one, and why."""
    reason_parts = []
    where = "per GPU" if gpu else "of host RAM"
    for family in order:
        fam = [o for o in options if o.family == family]
        ok = [o for o in fam if o.fits and _allowed(o, goal, gpu, options)]
        if ok:
            idx = {id(o): i for i, o in enumerate(options)}
            best = min(ok, key=lambda o: (round(o.estimate.time_hours, 3), idx[id(o)]))
            reason_parts.append(
                f"{family} fits ({gib(best.estimate.memory.total)} {where} of "
                f"{gib(free_bytes(best, hardware))} free)"
            )
            return best, f"{order[0]} first ({', '.join(order)}); " + "; ".join(reason_parts)
        offload_only = [o for o in fam if o.fits and o.candidate.offload]
        if offload_only:
            reason_parts.append(
                f"{family} fits only with CPU offload ({offload_only[0].name}, "
                f"{option_hours(offload_only[0])}: slow, used for goal=quality)"
            )
        elif fam:
            need = min(fam, key=lambda o: o.estimate.memory.total)
            reason_parts.append(
                f"{family} does not fit ({need.name} needs {gib(need.estimate.memory.total)} "
                f"{where} of {gib(free_bytes(need, hardware))} free, with margin)"
            )
    return None, "; ".join(reason_parts)






def _model_section(spec, request) -> ModelSection:
    # A local folder is recorded absolute: launch.sh runs from the plan folder.
    path = os.path.abspath(spec.local_path) if spec.source == "local" and spec.local_path else spec.name
    return ModelSection(
        name_or_path=path,
        architecture=spec.architecture,
        model_type=spec.model_type,
        total_params=int(spec.param_counts().total),
        source=spec.source,
        trust_remote_code=bool(request.trust_remote_code),
    )


def _hardware_section(hw) -> HardwareSection:
    return HardwareSection(
        gpu=hw.gpu.name if hw.gpu else None,
        count=max(1, hw.count),  # CPU: processes per node (--cpu-processes; the probe says 0: one)
        nodes=getattr(hw, "nodes", 1),
        memory_gib=round(hw.free_memory_bytes / GIB, 2),
        bf16=hw.bf16,
        detected=hw.detected,
        price_per_hour=float(hw.hourly_price),
    )






# ----------------------------------------------------------------------------------------------
# Fallbacks, alternatives, no-fit answers
# ----------------------------------------------------------------------------------------------












# ----------------------------------------------------------------------------------------------
# The step count the executor will run
# ----------------------------------------------------------------------------------------------






# ----------------------------------------------------------------------------------------------
# Versions
# ----------------------------------------------------------------------------------------------



