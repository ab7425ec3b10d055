"""CPU multi-process and multi-node plans, proven on one machine.

``--cpu-processes N [--nodes M]`` plans a CPU run of N gloo ranks on each of M machines: the same plan fields
the ``--set hardware.gpu=null --set hardware.count=N`` recipe sets, decided by one rule
(planner.rules.strategy.cpu_processes_rule) with its reason. The slow tests run such plans: two ranks started
by ``ftplan go`` through accelerate, and two "nodes" on 127.0.0.1 (two ``launch.sh`` with NODE_RANK 0/1 and
LAUNCHER=torchrun, DeepSpeed ZeRO-3 over gloo) where node 1 is killed hard after the first committed
checkpoint, node 0 fails on the lost peer, and both restarted resume from that checkpoint to the planned
number of optimizer steps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
from executor_helpers import arith_rows, tiny_model, write_jsonl

from planner.errors import FtplanError

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("multinode")
    return tiny_model(root), write_jsonl(root / "arith.jsonl", arith_rows(64))


def _plan(inputs, out: Path, *, sets=(), cpu_processes=None, nodes=1, gpu=None):
    """``ftplan plan`` in this process (planner.rules + render, no torch)."""
    from ftplan.commands.plan import plan_and_write

    model, data = inputs
    result, folder = plan_and_write(
        model=str(model), data=str(data), task="sft", gpu=gpu, gpus=None, nodes=nodes, gpu_memory=None, price=None,
        goal="balanced", max_hours=None, max_cost=None, general_data=None, out_dir=str(out), sets=tuple(sets),
        trust_remote_code=False, force=True, cpu_processes=cpu_processes,
    )  # fmt: skip
    return result.plan, Path(folder)


def _ftplan(*args: str, env=None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftplan.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)  # fmt: skip


def test_cpu_processes_sets_what_the_set_recipe_sets(tmp_path, inputs):
    from planner.plan import world_size
    from planner.render import launch_info

    same = ("strategy.method=full", "strategy.distribution=zero2")
    recipe, recipe_dir = _plan(inputs, tmp_path / "recipe",
                               sets=("hardware.gpu=null", "hardware.count=2", "strategy.precision=fp32", *same))
    option, option_dir = _plan(inputs, tmp_path / "option", cpu_processes=2, sets=same)
    for field in ("gpu", "count", "nodes"):
        assert getattr(option.hardware, field) == getattr(recipe.hardware, field), field
    for field in ("method", "distribution", "precision", "offload_optimizer", "offload_params"):
        assert getattr(option.strategy, field) == getattr(recipe.strategy, field), field
    assert world_size(option) == world_size(recipe) == 2
    assert launch_info(option) == launch_info(recipe)
    for name in ("launch.sh", "accelerate_config.yaml"):
        assert (option_dir / name).read_text() == (recipe_dir / name).read_text(), name
    decision = next(d for d in option.decisions if d.field == "hardware.count")
    assert decision.value == 2 and decision.reason.startswith("--cpu-processes 2:") and "gloo" in decision.source


def test_cpu_processes_and_nodes_plan_a_multi_node_cpu_run(tmp_path, inputs):
    from planner.plan import world_size

    # no distribution given: the rules choose one for the 2 ranks, with the world size in the reason
    plan, folder = _plan(inputs, tmp_path / "ddp", cpu_processes=1, nodes=2, sets=("training.max_steps=6",))
    assert (plan.hardware.gpu, plan.hardware.count, plan.hardware.nodes, world_size(plan)) == (None, 1, 2, 2)
    assert plan.strategy.distribution in ("ddp", "zero1", "zero2", "zero3")
    reason = next(d.reason for d in plan.decisions if d.field == "strategy.distribution")
    assert reason.startswith("2 CPU processes:")
    assert plan.estimate.steps == 6

    plan, folder = _plan(inputs, tmp_path / "zero3", cpu_processes=1, nodes=2,
                         sets=("strategy.method=full", "strategy.distribution=zero3"))
    launch = (folder / "launch.sh").read_text()
    assert 'NNODES="${NNODES:-2}"' in launch and 'GPUS_PER_NODE="${GPUS_PER_NODE:-1}"' in launch
    assert "exec torchrun --nnodes" in launch  # LAUNCHER=torchrun is there, not only accelerate
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    cfg = config_args.load_config_from_file(str(folder / "accelerate_config.yaml"))
    assert (cfg.num_machines, cfg.num_processes, cfg.use_cpu) == (2, 2, True)
    assert str(getattr(cfg.distributed_type, "value", cfg.distributed_type)) == "DEEPSPEED"
    assert json.loads((folder / "deepspeed.json").read_text())["zero_optimization"]["stage"] == 3


def test_a_cpu_ddp_plan_asks_accelerate_for_several_processes(tmp_path, inputs):
    """accelerate 1.15 starts ONE process for a MULTI_CPU config (it expects mpirun around it): CPU DDP is
    rendered as a multi-process config with use_cpu."""
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    plan, folder = _plan(inputs, tmp_path / "ddp", cpu_processes=2, sets=("strategy.distribution=ddp",))
    cfg = config_args.load_config_from_file(str(folder / "accelerate_config.yaml"))
    assert str(getattr(cfg.distributed_type, "value", cfg.distributed_type)) == "MULTI_GPU"
    assert (cfg.num_processes, cfg.use_cpu) == (2, True)


@pytest.mark.parametrize("kwargs,message", [
    ({"cpu_processes": 0}, "--cpu-processes must be a positive integer"),
    ({"cpu_processes": 2, "gpu": "A100-80GB"}, "--cpu-processes 2 plans a CPU run, but --gpu chose a GPU"),
    ({"cpu_processes": 2, "sets": ("hardware.count=3",)}, "--set hardware.count=3 and --cpu-processes 2"),
    ({"cpu_processes": 2, "sets": ("strategy.distribution=single",)}, "2 CPU processes need ddp"),
    ({"cpu_processes": 1, "nodes": 2, "sets": ("strategy.distribution=fsdp",)}, "2 CPU processes need ddp"),
])  # fmt: skip
def test_cpu_processes_refusals_name_the_fix(tmp_path, inputs, kwargs, message):
    with pytest.raises(FtplanError, match=re.escape(message)):
        _plan(inputs, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # nothing written


def test_nodes_on_a_cpu_machine_need_cpu_processes(tmp_path, inputs, monkeypatch):
    import planner.hardware as hardware

    monkeypatch.setattr(hardware, "probe", lambda: hardware._cpu_only("no GPU (test)"))
    with pytest.raises(FtplanError, match="--nodes 2 but no GPU detected.*--cpu-processes"):
        _plan(inputs, tmp_path / "out", nodes=2)


def test_cli_refusal_is_one_line(inputs, tmp_path):
    model, data = inputs
    proc = _ftplan("plan", "--model", str(model), "--data", str(data), "--task", "sft", "--out", str(tmp_path / "p"),
                   "--cpu-processes", "2", "--gpus", "2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--cpu-processes 2 plans a CPU run, but --gpus chose a GPU" in proc.stderr
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------------------------
# Running them
# ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # accelerate/torchrun of this interpreter's venv
    env["PYTHON"] = sys.executable
    env["PYTHONPATH"] = str(REPO)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path, on any machine
    env.update(extra)
    return env


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a launch.sh and every process under it (launchers start ranks in sessions of their own)."""
    psutil = pytest.importorskip("psutil")
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        with suppress(psutil.NoSuchProcess):
            p.kill()
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


