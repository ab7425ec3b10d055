"""run_plan(plan_dir): the one entry point. Parse, validate, set up, train (resume), evaluate, save, report.

Read it top to bottom: every step is a builder or a library call; nothing here re-decides the plan.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from executor import checkpoints
from executor.callbacks import InterruptCallback, MetricsCallback, NanGuardCallback, memory_now
from executor.data import DataBundle, build_datasets
from executor.evaluate import adapter_disabled, evaluate_model
from executor.fallback import OutOfMemoryAtStep, is_oom, train_with_fallbacks
from executor.guards import check_data_unchanged, check_output, environment_error
from executor.lock import RunLock
from executor.model import PEFT_METHODS, build_model, is_head_classification, trainable_parameters
from executor.paths import FINAL_MARKER, RunPaths
from executor.preflight import check_inputs, resolve_relative_paths
from executor.report import (
    RunSummary,
    append_report,
    compare_with_estimate,
    plot_loss_curve,
    read_metrics,
    write_summary,
)
from executor.tokenizer import build_tokenizer
from executor.tracking import check_installed, detach_trackers, log_run_end
from executor.trainer import build_trainer, build_training_args, find_callback
from planner.errors import FtplanError
from planner.files import write_atomic
from planner.plan import Plan, load_plan
from planner.render import rerender_configs
from planner.vocab import ADAPTER_METHODS

Log = Callable[[str], None]
ALLOW_DATA_CHANGE_ENV = "FTPLAN_ALLOW_DATA_CHANGE"  # --allow-data-change, passed to launched ranks


class TrainingDiverged(FtplanError):
    """NaN/inf loss: the run stopped, the last good checkpoint is kept. Exit code 3 (not bad input)."""

    exit_code = 3


@dataclass
class Trained:
    """What one training attempt leaves for evaluation and saving."""

    plan: Plan
    tokenizer: object
    data: DataBundle
    trainer: object
    status: str  # completed | interrupted | diverged
    start_step: int
    start_tokens: int
    train_seconds: float
    base: dict = field(default_factory=dict)
    message: str = ""
    exit_code: int = 0  # 130 / 143 after a SIGINT / SIGTERM stop (executor.callbacks.STOP_SIGNALS)


def run_plan(plan_dir: str | os.PathLike, *, log: Log = print, allow_data_change: bool = False) -> RunSummary:
    """Train the plan in ``plan_dir`` end to end and return what was measured.

    Resumes from the newest complete checkpoint under ``<output_dir>/checkpoints``. Raises
    FtplanError (exit 2) for bad input or a failing environment (disk full, read-only folder, another
    run holding the folder, a data file changed since planning) and TrainingDiverged (exit 3) on NaN/inf
    loss; SIGINT/SIGTERM return a summary with status "interrupted" (exit code 130/143) after saving a
    checkpoint. A plan that already completed is not trained again.
    """
    wall0 = time.perf_counter()
    plan = load_plan(plan_dir)  # parse + validate (every problem in one message)
    paths = RunPaths.of(plan_dir, plan.output_dir)
    plan = resolve_relative_paths(plan, paths.plan_dir)
    check_inputs(plan)
    check_installed(plan)  # a chosen tracker missing: one line now, not mid-training
    allow_data_change = allow_data_change or os.environ.get(ALLOW_DATA_CHANGE_ENV) == "1"
    check_data_unchanged(plan, allow_data_change, log)
    check_output(paths, plan)
    with RunLock(paths.output, log) if is_main_process() else nullcontext():
        done = finished_summary(paths)
        if done is not None:
            log(f"ftplan: {paths.plan_dir} already completed at step {done.global_step} "
                f"({paths.final}); nothing to do (delete {paths.output} to train again)")
            return done
        try:
            return _run(plan, paths, wall0, log)
        except (OSError, RuntimeError) as exc:
            error = environment_error(exc, paths.output, plan)
            if error is None:
                raise
            raise error from None


def _run(plan: Plan, paths: RunPaths, wall0: float, log: Log) -> RunSummary:
    if is_main_process():
        rerender_configs(plan, paths.plan_dir)  # launcher configs follow plan.yaml, even after a hand edit
    trained, plan, fallbacks = train_with_fallbacks(
        plan, paths, lambda p: train(p, paths, log), log=log, free_memory=free_memory
    )
    detach_trackers(trained.trainer)  # evaluations after training reach the trackers once, named base/tuned

    summary = summarise(trained, paths, wall0)
    summary.exit_code = trained.exit_code
    summary.fallbacks = [f.__dict__ for f in fallbacks]
    if trained.status == "completed":
        summary.tuned = evaluate_tuned(trained)
        summary.base = trained.base or evaluate_base_after(trained)
        summary.artifacts.update(save_artifacts(trained, paths, log))
    summary.wall_seconds = time.perf_counter() - wall0
    finish(trained, summary, paths)
    if trained.status == "diverged":
        raise TrainingDiverged(
            trained.message,
            hint="lower training.lr or enable clipping; the last good "
            f"checkpoint is kept in {paths.checkpoints}",
        )
    return summary


def finished_summary(paths: RunPaths) -> RunSummary | None:
    """The summary of a run that completed (run_summary.json says so and final/ is committed), else None."""
    try:
        data = json.loads(paths.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("status") != "completed" or not (paths.final / FINAL_MARKER).is_file():
        return None
    known = {f.name for f in dataclasses.fields(RunSummary)}
    summary = RunSummary(**{k: v for k, v in data.items() if k in known and k != "comparisons"})
    summary.message = "already completed: nothing trained"
    return summary


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train(plan: Plan, paths: RunPaths, log: Log) -> Trained:
    """One training attempt: build everything from the plan, resume, train. OOM -> OutOfMemoryAtStep."""
    from transformers import set_seed

    set_seed(plan.training.seed)
    tokenizer = build_tokenizer(plan)
    data = build_datasets(plan, tokenizer)
    args = build_training_args(plan, paths, has_val=data.val is not None)  # before the model (ZeRO-3 init)
    model = build_model(plan, tokenizer, labels=data.labels if is_head_classification(plan) else None)
    trainer = build_trainer(plan, model, tokenizer, data, args, paths)

    resume = find_resume(paths, log)
    start_step = checkpoints.step_of(resume) if resume else 0
    if resume:
        log(f"ftplan: resuming from {resume.name} (step {start_step})")
    base: dict = {}
    t0 = time.perf_counter()
    oom, loading = None, False
    try:
        base = evaluate_base_before(plan, trainer, tokenizer, data, paths)  # an OOM here is a first-step OOM
        t0, loading = time.perf_counter(), resume is not None
        if resume is not None and training_finished(resume) and not trainer.args.deepspeed:
            restore_finished(trainer, resume)  # killed after the last step (e.g. in evaluation)
        else:
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except Exception as exc:
        if not is_oom(exc):
            if loading and trainer.state.global_step <= start_step:  # failed before the first new step
                raise FtplanError(
                    f"checkpoint {resume}: cannot be loaded ({type(exc).__name__}: {_first_line(exc)})",
                    hint=f"delete {resume} to resume from the previous checkpoint, or delete the folder to start over",
                ) from exc
            raise
        oom = (trainer.state.global_step - start_step, _first_line(exc))
    if oom:  # raised outside the except block, so the traceback (and the model it holds) can be freed
        del trainer, model
        raise OutOfMemoryAtStep(*oom)
    seconds = time.perf_counter() - t0

    status, message, exit_code = "completed", "", 0
    nan = find_callback(trainer, NanGuardCallback).bad
    interrupt = find_callback(trainer, InterruptCallback)
    if nan:
        step, key, value = nan
        status = "diverged"
        message = f"training {key} became {value} at step {step}; stopped without saving it"
    elif interrupt.requested:
        status, message = (
            "interrupted",
            f"stopped by {interrupt.signal_name} at step {trainer.state.global_step} (checkpoint saved; "
            f"`ftplan run` resumes; exit {interrupt.exit_code})",
        )
        exit_code = interrupt.exit_code
    metrics_cb = find_callback(trainer, MetricsCallback)
    return Trained(
        plan, tokenizer, data, trainer, status, start_step, metrics_cb.start_tokens, seconds, base, message, exit_code
    )


def training_finished(ckpt: Path) -> bool:
    """The checkpoint is the run's last step. Resuming HF Trainer there mid-epoch would still run one
    more optimizer step (transformers/trainer.py ``_run_epoch`` checks max_steps only after a step)."""
    try:
        state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
        return 0 < state["max_steps"] <= state["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def restore_finished(trainer, ckpt: Path) -> None:
    """Load the final (or, when planned, the best) checkpoint's weights and state without training."""
    from transformers import TrainerState

    trainer.state = TrainerState.load_from_json(str(ckpt / "trainer_state.json"))
    best = trainer.state.best_model_checkpoint
    source = best if trainer.args.load_best_model_at_end and best and Path(best).is_dir() else str(ckpt)
    trainer._load_from_checkpoint(source)  # the Trainer's own loader: full weights or PEFT adapter
    find_callback(
        trainer, MetricsCallback
    ).start_tokens = trainer.state.num_input_tokens_seen  # none trained now


