"""Experiment tracking of a run: transformers' own integrations do the training-time logging (``report_to``:
TensorBoardCallback, MLflowCallback, WandbCallback, each configured by the environment variables it reads);
this module adds what only ftplan knows, on the main process only:

- when training begins, the plan's settings and its estimate as parameters (flattened plan.yaml keys:
  ``lora.r``, ``training.lr``, ``estimate.peak_allocated``...; top-level keys as ``plan.task``...);
- when the run ends, the estimate-vs-measured table (executor/report.py) and the headline results as
  metrics, and plan.yaml, run_summary.json, REPORT.md, the loss curve and the table as artifacts.

Nothing here reads or writes a credential: MLflow and W&B read their tokens from the environment themselves,
and plan.yaml cannot hold one (planner.plan.tracking_uri_problem).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

from transformers import TrainerCallback

from executor.paths import RunPaths
from planner.errors import FtplanError
from planner.plan import MLFLOW_LOCAL_STORE, Plan, plan_to_dict
from planner.rules.tracking import missing_message, missing_packages

# plan.yaml keys that are not settings (explanations, lists of records): not logged as parameters
NOT_PARAMS = ("decisions", "warnings", "advice", "fallbacks")
RUN_STATUS = {"diverged": "FAILED", "interrupted": "KILLED"}  # ftplan's run status -> MLflow's RunStatus
_last_mlflow_run: str | None = None  # the MLflow run a training attempt of this process opened


def check_installed(plan: Plan) -> None:
    """Run preflight: every chosen tracker importable, else one line naming the install (not mid-training)."""
    missing = missing_packages(plan.tracking)
    if missing:
        raise FtplanError(missing_message(missing),
                          hint="or remove it from tracking.backends in plan.yaml")


def report_to(plan: Plan) -> list[str] | str:
    """TrainingArguments.report_to: the plan's backends, or 'none'."""
    return list(plan.tracking.backends) or "none"


def experiment_name(plan: Plan, paths: RunPaths) -> str:
    return plan.tracking.experiment or paths.plan_dir.name


def configure(plan: Plan, paths: RunPaths) -> None:
    """Point each integration at the plan's destination, before the trainer (and its callbacks) is built.

    MLflow: MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME (MLflowCallback.setup reads them); the local store's
    experiment is created here with its artifacts under <output>/mlruns/artifacts (MLflow would otherwise put
    them under the working directory). W&B: WANDB_MODE / WANDB_PROJECT / WANDB_DIR (wandb.init reads them).
    """
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(paths.tensorboard)  # read by TensorBoardCallback
    t = plan.tracking
    experiment = experiment_name(plan, paths)
    if "mlflow" in t.backends:
        uri = t.mlflow_uri(str(paths.output))
        os.environ["MLFLOW_TRACKING_URI"] = uri
        os.environ["MLFLOW_EXPERIMENT_NAME"] = experiment
        if int(os.environ.get("RANK", "0")) == 0:  # the main process creates the store; the others only log
            _prepare_mlflow(uri, experiment, paths, local=t.mlflow_tracking_uri is None)
    if "wandb" in t.backends:
        os.environ["WANDB_MODE"] = t.wandb_mode
        os.environ["WANDB_PROJECT"] = t.wandb_project or experiment
        os.environ["WANDB_DIR"] = str(paths.output)  # wandb writes <dir>/wandb/
        paths.output.mkdir(parents=True, exist_ok=True)


def _prepare_mlflow(uri: str, experiment: str, paths: RunPaths, local: bool) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    active = mlflow.active_run()
    if active is not None and active.info.run_id == _last_mlflow_run:
        # an earlier attempt of this process stopped on out-of-memory before MLflowCallback could end its run;
        # a retry must open its own run (MLflow refuses a changed value for a logged parameter)
        mlflow.end_run(status="FAILED")
    mlflow.set_tracking_uri(uri)  # once set in a process, mlflow's global wins over the environment variable
    if local:
        store = paths.output / MLFLOW_LOCAL_STORE
        store.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(uri)
        if client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment, artifact_location=(store / "artifacts").as_uri())


def plan_params(plan: Plan) -> dict[str, str]:
    """The plan's settings and estimate as flat parameters: section keys dotted, top-level keys as plan.*."""
    out: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, list):
            out[prefix] = json.dumps(value)
        else:
            out[prefix] = "null" if value is None else str(value)

    for key, value in plan_to_dict(plan).items():
        if key in NOT_PARAMS:
            continue
        walk(key if isinstance(value, dict) else f"plan.{key}", value)
    return out


