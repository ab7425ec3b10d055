"""The plan folder stays the truth while it runs: one run at a time, signals, verified state, clear failures.

Faults are injected by monkeypatching (a callback that sends the signal at a given step, a save that
raises torch's disk-full error), never by timing luck.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from executor_helpers import Fallback, make_plan, plan_folder, tiny_model

torch = pytest.importorskip("torch")

from planner.errors import FtplanError

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models"))


def _plan(tmp_path, model_dir, **kw):
    sections = {"training": {"max_steps": 6, "micro_batch": 4}, "checkpointing": {"save_steps": 2,
                "save_total_limit": 5}, "evaluation": {"eval_steps": 1000, "compare_base": False}}  # fmt: skip
    sections.update(kw)
    return make_plan(tmp_path, model=model_dir, method="lora", **sections)


def _signal_at(monkeypatch, step: int, sig: int) -> None:
    """Deliver ``sig`` to this process at the end of optimizer step ``step`` (before the stop check)."""
    from executor.callbacks import InterruptCallback

    real = InterruptCallback.on_step_end

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == step:
            os.kill(os.getpid(), sig)
        return real(self, args, state, control, **kwargs)

    monkeypatch.setattr(InterruptCallback, "on_step_end", on_step_end)


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "output" / "final" / "adapter_model.safetensors"))


# ----------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_at_the_step_boundary_and_resume_equals_an_uninterrupted_run(
    tmp_path, model_dir, monkeypatch, sig, code
):
    from executor.run import run_plan

    plan = _plan(tmp_path, model_dir)
    ref = run_plan(plan_folder(tmp_path, plan, "reference"), **QUIET)
    folder = plan_folder(tmp_path, plan, "signalled")
    with monkeypatch.context() as m:
        _signal_at(m, 3, sig)
        stopped = run_plan(folder, **QUIET)
    assert stopped.status == "interrupted" and stopped.exit_code == code and stopped.global_step == 3
    assert (folder / "output" / "checkpoints" / "checkpoint-3" / "ftplan_complete.json").is_file()
    resumed = run_plan(folder, **QUIET)
    assert resumed.status == "completed" and resumed.resumed_from_step == 3
    assert resumed.global_step == ref.global_step
    a, b = _adapter(tmp_path / "reference"), _adapter(folder)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_cli_exit_code_after_sigterm_is_143(tmp_path, model_dir, monkeypatch, capsys):
    from ftplan.cli import main

    folder = plan_folder(tmp_path, _plan(tmp_path, model_dir))
    _signal_at(monkeypatch, 2, signal.SIGTERM)
    assert main(["run", str(folder)]) == 143
    assert "SIGTERM" in capsys.readouterr().out


def test_rerunning_a_finished_plan_does_nothing_but_say_so(tmp_path, model_dir):
    from executor.run import run_plan

    folder = plan_folder(tmp_path, _plan(tmp_path, model_dir))
    first = run_plan(folder, **QUIET)
    ckpts = sorted(p.name for p in (folder / "output" / "checkpoints").iterdir())
    stamp = (folder / "output" / "final" / "adapter_model.safetensors").stat().st_mtime_ns
    said = []
    again = run_plan(folder, log=said.append)
    assert again.status == "completed" and again.global_step == first.global_step
    assert any("already completed" in s for s in said)
    assert sorted(p.name for p in (folder / "output" / "checkpoints").iterdir()) == ckpts
    assert (folder / "output" / "final" / "adapter_model.safetensors").stat().st_mtime_ns == stamp


# -------------------------------------------------------------------------------------- run lock


def test_second_run_of_a_folder_refuses_naming_the_holder(tmp_path):
    from executor.lock import RunLock

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "output" / ".ftplan-run.lock"
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid, "time": time.time()}))
        with pytest.raises(FtplanError, match=f"another run is training this plan folder \\(PID {holder.pid}"):
            RunLock(tmp_path / "output").acquire()
    finally:
        holder.kill()
        holder.wait()
    said = []
    with RunLock(tmp_path / "output", log=said.append):  # the holder is dead now: a stale lock, cleared
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists() and "stale" in said[0]


def test_lock_from_another_host_is_not_cleared(tmp_path):
    from executor.lock import RunLock

    lock = tmp_path / ".ftplan-run.lock"
    lock.write_text(json.dumps({"host": "some-other-node", "pid": 1, "time": time.time()}))
    with pytest.raises(FtplanError, match="some-other-node"):
        RunLock(tmp_path).acquire()
    assert lock.exists()


def test_run_refuses_while_another_run_holds_the_folder(tmp_path, model_dir, capsys):
    from ftplan.cli import main

    folder = plan_folder(tmp_path, _plan(tmp_path, model_dir))
    (folder / "output").mkdir()
    (folder / "output" / ".ftplan-run.lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "time": time.time()})
    )
    assert main(["run", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "another run is training this plan folder" in err and len(err.strip().splitlines()) == 1
    assert not (folder / "output" / "checkpoints").exists()


# ------------------------------------------------------------------------------------ verified state


def _fake_checkpoint(root: Path, step: int) -> Path:
    from executor.checkpoints import mark_complete

    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 4)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    mark_complete(ckpt)
    return ckpt


def test_same_size_corruption_is_caught_and_the_previous_checkpoint_used(tmp_path):
    from executor.checkpoints import resume_checkpoint

    _fake_checkpoint(tmp_path, 2)
    newest = _fake_checkpoint(tmp_path, 4)
    weights = newest / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF  # one flipped byte: same size
    weights.write_bytes(bytes(data))
    said = []
    assert resume_checkpoint(tmp_path, log=said.append).name == "checkpoint-2"
    assert (tmp_path / "checkpoint-4.damaged" / "adapter_model.safetensors").is_file()  # moved aside, kept
    assert "sha256 mismatch" in said[0]


def test_damaged_checkpoint_in_a_real_run_resumes_from_the_previous(tmp_path, model_dir, monkeypatch):
    from executor.run import run_plan

    folder = plan_folder(tmp_path, _plan(tmp_path, model_dir))
    with monkeypatch.context() as m:
        _signal_at(m, 4, signal.SIGTERM)
        run_plan(folder, **QUIET)
    weights = folder / "output" / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    resumed = run_plan(folder, **QUIET)
    assert resumed.status == "completed" and resumed.resumed_from_step == 2 and resumed.global_step == 6
    assert (folder / "output" / "checkpoints" / "checkpoint-4.damaged").is_dir()


def test_changed_data_file_is_refused_unless_allowed(tmp_path, model_dir, capsys):
    from ftplan.cli import main
    from planner.dataset.profile import file_sha256

    plan = _plan(tmp_path, model_dir)
    plan.data.sha256 = file_sha256(plan.data.path)
    folder = plan_folder(tmp_path, plan)
    with open(plan.data.path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"instruction": "1+1", "input": "", "output": "2"}) + "\n")
    assert main(["run", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "changed since the plan was made" in err and "--allow-data-change" in err
    assert main(["run", str(folder), "--allow-data-change"]) == 0


def test_half_written_base_eval_does_not_block_the_run(tmp_path, model_dir):
    from executor.run import run_plan

    plan = make_plan(tmp_path, model=model_dir, method="full", training={"max_steps": 2},
                     evaluation={"compare_base": True, "eval_steps": 1000, "metric": "loss"})  # fmt: skip
    folder = plan_folder(tmp_path, plan)
    (folder / "output").mkdir()
    (folder / "output" / "base_eval.json").write_text('{"loss": 1.2, "exa')
    assert run_plan(folder, **QUIET).status == "completed"
    assert "loss" in json.loads((folder / "output" / "base_eval.json").read_text())


def test_generate_on_a_half_written_final_is_one_line(tmp_path, model_dir, capsys):
    from ftplan.cli import main

    folder = plan_folder(tmp_path, _plan(tmp_path, model_dir))
    final = folder / "output" / "final"
    final.mkdir(parents=True)
    (final / "adapter_config.json").write_text("{")
    assert main(["generate", str(folder), "--prompt", "2+2"]) == 2
    err = capsys.readouterr().err
    assert "incomplete" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------- the environment


def test_disk_full_during_a_save_is_one_line_naming_the_folder(tmp_path, model_dir, monkeypatch, capsys):
    from executor import checkpoints
    from ftplan.cli import main

    def full(ckpt):  # what torch.save raises on ENOSPC (caffe2/serialize/inline_container.cc)
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 1241728 vs 1241616")

    monkeypatch.setattr(checkpoints, "mark_complete", full)
    folder = plan_folder(tmp_path, _plan(tmp_path, model_dir, estimate={"gradients": 40_000, "optimizer": 80_000}))
    assert main(["run", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # above it: the model-loading progress bar
    assert err.startswith("ftplan: error:") and "disk full" in err and str(folder / "output") in err
    assert "one checkpoint needs about" in err and "Traceback" not in err


def test_no_room_for_one_checkpoint_is_refused_before_training(tmp_path, model_dir, monkeypatch):
    import shutil

    from executor import guards
    from executor.run import run_plan

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(guards.shutil, "disk_usage", lambda p: usage._replace(free=10))
    folder = plan_folder(tmp_path, _plan(tmp_path, model_dir, estimate={"gradients": 40_000, "optimizer": 80_000}))
    with pytest.raises(FtplanError, match="one checkpoint needs about"):
        run_plan(folder, **QUIET)


@pytest.mark.parametrize("err,words", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_unwritable_output_folder_is_one_line(tmp_path, model_dir, monkeypatch, err, words):
    from executor.run import run_plan

    real_mkdir = Path.mkdir

    def mkdir(self, *a, **kw):
        if self.name == "output":
            raise OSError(err, os.strerror(err), str(self))
        return real_mkdir(self, *a, **kw)

    folder = plan_folder(tmp_path, _plan(tmp_path, model_dir))
    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(FtplanError, match=words) as info:
        run_plan(folder, **QUIET)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------- plan.yaml rules the launcher


def test_fallbacks_start_from_the_plans_actual_values(tmp_path, model_dir):
    from executor.fallback import apply_next_fallback

    plan = _plan(tmp_path, model_dir, training={"micro_batch": 1, "grad_accum": 8},
                 fallbacks=[Fallback({"training.micro_batch": 4, "training.grad_accum": 2}, "halve"),
                            Fallback({"strategy.gradient_checkpointing": True}, "recompute")])  # fmt: skip
    after = apply_next_fallback(plan, "oom")  # micro-batch 1 cannot halve: checkpointing is next
    assert after.training.micro_batch == 1 and after.strategy.gradient_checkpointing
    plan = _plan(tmp_path, model_dir, training={"micro_batch": 6, "grad_accum": 2},
                 fallbacks=[Fallback({"training.micro_batch": 4, "training.grad_accum": 2}, "halve")])  # fmt: skip
    after = apply_next_fallback(plan, "oom")
    assert (after.training.micro_batch, after.training.grad_accum) == (3, 4)  # halved from 6, not set to 4


def _zero_plan_folder(tmp_path, model_dir, stage: int) -> Path:
    return _dist_plan_folder(tmp_path, model_dir, f"zero{stage}")


def _dist_plan_folder(tmp_path, model_dir, distribution: str) -> Path:
    from executor_helpers import arith_rows, write_jsonl

    from ftplan.commands.plan import plan_and_write

    data = write_jsonl(tmp_path / "arith.jsonl", arith_rows(64))
    count = 1 if distribution == "single" else 2
    gpu = ("hardware.gpu=A100-80GB",) if distribution == "fsdp" else ("hardware.gpu=null",)  # FSDP needs GPUs
    _, folder = plan_and_write(
        model=str(model_dir), data=str(data), task="sft", gpu=None, gpus=None, nodes=1, gpu_memory=None, price=None,
        goal="balanced", max_hours=None, max_cost=None, general_data=None, out_dir=str(tmp_path / distribution),
        sets=(*gpu, "strategy.precision=fp32", "strategy.method=full",
              f"strategy.distribution={distribution}", f"hardware.count={count}", "training.micro_batch=8",
              "training.max_steps=4"),
        trust_remote_code=False, force=True,
    )  # fmt: skip
    return Path(folder)


def _configs_follow(folder: Path) -> None:
    """Every launcher file in the folder is what plan.yaml renders now."""
    from planner.plan import load_plan
    from planner.render import launch_info, render_accelerate_config, render_deepspeed, render_launch

    plan = load_plan(folder)
    assert (folder / "launch.sh").read_text() == render_launch(plan)
    assert (folder / "accelerate_config.yaml").read_text() == render_accelerate_config(plan)
    if launch_info(plan).deepspeed:
        assert (folder / "deepspeed.json").read_text() == render_deepspeed(plan)


def _oom_once(tries: list[int]):
    """A training attempt that runs out of memory the first time, recording each micro-batch it is given."""
    from executor.fallback import OutOfMemoryAtStep

    def attempt(p):
        tries.append(p.training.micro_batch)
        if len(tries) == 1:
            raise OutOfMemoryAtStep(0, "CUDA out of memory (simulated)")
        return "trained"

    return attempt


DISTRIBUTIONS = ["single", "ddp", "zero1", "zero2", "zero3", "fsdp"]  # fsdp: planned for 2 GPUs


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_every_launcher_file_follows_plan_yaml_after_a_fallback_and_a_hand_edit(tmp_path, model_dir, distribution):
    from executor.fallback import train_with_fallbacks
    from executor.paths import RunPaths
    from planner.plan import load_plan, save_plan
    from planner.render import rerender_configs

    folder = _dist_plan_folder(tmp_path, model_dir, distribution)
    plan = load_plan(folder)
    tries: list[int] = []
    train_with_fallbacks(plan, RunPaths.of(folder, plan.output_dir), _oom_once(tries), log=lambda *_: None)
    assert tries == [8, 4]
    _configs_follow(folder)
    edited = load_plan(folder)
    edited.training.micro_batch, edited.training.grad_accum = 3, 5  # a hand edit, as plan.yaml invites
    save_plan(edited, folder / "plan.yaml")
    rerender_configs(load_plan(folder), folder)  # what run_plan does first, on the main process
    _configs_follow(folder)


@pytest.mark.parametrize("stage", [2, 3])
def test_fallback_on_zero_rerenders_deepspeed_json(tmp_path, model_dir, stage):
    from executor.fallback import train_with_fallbacks
    from executor.paths import RunPaths
    from executor.trainer import _common_args
    from planner.plan import load_plan

    folder = _zero_plan_folder(tmp_path, model_dir, stage)
    plan = load_plan(folder)
    assert json.loads((folder / "deepspeed.json").read_text())["train_micro_batch_size_per_gpu"] == 8
    calls: list[int] = []
    paths = RunPaths.of(folder, plan.output_dir)
    _, after, applied = train_with_fallbacks(plan, paths, _oom_once(calls), log=lambda *_: None)
    assert calls == [8, 4] and applied
    ds = json.loads((folder / "deepspeed.json").read_text())
    assert ds["train_micro_batch_size_per_gpu"] == 4 == after.training.micro_batch
    assert ds["gradient_accumulation_steps"] == after.training.grad_accum
    # and what the Trainer receives is rendered from plan.yaml itself, whatever the file says
    args = _common_args(load_plan(folder), paths, has_val=False)
    assert args["deepspeed"]["train_micro_batch_size_per_gpu"] == args["per_device_train_batch_size"] == 4


@pytest.mark.slow
def test_hand_edited_micro_batch_trains_on_two_process_zero2(tmp_path, model_dir):
    """plan.yaml edited by hand after planning: the 2-process ZeRO-2 CPU run trains (no DeepSpeed mismatch)."""
    from planner.plan import load_plan, save_plan

    folder = _zero_plan_folder(tmp_path, model_dir, 2)
    plan = load_plan(folder)
    plan.training.micro_batch, plan.training.grad_accum = 2, 2
    plan.evaluation.compare_base = False
    save_plan(plan, folder / "plan.yaml")
    proc = subprocess.run(["bash", str(folder / "launch.sh")], env=_launch_env(), capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((folder / "output" / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2


def _launch_env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    env["MASTER_PORT"] = str(29600 + os.getpid() % 50)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@pytest.mark.slow
def test_no_orphan_ranks_after_killing_launch_sh(tmp_path, model_dir):
    """kill -9 of launch.sh's whole process group: the ranks (each in its own session) die with it."""
    folder = _zero_plan_folder(tmp_path, model_dir, 2)
    from planner.plan import load_plan, save_plan

    plan = load_plan(folder)
    plan.training.max_steps = 400
    save_plan(plan, folder / "plan.yaml")
    proc = subprocess.Popen(["bash", str(folder / "launch.sh")], env=_launch_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not list((folder / "output").glob("metrics.jsonl")):
        time.sleep(0.5)
    assert (folder / "output" / "metrics.jsonl").exists(), "training never started"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    def ranks() -> list[str]:
        out = subprocess.run(["pgrep", "-f", f"executor run {folder}"], capture_output=True, text=True)
        return out.stdout.split()

    deadline = time.time() + 120
    while ranks() and time.time() < deadline:
        time.sleep(1)
    assert ranks() == [], "training ranks outlived their launcher"


@pytest.mark.slow
def test_sigterm_to_a_two_process_run_checkpoints_on_every_rank_then_resumes(tmp_path, model_dir):
    """What a scheduler does on pre-emption: SIGTERM to the job's processes. Both ranks stop at the same step
    with a committed checkpoint; running launch.sh again resumes and finishes."""
    folder = _zero_plan_folder(tmp_path, model_dir, 2)
    from planner.plan import load_plan, save_plan

    plan = load_plan(folder)
    plan.training.max_steps, plan.checkpointing.save_steps, plan.evaluation.compare_base = 60, 1000, False
    save_plan(plan, folder / "plan.yaml")
    proc = subprocess.Popen(["bash", str(folder / "launch.sh")], env=_launch_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = folder / "output" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # every process of the job, as Slurm and Kubernetes do
    _, err = proc.communicate(timeout=180)
    summary = json.loads((folder / "output" / "run_summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["exit_code"] == 143, err[-3000:]
    step = summary["global_step"]
    assert 0 < step < 60
    assert (folder / "output" / "checkpoints" / f"checkpoint-{step}" / "ftplan_complete.json").is_file()
    again = subprocess.run(["bash", str(folder / "launch.sh")], env=_launch_env(), capture_output=True, text=True,
                           timeout=900, check=False)  # fmt: skip
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    done = json.loads((folder / "output" / "run_summary.json").read_text())
    assert done["status"] == "completed" and done["global_step"] == 60 and done["resumed_from_step"] == step