def find_resume(paths: RunPaths, log: Log) -> Path | None:
    """Newest complete, verified checkpoint. Only the main process deletes incomplete ones and sets damaged
    ones aside; the other ranks wait for it (a barrier) and then take the newest complete one left."""
    found = checkpoints.resume_checkpoint(paths.checkpoints, log) if is_main_process() else None
    _barrier()
    if is_main_process():
        return found
    done = [c for c in checkpoints.list_checkpoints(paths.checkpoints) if checkpoints.is_complete(c)]
    return done[-1] if done else None


def _barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    except ImportError:  # pragma: no cover
        pass


# ----------------------------------------------------------------------------------------------------
# evaluation: base and tuned side by side
# ----------------------------------------------------------------------------------------------------


def _generation_ok(trainer) -> bool:
    """Greedy generation for the task metric, on the main process only (it is the one that reports),
    and never under ZeRO-3, where no rank holds the full weights outside a collective forward."""
    if trainer.args.world_size == 1:
        return True
    ds = getattr(trainer.args, "hf_deepspeed_config", None)
    return is_main_process() and (ds is None or not ds.is_zero3())


def evaluate_base_before(plan: Plan, trainer, tokenizer, data: DataBundle, paths: RunPaths) -> dict:
    """Full fine-tuning: the base weights only exist before training, so evaluate them then (cached)."""
    if not plan.evaluation.compare_base or plan.strategy.method in PEFT_METHODS:
        return {}
    if paths.base_eval.is_file():
        try:
            return json.loads(paths.base_eval.read_text(encoding="utf-8"))
        except ValueError:  # written by an older version non-atomically and cut: evaluate again
            paths.base_eval.unlink(missing_ok=True)
    if trainer.args.deepspeed:  # a DeepSpeed engine is built by train(); evaluating first would build another
        return {}
    base = evaluate_model(plan, trainer, tokenizer, data, generation=_generation_ok(trainer))
    if is_main_process():
        write_atomic(paths.base_eval, json.dumps(base, default=str))
    return base


