"""Experiment tracking (plan.yaml ``tracking:``, ``--tracking``, executor/tracking.py).

The schema, the rule and the CLI checks need no tracker; the end-to-end test trains a tiny plan with
tracking ``tensorboard,mlflow`` and reads the run back with MLflow's own client (skipped without mlflow).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from planner.errors import FtplanError
from planner.plan import (
    TRACKING_BACKENDS,
    PlanValidationError,
    TrackingSection,
    load_plan,
    plan_from_dict,
    plan_to_dict,
    save_plan,
)
from planner.rules.tracking import missing_packages, parse_backends

GOLDEN_PLAN = Path(__file__).parent / "golden" / "lora-single-gpu" / "plan.yaml"
FAKE_SECRETS = {
    "WANDB_API_KEY": "fake-wandb-key-0123456789abcdef",
    "HF_TOKEN": "hf_fakeTokenForFtplanTests0123",
    "MLFLOW_TRACKING_TOKEN": "fake-mlflow-token-abcdef012345",
    "MLFLOW_TRACKING_PASSWORD": "fake-mlflow-password-987654",
}
TRACKER_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "TENSORBOARD_LOGGING_DIR", "WANDB_MODE",
               "WANDB_PROJECT", "WANDB_DIR")


def _golden() -> dict:
    return yaml.safe_load(GOLDEN_PLAN.read_text(encoding="utf-8"))


def test_a_plan_without_the_section_loads_with_tensorboard(tmp_path):
    data = _golden()
    data.pop("tracking", None)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    plan = load_plan(path)
    assert plan.tracking == TrackingSection()
    assert plan.tracking.backends == ["tensorboard"] and plan.tracking.wandb_mode == "offline"


def test_the_section_round_trips(tmp_path):
    data = _golden()
    data["tracking"] = {"backends": ["mlflow", "wandb"], "experiment": "exp", "mlflow_tracking_uri": "http://h:5000",
                        "wandb_project": "p", "wandb_mode": "online"}
    plan = plan_from_dict(data)
    save_plan(plan, tmp_path / "plan.yaml")
    assert plan_to_dict(load_plan(tmp_path))["tracking"] == data["tracking"]


@pytest.mark.parametrize(
    ("tracking", "expected"),
    [
        ({"backends": ["tensorbord"]}, "tracking.backends[0]: unknown 'tensorbord' (one of: tensorboard, mlflow"),
        ({"backends": ["mlflow", "mlflow"]}, "tracking.backends: lists a backend twice"),
        ({"wandb_mode": "cloud"}, "tracking.wandb_mode: unknown 'cloud'"),
        ({"experiment": " "}, "tracking.experiment: empty; use null"),
        ({"backends": "mlflow"}, "tracking.backends: must be a list of a string"),
        ({"token": "x"}, "tracking.token: unknown key"),
    ],
)
def test_bad_sections_are_refused_with_their_field(tracking, expected):
    data = _golden()
    data["tracking"] = tracking
    with pytest.raises(PlanValidationError) as err:
        plan_from_dict(data)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "uri",
    [
        "https://alice:fake-mlflow-password-987654@mlflow.example.com",
        "https://fake-mlflow-password-987654@mlflow.example.com",
        "postgresql://alice:fake-mlflow-password-987654@db/mlflow",
        "https://mlflow.example.com/?access_token=fake-mlflow-password-987654",
    ],
)
def test_a_uri_with_credentials_is_refused_without_repeating_it(uri):
    data = _golden()
    data["tracking"] = {"backends": ["mlflow"], "mlflow_tracking_uri": uri}
    with pytest.raises(PlanValidationError) as err:
        plan_from_dict(data)
    message = str(err.value)
    assert "tracking.mlflow_tracking_uri: carries" in message and "MLFLOW_TRACKING_TOKEN" in message
    assert "fake-mlflow-password" not in message and len(message.splitlines()) == 1


def test_plain_uris_are_accepted():
    for uri in ("http://127.0.0.1:5000", "sqlite:///runs/mlflow.db", "databricks", "file:///tmp/mlruns"):
        data = _golden()
        data["tracking"] = {"backends": ["mlflow"], "mlflow_tracking_uri": uri}
        assert plan_from_dict(data).tracking.mlflow_uri("output") == uri
    assert TrackingSection().mlflow_uri("/p/output") == "sqlite:////p/output/mlruns/mlflow.db"


def test_parse_backends():
    assert parse_backends(None) is None
    assert parse_backends("none") == ()
    assert parse_backends(" MLflow, tensorboard,mlflow ") == ("mlflow", "tensorboard")
    assert set(parse_backends(",".join(TRACKING_BACKENDS))) == set(TRACKING_BACKENDS)
    with pytest.raises(FtplanError, match="unknown backend 'mlfow' \\(did you mean 'mlflow'\\?\\)"):
        parse_backends("tensorboard,mlfow")
    with pytest.raises(FtplanError, match="--tracking: empty"):
        parse_backends(" , ")


def _result(**request):
    from test_render import make_result

    return make_result("lora-single-gpu", **request)


def test_the_rule_records_the_decision():
    default = _result().plan
    assert default.tracking.backends == ["tensorboard"] and default.tracking.mlflow_tracking_uri is None
    (decision,) = [d for d in default.decisions if d.field == "tracking.backends"]
    assert decision.value == ["tensorboard"] and "TensorBoard by default" in decision.reason
    chosen = _result(tracking=("tensorboard", "mlflow"), mlflow_uri="http://127.0.0.1:5000").plan
    assert chosen.tracking.backends == ["tensorboard", "mlflow"]
    assert chosen.tracking.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert [d.reason for d in chosen.decisions if d.field == "tracking.backends"] == ["--tracking tensorboard,mlflow"]
    with pytest.raises(FtplanError, match="--mlflow-uri: carries credentials"):
        _result(tracking=("mlflow",), mlflow_uri="http://u:p@h")


def test_report_says_where_to_look():
    from planner.render import render_report

    text = render_report(_result(tracking=("tensorboard", "mlflow", "wandb")))
    assert "tensorboard --logdir output/tensorboard" in text
    assert "mlflow ui --backend-store-uri sqlite:///output/mlruns/mlflow.db" in text
    assert "wandb sync output/wandb/offline-run-*" in text
    assert "mlflow ui" not in render_report(_result())


def test_cli_refuses_bad_tracking_options_before_any_work(tmp_path, capsys):
    from ftplan.cli import main

    base = ["plan", "--model", "Qwen/Qwen2.5-0.5B", "--data", str(tmp_path / "absent.jsonl"), "--task", "sft",
            "--out", str(tmp_path / "p")]
    for extra, expected in (
        (["--tracking", "tensorbord"], "did you mean 'tensorboard'"),
        (["--mlflow-uri", "https://me:fake-mlflow-password-987654@h"], "--mlflow-uri: carries credentials"),
        (["--tracking", "tensorboard", "--mlflow-uri", "http://h"], "--mlflow-uri: only used with"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
        assert "fake-mlflow-password" not in err
    assert not (tmp_path / "p").exists()


def test_missing_tracker_fails_the_run_preflight(tmp_path, monkeypatch):
    """A chosen backend that is not installed: one line naming the install, before anything is loaded."""
    import importlib.util

    pytest.importorskip("transformers")
    from executor_helpers import make_plan, plan_folder

    from executor.run import run_plan

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    model = tmp_path / "model"  # never loaded: the preflight refuses first
    model.mkdir()
    plan = make_plan(tmp_path, model=model, tracking={"backends": ["tensorboard", "mlflow"]})
    assert missing_packages(plan.tracking) == [("mlflow", "pip install 'ftplan[tracking]'")]
    folder = plan_folder(tmp_path, plan)
    with pytest.raises(FtplanError, match=r"tracking backend 'mlflow' is not installed here: pip install "
                                          r"'ftplan\[tracking\]'"):
        run_plan(folder, log=lambda *_: None)
    assert not (folder / "output").exists()


def _tiny_run(tmp_path, monkeypatch, backends: list[str], name: str):
    """A tiny plan trained with ``backends``, fake tokens in the environment; returns (folder, summary)."""
    from executor_helpers import make_plan, plan_folder, tiny_model

    from executor.run import run_plan

    for var in TRACKER_ENV + ("WANDB_DISABLED",):
        monkeypatch.delenv(var, raising=False)  # restored after the test: configure() sets them
    for var, value in FAKE_SECRETS.items():
        monkeypatch.setenv(var, value)
    plan = make_plan(
        tmp_path, model=tiny_model(tmp_path / "models"),
        tracking={"backends": backends, "experiment": "tiny-exp"},
        # what the planner would have estimated: the run compares its measurements with these
        estimate={"peak_allocated": 200 * 2**20, "total": 400 * 2**20, "steps": 6, "tokens": 2000,
                  "time_hours": 0.001, "tokens_per_second": 500.0},
    )
    folder = plan_folder(tmp_path, plan, name=name)
    summary = run_plan(folder, log=lambda *_: None)
    assert summary.status == "completed" and summary.comparisons
    return folder, summary


def _no_secret_in(folder: Path) -> list[Path]:
    """Every file of the plan folder (text, SQLite, event files, W&B's binary log), checked for the fake tokens."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    leaks = [str(p) for p in files for secret in FAKE_SECRETS.values() if secret.encode() in p.read_bytes()]
    assert not leaks
    return files


@pytest.mark.slow
def test_mlflow_run_reads_back_and_no_secret_is_written(tmp_path, monkeypatch):
    """A tiny run with tracking tensorboard + mlflow (local store), read back with MLflow's own client."""
    pytest.importorskip("torch")
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    folder, _ = _tiny_run(tmp_path, monkeypatch, ["tensorboard", "mlflow"], "tiny-plan")
    store = folder / "output" / "mlruns"
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny-exp")
    assert experiment.artifact_location.startswith((store / "artifacts").as_uri())
    # one run, named after the plan folder: the evaluations after training open no second one
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny-plan" and run.info.status == "FINISHED"
    params, metrics = run.data.params, run.data.metrics
    # the plan's settings and estimate as parameters, beside transformers' own (learning_rate, ...)
    assert params["lora.r"] == "4" and params["training.max_steps"] == "6" and params["plan.task"] == "sft"
    assert params["estimate.peak_allocated"] == str(200 * 2**20)
    assert params["tracking.backends"] == json.dumps(["tensorboard", "mlflow"])
    assert float(params["learning_rate"]) == pytest.approx(1e-2)
    # training metrics from transformers' MLflowCallback, one point per logging step
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert len(losses) >= 2 and all(m.value > 0 for m in losses)
    # the estimate-vs-measured table as metrics, equal to run_summary.json's
    written = json.loads((folder / "output" / "run_summary.json").read_text())
    for row in written["comparisons"]:
        key = "estimate_vs_measured/" + "_".join(
            "".join(c if c.isalnum() else " " for c in row["quantity"].lower()).split())
        assert metrics[f"{key}/estimate"] == pytest.approx(row["estimate"])
        assert metrics[f"{key}/measured"] == pytest.approx(row["measured"])
    assert metrics["estimate_vs_measured/optimizer_steps/measured"] == 6
    assert metrics["run/global_step"] == 6
    assert metrics["eval_tuned/loss"] == pytest.approx(written["tuned"]["loss"])
    assert metrics["eval_base/loss"] == pytest.approx(written["base"]["loss"])
    # ... and as artifacts
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"estimate_vs_measured.json", "estimate_vs_measured.md", "plan.yaml", "run_summary.json",
            "REPORT.md"} <= names
    table = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="estimate_vs_measured.json", dst_path=str(tmp_path / "dl"),
        tracking_uri=client.tracking_uri)).read_text())
    assert [r["quantity"] for r in table] == [r["quantity"] for r in written["comparisons"]]
    assert run.data.tags["ftplan.status"] == "completed"

    # TensorBoard got the table too (scalars beside the training curves)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (folder / "output" / "tensorboard").rglob("events.out.tfevents*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert "estimate_vs_measured/optimizer_steps/measured" in tags and "train/loss" in tags

    # no secret from the environment in any file of the plan folder (text, SQLite, event files)
    names = {p.name for p in _no_secret_in(folder)}
    assert {"mlflow.db", "plan.yaml", "estimate_vs_measured.json"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)


@pytest.mark.slow
def test_wandb_offline_run(tmp_path, monkeypatch):
    """W&B offline under output/wandb: the estimate-vs-measured table as a W&B table, no token written.
    (wandb is not in constraints.txt: skipped unless installed.)"""
    pytest.importorskip("torch")
    pytest.importorskip("wandb")
    folder, summary = _tiny_run(tmp_path, monkeypatch, ["wandb"], "wb-plan")
    (run_dir,) = (folder / "output" / "wandb").glob("offline-run-*")
    (table,) = run_dir.glob("files/media/table/estimate_vs_measured_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"] == ["quantity", "unit", "estimate", "measured", "error_pct"]
    assert [r[0] for r in data["data"]] == [c.quantity for c in summary.comparisons]
    assert [r[3] for r in data["data"]] == pytest.approx([c.measured for c in summary.comparisons])
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_PROJECT"] == "tiny-exp"
    assert not (folder / "output" / "tensorboard").exists()  # only the chosen backends
    _no_secret_in(folder)
