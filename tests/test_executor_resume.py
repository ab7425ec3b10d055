"""Crash safety: SIGKILL mid-run then resume, Ctrl-C, corrupted checkpoints, NaN stop, OOM fallback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from executor_helpers import make_plan, plan_folder, tiny_model

torch = pytest.importorskip("torch")

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models"))


def _long_plan(tmp_path, model_dir):
    # Epoch-based length (the step count is derived, not given), a checkpoint every 4 steps.
    return make_plan(
        tmp_path,
        model=model_dir,
        method="lora",
        rows=64,
        training={"max_steps": -1, "epochs": 2.0, "micro_batch": 4, "lr": 1e-2},
        evaluation={"eval_steps": 1000},
        checkpointing={"save_steps": 4, "save_total_limit": 2},
    )


def _start(folder: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "executor", "run", str(folder)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_commit(proc: subprocess.Popen, ckpts: Path, timeout: float = 180) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = sorted(ckpts.glob("checkpoint-*/ftplan_complete.json"))
        if done:
            return done[0].parent
        assert proc.poll() is None, f"run ended early: {proc.stderr.read()[-2000:]}"
        time.sleep(0.02)
    raise AssertionError("no checkpoint committed in time")


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, model_dir):
    from executor.run import run_plan

    plan = _long_plan(tmp_path, model_dir)
    ref = run_plan(plan_folder(tmp_path, plan, "reference"), log=lambda *_: None)
    assert ref.status == "completed" and ref.global_step > 8

    folder = plan_folder(tmp_path, plan, "killed")
    proc = _start(folder)
    first = _wait_for_commit(proc, folder / "output" / "checkpoints")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(
        int(p.name.split("-")[1]) for p in (folder / "output" / "checkpoints").glob("checkpoint-*")
    )
    assert killed_at < ref.global_step  # really killed mid-run

    resumed = run_plan(folder, log=lambda *_: None)
    assert resumed.status == "completed"
    assert resumed.resumed_from_step >= int(first.name.split("-")[1])
    assert resumed.global_step == ref.global_step  # same number of optimizer steps
    # Same data order and RNG after resume: the adapters agree with the uninterrupted run's.
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "reference" / "output" / "final" / "adapter_model.safetensors"))
    b = load_file(str(folder / "output" / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)

    # Killed after the last step (during the final evaluation or save): no extra step, same result.
    (folder / "output" / "run_summary.json").unlink()
    again = run_plan(folder, log=lambda *_: None)
    assert again.global_step == ref.global_step and again.resumed_from_step == ref.global_step
    assert again.tuned["loss"] == pytest.approx(resumed.tuned["loss"], abs=1e-6)
    # A finished plan run again: nothing trained, nothing changed (tests/test_run_state.py has the details).
    assert run_plan(folder, log=lambda *_: None).message.startswith("already completed")


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path, model_dir):
    folder = plan_folder(tmp_path, _long_plan(tmp_path, model_dir))
    proc = _start(folder)
    _wait_for_commit(proc, folder / "output" / "checkpoints")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    summary = json.loads((folder / "output" / "run_summary.json").read_text())
    assert summary["status"] == "interrupted"
    stopped = folder / "output" / "checkpoints" / f"checkpoint-{summary['global_step']}"
    assert (stopped / "ftplan_complete.json").is_file()  # the checkpoint at the stop step, committed


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, model_dir, monkeypatch):
    from transformers import TrainerCallback

    import executor.trainer as trainer_mod
    from executor.run import TrainingDiverged, run_plan

    class Poison(TrainerCallback):  # simulates divergence: weights become NaN after step 5
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 5:
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))

    real = trainer_mod.build_callbacks
    monkeypatch.setattr(trainer_mod, "build_callbacks", lambda *a: real(*a) + [Poison()])
    plan = make_plan(
        tmp_path,
        model=model_dir,
        method="lora",
        training={"max_steps": 9},
        checkpointing={"save_steps": 3, "save_total_limit": 5},
    )
    folder = plan_folder(tmp_path, plan)
    with pytest.raises(TrainingDiverged, match="nan at step 6") as info:
        run_plan(folder, log=lambda *_: None)
    assert info.value.exit_code == 3
    ckpts = folder / "output" / "checkpoints"
    assert (ckpts / "checkpoint-3" / "ftplan_complete.json").is_file()
    assert not (ckpts / "checkpoint-6").exists()  # the NaN weights of step 6 were never saved
    assert json.loads((folder / "output" / "run_summary.json").read_text())["status"] == "diverged"


def test_oom_in_first_steps_applies_fallback_and_continues(tmp_path, model_dir, monkeypatch):
    from executor_helpers import Fallback
    from trl import SFTTrainer

    from executor.run import run_plan
    from planner.plan import load_plan

    real_step = SFTTrainer.training_step
    calls = {"oom": 0}

    def step(self, *args, **kwargs):  # a device that cannot hold micro-batch 4: CUDA's OOM error type
        if self.args.per_device_train_batch_size > 2:
            calls["oom"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "training_step", step)
    plan = make_plan(
        tmp_path,
        model=model_dir,
        method="lora",
        fallbacks=[
            Fallback(
                set={"training.micro_batch": 2, "training.grad_accum": 2}, reason="halve the micro-batch"
            ),
            Fallback(set={"strategy.gradient_checkpointing": True}, reason="recompute activations"),
        ],
    )
    folder = plan_folder(tmp_path, plan)
    s = run_plan(folder, log=lambda *_: None)
    assert calls["oom"] == 1 and s.status == "completed" and s.global_step == 6
    saved = load_plan(folder)
    assert (saved.training.micro_batch, saved.training.grad_accum) == (2, 2)
    assert len(saved.fallbacks) == 1 and saved.fallbacks[0].reason == "recompute activations"
    assert any(d.source == "executor OOM fallback" and "out of memory" in d.reason for d in saved.decisions)
    log = [json.loads(x) for x in (folder / "output" / "fallbacks.jsonl").read_text().splitlines()]
    assert log[0]["set"] == {"training.micro_batch": 2, "training.grad_accum": 2}
    assert s.fallbacks and "OOM fallback" in (folder / "REPORT.md").read_text()