def evaluate_base_after(t: Trained) -> dict:
    """PEFT methods: the base model is the tuned one with its adapter switched off."""
    if not t.plan.evaluation.compare_base or t.plan.strategy.method not in PEFT_METHODS:
        return {}
    with adapter_disabled(t.trainer.model):
        return evaluate_model(t.plan, t.trainer, t.tokenizer, t.data, generation=_generation_ok(t.trainer))


def evaluate_tuned(t: Trained) -> dict:
    return evaluate_model(t.plan, t.trainer, t.tokenizer, t.data, generation=_generation_ok(t.trainer))


# ----------------------------------------------------------------------------------------------------
# saving and summarising
# ----------------------------------------------------------------------------------------------------


def save_artifacts(t: Trained, paths: RunPaths, log: Log) -> dict[str, str]:
    """Adapter (PEFT format) or full model (safetensors) + tokenizer; merged model when planned."""
    (paths.final / FINAL_MARKER).unlink(missing_ok=True)  # being rewritten: not complete until marked again
    t.trainer.save_model(str(paths.final))  # collective under DeepSpeed: every rank calls it
    out = {"final": str(paths.final)}
    if not is_main_process():
        return out
    t.tokenizer.save_pretrained(str(paths.final))
    write_atomic(paths.final / FINAL_MARKER, json.dumps({"step": t.trainer.state.global_step}))
    lora = t.plan.lora
    if t.plan.strategy.method in ADAPTER_METHODS and lora is not None and lora.merge_after:
        if is_head_classification(t.plan):
            merge_adapter(t.plan, paths, t.tokenizer, t.data.labels)
        else:  # the one merge path of `ftplan export --merged`: QLoRA onto the dequantized NF4 base, checked
            from executor.merge import export_merged

            shutil.rmtree(paths.merged, ignore_errors=True)  # ftplan's own output, rewritten at each completion
            export_merged(paths.plan_dir, paths.merged, log=log)
        out["merged"] = str(paths.merged)
        log(f"ftplan: merged model written to {paths.merged}")
    return out