@pytest.mark.slow
def test_go_with_cpu_processes_trains_two_ranks(tmp_path, inputs):
    """`ftplan go --cpu-processes 2`: the rules' choice (LoRA + DDP on CPU) through launch.sh and accelerate."""
    model, data = inputs
    folder = tmp_path / "go"
    proc = _ftplan("go", "--model", str(model), "--data", str(data), "--task", "sft", "--out", str(folder),
                   "--cpu-processes", "2", "--set", "training.max_steps=4", "--set", "evaluation.compare_base=false",
                   "--yes", env=_env(MASTER_PORT=str(_free_port())), timeout=600)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((folder / "output" / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 4
    assert summary["world_size"] == 2  # two ranks in one process group, not one process


@pytest.mark.slow
def test_two_nodes_zero3_on_one_host_survive_losing_a_node(tmp_path, inputs):
    """2 nodes x 1 process on 127.0.0.1, DeepSpeed ZeRO-3 over gloo, torchrun's static rendezvous. Node 1 dies
    (SIGKILL of every process it runs) after the first committed checkpoint; node 0 fails on the lost peer;
    both restarted, the run resumes from the checkpoint and finishes at the planned step."""
    steps, save = 12, 4
    model, data = inputs
    folder = tmp_path / "plan"
    planned = _ftplan("plan", "--model", str(model), "--data", str(data), "--task", "sft", "--out", str(folder),
                      "--cpu-processes", "1", "--nodes", "2",
                      "--set", "strategy.method=full", "--set", "strategy.distribution=zero3",
                      "--set", f"training.max_steps={steps}", "--set", f"checkpointing.save_steps={save}",
                      "--set", "evaluation.compare_base=false", "--set", "evaluation.eval_steps=1000")  # fmt: skip
    assert planned.returncode == 0, planned.stdout + planned.stderr
    ckpts, summary_file = folder / "output" / "checkpoints", folder / "output" / "run_summary.json"
    started: list[subprocess.Popen] = []

    def start_nodes(port: int, tag: str) -> list[subprocess.Popen]:
        nodes = []
        for rank in (0, 1):  # NNODES and GPUS_PER_NODE come from the plan (launch.sh defaults)
            log = (tmp_path / f"{tag}-node{rank}.log").open("w")
            env = _env(NODE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LAUNCHER="torchrun")
            nodes.append(subprocess.Popen(["bash", str(folder / "launch.sh")], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))  # fmt: skip
        started.extend(nodes)
        return nodes

    def log(tag: str, rank: int) -> str:
        return (tmp_path / f"{tag}-node{rank}.log").read_text(errors="replace")

    try:
        node0, node1 = start_nodes(_free_port(), "first")
        deadline = time.time() + 300
        while not list(ckpts.glob("checkpoint-*/ftplan_complete.json")):
            assert time.time() < deadline, "no checkpoint committed in time"
            assert node0.poll() is None and node1.poll() is None, log("first", 0)[-3000:] + log("first", 1)[-3000:]
            time.sleep(0.05)
        _kill_tree(node1)  # the machine is gone: launcher and rank, no signal handler runs
        assert node0.wait(timeout=180) != 0  # the survivor fails on the lost peer instead of hanging
        committed = sorted(int(p.parent.name.split("-")[1]) for p in ckpts.glob("checkpoint-*/ftplan_complete.json"))
        assert committed and committed[0] == save and committed[-1] < steps  # killed mid-run
        assert not summary_file.exists()
        # Both ranks joined the first run: each wrote its ZeRO-3 shard into the committed checkpoint.
        marker = json.loads((ckpts / f"checkpoint-{save}" / "ftplan_complete.json").read_text())
        for rank in (0, 1):
            assert f"global_step{save}/zero_pp_rank_{rank}_mp_rank_00_model_states.pt" in marker["files"]

        node0, node1 = start_nodes(_free_port(), "again")
        for node in (node0, node1):
            assert node.wait(timeout=400) == 0, log("again", 0)[-3000:] + log("again", 1)[-3000:]
    finally:
        for proc in started:
            _kill_tree(proc)

    resumed = committed[-1]
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert summary["global_step"] == steps and summary["resumed_from_step"] == resumed >= save
    state = json.loads((ckpts / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == steps
    for rank in (0, 1):  # each node's rank resumed from the same checkpoint, not from step 0
        assert f"ftplan: resuming from checkpoint-{resumed} (step {resumed})" in log("again", rank)