class TrackingCallback(TrainerCallback):
    """Logs the plan's parameters into the run the integrations opened at train begin (it runs after them:
    the Trainer puts report_to callbacks before the ones it is given) and remembers the MLflow run."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.mlflow_run_id: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        global _last_mlflow_run
        if not state.is_world_process_zero:
            return
        params = plan_params(self.plan)
        backends = self.plan.tracking.backends
        if "mlflow" in backends:
            import mlflow
            from mlflow.tracking import MlflowClient

            run = mlflow.active_run()
            if run is not None:
                self.mlflow_run_id = _last_mlflow_run = run.info.run_id
                _mlflow_log_params(MlflowClient(), run.info.run_id, params)
        if "wandb" in backends:
            import wandb

            if wandb.run is not None:
                wandb.run.config.update(params, allow_val_change=True)


def _mlflow_log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    items = [Param(k, v[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])


def detach_trackers(trainer) -> None:
    """Take MLflow's and W&B's callbacks off once training is over: the base and tuned evaluations that follow
    would otherwise be logged under the same names (eval_loss) at the same step, and MLflowCallback, whose run
    ended with training, would open a new run for them. log_run_end logs them as eval_base/* and eval_tuned/*."""
    from transformers.integrations import MLflowCallback, WandbCallback

    for cls in (MLflowCallback, WandbCallback):
        trainer.remove_callback(cls)


# ----------------------------------------------------------------------------------------------------
# end of the run: the estimate-vs-measured table and the results
# ----------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def comparison_rows(summary) -> list[dict]:
    return [
        {"quantity": c.quantity, "unit": c.unit, "estimate": c.estimate, "measured": c.measured,
         "error_pct": c.error_pct}
        for c in summary.comparisons
    ]


def result_metrics(summary) -> dict[str, float]:
    """Run-level metrics: estimate vs measured (estimate / measured / error_pct per quantity), base and tuned
    evaluation, and the summary's headline numbers. Names use MLflow's allowed characters."""
    out: dict[str, float] = {}
    for row in comparison_rows(summary):
        for field in ("estimate", "measured", "error_pct"):
            if isinstance(row[field], (int, float)):
                out[f"estimate_vs_measured/{_slug(row['quantity'])}/{field}"] = float(row[field])
    for which, metrics in (("base", summary.base), ("tuned", summary.tuned)):
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"eval_{which}/{_slug(k)}"] = float(v)
    for k in ("global_step", "train_seconds", "wall_seconds", "eval_seconds", "tokens_seen", "tokens_per_second",
              "seconds_per_step", "trainable_params", "final_train_loss"):
        v = getattr(summary, k)
        if isinstance(v, (int, float)):
            out[f"run/{k}"] = float(v)
    for k, v in summary.peak_memory_gb.items():
        out[f"run/{_slug(k)}"] = float(v)
    return out


def table_markdown(summary) -> str:
    lines = ["| quantity | unit | estimate | measured | error |", "|---|---|---|---|---|"]
    for r in comparison_rows(summary):
        err = f"{r['error_pct']:+.1f}%" if r["error_pct"] is not None else "-"
        lines.append(f"| {r['quantity']} | {r['unit']} | {r['estimate']:.4g} | {r['measured']:.4g} | {err} |")
    return "\n".join(lines) + "\n"


def log_run_end(plan: Plan, trainer, summary, paths: RunPaths) -> None:
    """After run_summary.json and REPORT.md are written (main process): the results to every tracker."""
    metrics = result_metrics(summary)
    step = summary.global_step
    callback = next((c for c in trainer.callback_handler.callbacks if isinstance(c, TrackingCallback)), None)
    run_id = callback.mlflow_run_id if callback else None
    steps = {
        "tensorboard": lambda: _tensorboard_end(plan, summary, metrics, step, paths),
        "mlflow": lambda: _mlflow_end(plan, summary, metrics, step, paths, run_id),
        "wandb": lambda: _wandb_end(summary, metrics, paths),
    }
    for backend in plan.tracking.backends:
        try:
            steps[backend]()
        except Exception as exc:  # noqa: BLE001 - a tracker outage after training must not lose the run's result
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            print(f"ftplan: warning: the results could not be logged to {backend} ({type(exc).__name__}: {first}); "
                  f"they are in {paths.summary}", file=sys.stderr, flush=True)


def _artifacts(paths: RunPaths) -> list:
    return [p for p in (paths.plan_yaml, paths.summary, paths.report, paths.loss_curve) if p.is_file()]


def _tensorboard_end(plan: Plan, summary, metrics: dict, step: int, paths: RunPaths) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(paths.tensorboard)) as writer:
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)
        writer.add_text("ftplan/estimate_vs_measured", table_markdown(summary), step)
        params = plan_params(plan)
        writer.add_text("ftplan/plan", "| key | value |\n|---|---|\n"
                        + "\n".join(f"| {k} | {v} |" for k, v in params.items()), step)


def _mlflow_end(plan: Plan, summary, metrics: dict, step: int, paths: RunPaths, run_id: str | None) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(plan.tracking.mlflow_uri(str(paths.output)))
    if run_id is None:  # nothing trained in this process (a finished checkpoint restored): a run of its own
        experiment = client.get_experiment_by_name(experiment_name(plan, paths))
        run_id = client.create_run(experiment.experiment_id, run_name=paths.plan_dir.name).info.run_id
        _mlflow_log_params(client, run_id, plan_params(plan))
        client.set_terminated(run_id)
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, step) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):  # MLflow's log_batch limit on metrics
        client.log_batch(run_id, metrics=items[i : i + 1000])
    client.set_tag(run_id, "ftplan.status", summary.status)
    if summary.status in RUN_STATUS:  # MLflowCallback ended the run FINISHED whatever happened
        client.set_terminated(run_id, status=RUN_STATUS[summary.status])
    client.log_dict(run_id, comparison_rows(summary), "estimate_vs_measured.json")
    client.log_text(run_id, table_markdown(summary), "estimate_vs_measured.md")
    for path in _artifacts(paths):
        client.log_artifact(run_id, str(path))


def _wandb_end(summary, metrics: dict, paths: RunPaths) -> None:
    import wandb

    run = wandb.run
    if run is None:
        return
    rows = comparison_rows(summary)
    columns = ["quantity", "unit", "estimate", "measured", "error_pct"]
    run.log({"estimate_vs_measured": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
    run.summary.update(metrics)
    artifact = wandb.Artifact(f"ftplan-{_slug(paths.plan_dir.name) or 'run'}", type="ftplan-report")
    for path in _artifacts(paths):
        artifact.add_file(str(path))
    run.log_artifact(artifact)
    run.finish()