def merge_adapter(plan: Plan, paths: RunPaths, tokenizer, labels: list[str] | None = None) -> Path:
    """A head classifier's adapter merged into its base (sequence classification: not a causal LM, so
    not ``executor.merge``, which serves every other plan): the base reloaded unquantized in the compute
    dtype, the adapter applied and merged, safetensors saved."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from executor.model import torch_dtype

    dtype = torch_dtype("bf16" if plan.strategy.method == "qlora" else plan.strategy.precision)
    cls = AutoModelForSequenceClassification if is_head_classification(plan) else AutoModelForCausalLM
    base = cls.from_pretrained(
        plan.model.name_or_path,
        dtype=dtype,
        revision=plan.model.revision,
        trust_remote_code=plan.model.trust_remote_code,
        use_safetensors=True,
        **({"num_labels": len(labels)} if labels else {}),
    )
    merged = PeftModel.from_pretrained(base, str(paths.final)).merge_and_unload()
    merged.save_pretrained(str(paths.merged), safe_serialization=True)
    tokenizer.save_pretrained(str(paths.merged))
    return paths.merged


def summarise(t: Trained, paths: RunPaths, wall0: float) -> RunSummary:
    import torch

    state = t.trainer.state
    steps_run = max(state.global_step - t.start_step, 0)
    tokens_run = max(state.num_input_tokens_seen - t.start_tokens, 0)
    train_losses = [h["loss"] for h in state.log_history if "loss" in h]
    metrics_cb = find_callback(t.trainer, MetricsCallback)
    eval_seconds = metrics_cb.eval_seconds if metrics_cb is not None else 0.0
    steps_seconds = max(t.train_seconds - eval_seconds, 0.0)  # what planner/cost.py estimates
    trainable, total = trainable_parameters(t.trainer.model)
    return RunSummary(
        status=t.status,
        plan_dir=str(paths.plan_dir),
        output_dir=str(paths.output),
        task=t.plan.task,
        method=t.plan.strategy.method,
        device=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        world_size=t.trainer.args.world_size,
        global_step=state.global_step,
        resumed_from_step=t.start_step,
        train_seconds=t.train_seconds,
        wall_seconds=time.perf_counter() - wall0,
        tokens_seen=state.num_input_tokens_seen,
        eval_seconds=eval_seconds,
        tokens_per_second=tokens_run / steps_seconds if steps_seconds else 0.0,
        seconds_per_step=steps_seconds / steps_run if steps_run else 0.0,
        trainable_params=trainable,
        total_params=total,
        final_train_loss=train_losses[-1] if train_losses else None,
        peak_memory_gb=memory_now(),
        data=dict(t.data.stats),
        message=t.message,
    )


def finish(t: Trained, summary: RunSummary, paths: RunPaths) -> None:
    """run_summary.json, loss curve, REPORT.md section (main process only)."""
    if not is_main_process():
        return
    summary.comparisons = compare_with_estimate(t.plan, summary)
    curve = plot_loss_curve(read_metrics(paths.metrics), paths.loss_curve)
    if curve:
        summary.artifacts["loss_curve"] = str(curve)
    summary.artifacts["metrics"] = str(paths.metrics)
    write_summary(summary, paths)
    append_report(summary, paths)
    log_run_end(t.plan, t.trainer, summary, paths)  # plan.tracking.backends: the table and results


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
