"""Cluster and cloud launch (issue 13, items 2-3): slurm.sbatch and sky.yaml rendered from plan.yaml, and
``ftplan launch PLAN_DIR --slurm|--sky`` that writes them and prints (never runs) the submit command.

- golden files for every multi-process case (UPDATE_GOLDEN=1 regenerates, as tests/test_render.py);
- slurm.sbatch: ``bash -n``, its #SBATCH lines parsed and checked against the plan, then run under bash
  with stand-ins for srun/scontrol/accelerate: launch.sh once per node with the first host as MASTER_ADDR
  and SLURM_NODEID as NODE_RANK; SIGUSR1 before the time limit stops the run and requeues the job;
- sky.yaml: loaded by SkyPilot's own parser (``sky.Task.from_yaml``, skypilot==0.14.1, no cloud account);
  SkyPilot pins click<8.2, which conflicts with ftplan's tested click, so unless ``sky`` imports here (or
  FTPLAN_SKY_PYTHON names a Python that has it) the test installs it into its own virtualenv (slow; skipped
  without registry access); its run section is executed with SkyPilot's node variables and stand-ins;
- no secret from the environment reaches any written file or the printed command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
import yaml

from planner.errors import FtplanError
from planner.plan import load_plan, processes_per_node, world_size
from planner.render import (
    SKY,
    SKYIGNORE,
    SKYPILOT_ACCELERATORS,
    SLURM,
    disk_gb,
    gains_cluster_files,
    launch_info,
    render_cluster_files,
    render_files,
    render_sky,
    render_slurm,
    sky_accelerator,
    write_plan_folder,
)
from tests.test_render import CASES, GOLDEN, UPDATE, _write_alpaca, make_result

FIXED_SOURCE = "/opt/ftplan-src"  # golden files: the ftplan checkout path sky.yaml mounts, fixed
SKYPILOT = "skypilot==0.14.1"
MULTI = [c for c in CASES if gains_cluster_files(make_result(c).plan)]
FAKE_SECRETS = {
    "HF_TOKEN": "hf_FAKEtoken0123456789abcdef",
    "HUGGING_FACE_HUB_TOKEN": "hf_FAKEother9876543210",
    "WANDB_API_KEY": "FAKEwandb0123456789abcdef0123456789abcd",
    "MLFLOW_TRACKING_TOKEN": "FAKEmlflowtoken42",
    "AWS_SECRET_ACCESS_KEY": "FAKEawsSecretKey/abc+123",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE1234",
}


@pytest.fixture(scope="module")
def results():
    return {case: make_result(case) for case in CASES}


# ------------------------------------------------------------------------------------------ golden


def _golden_pairs():
    return [(case, name) for case in CASES for name in (SLURM, SKY)]


@pytest.mark.parametrize(("case", "fname"), _golden_pairs(), ids=[f"{c}/{f}" for c, f in _golden_pairs()])
def test_golden(case, fname, results):
    plan = results[case].plan
    files = render_cluster_files(plan, source=FIXED_SOURCE) if gains_cluster_files(plan) else {}
    path = GOLDEN / case / fname
    if fname not in files:
        if UPDATE:
            path.unlink(missing_ok=True)
        assert not path.exists(), f"{path} is stale: the plan renders no {fname}"
        return
    if UPDATE:
        path.write_text(files[fname], encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert files[fname] == path.read_text(encoding="utf-8"), f"{case}/{fname} differs (UPDATE_GOLDEN=1 to accept)"


def test_multi_process_plans_gain_the_files(results):
    assert set(MULTI) == {"zero3-8gpu", "zero3-offload-fp16", "fsdp-multinode"}
    for case, result in results.items():
        plan = result.plan
        files = render_files(result)
        multi = world_size(plan) > 1 or launch_info(plan).nodes > 1
        assert (SLURM in files) == multi, case
        assert (SKY in files) == (SKYIGNORE in files) == (multi and plan.hardware.gpu is not None), case
        if SKY in files:  # the folder's own copy mounts this checkout, the golden one a fixed path
            mine = render_cluster_files(plan)[SKY]
            assert files[SKY] == mine and FIXED_SOURCE not in mine


# ------------------------------------------------------------------------------------------ Slurm


def sbatch_options(text: str) -> dict[str, str]:
    """The #SBATCH options as sbatch reads them: only before the first command line of the script."""
    options: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        if line.startswith("#SBATCH"):
            key, _, value = line[len("#SBATCH ") :].partition("=")
            assert key not in options, f"{key} given twice"
            options[key] = value
        elif line.strip() and not line.startswith("#"):
            break  # sbatch stops reading #SBATCH lines here
    rest = text[text.index(line) :]
    assert "#SBATCH" not in rest, "an #SBATCH line after the first command is ignored by sbatch"
    return options


def slurm_seconds(value: str) -> int:
    days, hms = value.split("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return ((int(days) * 24 + h) * 60 + m) * 60 + s


@pytest.mark.parametrize("case", MULTI)
def test_sbatch_lines_match_the_plan(case, results, tmp_path):
    plan = results[case].plan
    text = render_slurm(plan)
    path = tmp_path / SLURM
    path.write_text(text)
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    opts = sbatch_options(text)
    launch = launch_info(plan)
    assert int(opts["--nodes"]) == plan.hardware.nodes == launch.nodes
    assert opts["--ntasks-per-node"] == "1"  # launch.sh starts the node's ranks itself
    assert int(opts["--gpus-per-node"]) == plan.hardware.count == processes_per_node(plan)
    assert int(opts["--cpus-per-task"]) >= processes_per_node(plan)
    limit = slurm_seconds(opts["--time"])
    assert limit >= plan.estimate.time_hours * 3600 * 1.5  # the estimate with margin
    assert "--requeue" in opts and opts["--open-mode"] == "append"
    sig, _, grace = opts["--signal"].partition("@")
    assert sig == "B:USR1" and 120 <= int(grace) <= limit / 2
    assert ("--mem" in opts) == bool(plan.estimate.cpu_bytes), opts  # host RAM only for offload plans
    if "--mem" in opts:
        assert int(opts["--mem"].rstrip("G")) * 1e9 >= plan.estimate.cpu_bytes
    assert re.fullmatch(r"[a-z][a-z0-9-]*", opts["--job-name"])


def test_cpu_multi_process_plan_gets_a_cpu_job(results):
    plan = results["cpu-classification"].plan
    plan.hardware.count, plan.strategy.distribution = 2, "zero2"
    assert gains_cluster_files(plan)
    files = render_cluster_files(plan)
    assert set(files) == {SLURM}  # no cloud GPU to ask for
    opts = sbatch_options(files[SLURM])
    assert "--gpus-per-node" not in opts and opts["--nodes"] == "1"
    assert int(opts["--mem"].rstrip("G")) * 1e9 >= plan.estimate.total * 2
    with pytest.raises(FtplanError, match="CPU plan"):
        render_sky(plan)


def _stubs(tmp_path: Path, srun_body: str) -> Path:
    """srun/scontrol/python/accelerate stand-ins; scontrol records requeues in $STUB_LOG."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scripts = {
        "scontrol": '#!/bin/bash\nif [ "$1 $2" = "show hostnames" ]; then printf "gpu-a01\\ngpu-a02\\n"; '
        'else echo "scontrol $*" >> "$STUB_LOG"; fi\n',
        "srun": "#!/bin/bash\n" + srun_body,
        "python": "#!/bin/sh\nexit 0\n",
        "accelerate": '#!/bin/sh\necho accelerate\nfor a in "$@"; do printf "<%s>\\n" "$a"; done\n',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


# srun as Slurm runs it: its own options dropped, the command once per node with SLURM_NODEID set.
SRUN_PER_NODE = (
    'while [ "${1#--}" != "$1" ]; do shift; done\n'
    'for i in $(seq 0 $((SLURM_JOB_NUM_NODES - 1))); do SLURM_NODEID=$i "$@" || exit $?; done\n'
)
# srun whose tasks run until SIGTERM and then exit 1 (as accelerate launch does after its ranks stopped).
SRUN_UNTIL_TERM = (
    'trap \'echo "srun TERM" >> "$STUB_LOG"; kill "$child"; exit 1\' TERM\n'
    'sleep 60 & child=$!\ntouch "$STUB_LOG.started"\nwait\n'
)


def _slurm_env(tmp_path: Path, bin_dir: Path, **extra) -> dict[str, str]:
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "SLURM_JOB_ID": "4321",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "gpu-a[01-02]",
        "SLURM_CPUS_PER_TASK": "32",
        "STUB_LOG": str(tmp_path / "stub.log"),
        **extra,
    }


def test_sbatch_starts_launch_sh_once_per_node(tmp_path):
    folder = write_plan_folder(make_result("fsdp-multinode"), tmp_path / "plan")
    env = _slurm_env(tmp_path, _stubs(tmp_path, SRUN_PER_NODE))
    proc = subprocess.run(["bash", SLURM], cwd=folder, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    runs = [chunk.split("\n") for chunk in proc.stdout.split("accelerate\n")[1:]]
    assert len(runs) == 2  # one launch.sh per node

    def after(argv, flag):
        return argv[argv.index(f"<{flag}>") + 1]

    for rank, argv in enumerate(runs):
        assert after(argv, "--machine_rank") == f"<{rank}>"  # NODE_RANK from each task's SLURM_NODEID
        assert after(argv, "--main_process_ip") == "<gpu-a01>"  # the first host of the node list
        assert after(argv, "--main_process_port") == f"<{29500 + 4321 % 1000}>"
        assert after(argv, "--num_machines") == "<2>" and after(argv, "--num_processes") == "<16>"
    assert not (tmp_path / "stub.log").exists()  # finished: no requeue


def test_sbatch_refuses_the_wrong_folder_or_node_count(tmp_path):
    folder = write_plan_folder(make_result("fsdp-multinode"), tmp_path / "plan")
    env = _slurm_env(tmp_path, _stubs(tmp_path, SRUN_PER_NODE))
    proc = subprocess.run(["bash", str(folder / SLURM)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "submit from the plan folder" in proc.stderr
    proc = subprocess.run(
        ["bash", SLURM], cwd=folder, env={**env, "SLURM_JOB_NUM_NODES": "1"}, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "the plan 2" in proc.stderr and "accelerate" not in proc.stdout


def _signal_job(tmp_path: Path, sig: int, **extra) -> tuple[int, str, str]:
    """Run slurm.sbatch with a long-running srun, send ``sig`` to the batch shell only (Slurm's
    --signal=B:...), return (exit status, stderr, what scontrol recorded)."""
    folder = tmp_path / "plan"
    if not folder.exists():
        write_plan_folder(make_result("fsdp-multinode"), folder)
    log = tmp_path / "stub.log"
    log.unlink(missing_ok=True)
    Path(f"{log}.started").unlink(missing_ok=True)
    env = _slurm_env(tmp_path, _stubs(tmp_path, SRUN_UNTIL_TERM), **extra)
    proc = subprocess.Popen(["bash", SLURM], cwd=folder, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not Path(f"{log}.started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err, log.read_text() if log.exists() else ""


def test_sbatch_requeues_itself_before_the_time_limit(tmp_path):
    code, err, log = _signal_job(tmp_path, signal.SIGUSR1)
    assert "srun TERM" in log  # the run was asked to checkpoint and stop
    assert "scontrol requeue 4321" in log and "requeueing job 4321 (1 of 3)" in err
    assert code == 1  # srun's status
    code, err, log = _signal_job(tmp_path, signal.SIGUSR1, SLURM_RESTART_COUNT="3")
    assert "srun TERM" in log and "requeue" not in log and "not requeueing" in err
    code, err, log = _signal_job(tmp_path, signal.SIGTERM)  # pre-emption/scancel: Slurm decides, not us
    assert "srun TERM" in log and "requeue" not in log and code == 1


# ------------------------------------------------------------------------------------------ SkyPilot


def test_accelerator_table_follows_the_gpu_catalog(results):
    from planner.hardware import gpu_catalog

    catalog = gpu_catalog()
    assert set(SKYPILOT_ACCELERATORS) <= set(catalog)
    plan = results["zero3-8gpu"].plan
    acc = sky_accelerator(plan)
    assert acc.gpu == "H100-SXM" and "H100" in acc.names and not acc.note
    # a GPU with no SkyPilot name: the cheapest catalog GPU the plan runs on unchanged
    plan.hardware.gpu, plan.hardware.memory_gib = "GPU-22GB", 22.0
    acc = sky_accelerator(plan)
    fits = [g for g in catalog.values() if g.name in SKYPILOT_ACCELERATORS and g.memory_bytes / 2**30 >= 22 and g.bf16]
    assert acc.gpu == min(fits, key=lambda g: g.price_per_hour).name and "GPU-22GB" in acc.note
    plan.hardware.memory_gib = 10_000.0
    with pytest.raises(FtplanError, match="no SkyPilot accelerator name"):
        sky_accelerator(plan)


def test_sky_run_section_starts_launch_sh_with_skypilot_variables(results, tmp_path):
    """sky.yaml's run, executed as SkyPilot runs it on node 1 of 2 (its env variables, the workdir)."""
    folder = write_plan_folder(make_result("fsdp-multinode"), tmp_path / "plan")
    task = yaml.safe_load((folder / SKY).read_text())
    bin_dir = _stubs(tmp_path, SRUN_PER_NODE)
    venv_bin = tmp_path / ".ftplan-venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "SKYPILOT_NUM_NODES": "2",
        "SKYPILOT_NODE_RANK": "1",
        "SKYPILOT_NODE_IPS": "10.0.0.7\n10.0.0.9",
        "SKYPILOT_NUM_GPUS_PER_NODE": "8",
    }
    proc = subprocess.run(["bash", "-c", task["run"]], cwd=folder, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    argv = proc.stdout.splitlines()
    assert argv[argv.index("<--machine_rank>") + 1] == "<1>"
    assert argv[argv.index("<--main_process_ip>") + 1] == "<10.0.0.7>"
    assert argv[argv.index("<--num_processes>") + 1] == "<16>"
    wrong = subprocess.run(
        ["bash", "-c", task["run"]], cwd=folder, env={**env, "SKYPILOT_NUM_GPUS_PER_NODE": "4"},
        capture_output=True, text=True,
    )
    assert wrong.returncode == 2 and "re-plan" in wrong.stderr
    for section in ("setup", "run"):
        script = tmp_path / f"{section}.sh"
        script.write_text(task[section])
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


@pytest.fixture(scope="module")
def sky_python(tmp_path_factory) -> str:
    """A Python with SkyPilot: this one, FTPLAN_SKY_PYTHON, or a fresh virtualenv with skypilot==0.14.1."""
    if importlib.util.find_spec("sky") is not None:
        return sys.executable
    if os.environ.get("FTPLAN_SKY_PYTHON"):
        return os.environ["FTPLAN_SKY_PYTHON"]
    env_dir = tmp_path_factory.mktemp("skypilot-venv")
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    proc = subprocess.run(
        [python, "-m", "pip", "install", "-q", SKYPILOT], capture_output=True, text=True, timeout=1200
    )
    if proc.returncode != 0:
        pytest.skip(f"{SKYPILOT} does not install here (no registry access?): {proc.stderr.strip()[-300:]}")
    return python


# Runs in SkyPilot's Python: each task YAML through sky.Task.from_yaml and the offline validators (name, run,
# workdir, local file mounts; resource validation needs SkyPilot's online catalog), reported as JSON. Also
# the accelerator names SkyPilot's own tables know, to check SKYPILOT_ACCELERATORS against.
SKY_PARSE = r"""
import json, os, sys
import sky
from sky.utils import gpu_names
from sky.provision.runpod import utils as runpod
from sky import catalog
from sky.catalog.data_fetchers import fetch_fluidstack, fetch_lambda_cloud

out = {"names": sorted(set(gpu_names.CANONICAL_GPU_NAMES) | set(catalog.get_common_gpus())
                       | set(runpod.GPU_NAME_MAP) | set(fetch_lambda_cloud.GPU_TO_MEMORY)
                       | set(fetch_fluidstack.GPU_MAP.values())), "tasks": {}}
for path in sys.argv[1:]:
    os.chdir(os.path.dirname(path))  # `cd PLAN_DIR && sky launch ... sky.yaml`
    task = sky.Task.from_yaml(path)
    task.validate_name()
    task.validate_run()
    task.expand_and_validate_workdir()
    task.expand_and_validate_file_mounts()
    out["tasks"][path] = {
        "name": task.name,
        "num_nodes": task.num_nodes,
        "workdir": task.workdir,
        "resources": [{"accelerators": r.accelerators, "disk_size": r.disk_size, "memory": r.memory}
                      for r in task.resources],
        "file_mounts": task.file_mounts,
        "storage": {dst: {"source": s.source, "mode": s.mode.value} for dst, s in task.storage_mounts.items()},
        "setup": task.setup,
        "run": task.run,
    }
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sky_yaml_loads_with_skypilot(sky_python, tmp_path):
    data = tmp_path / "train.jsonl"
    _write_alpaca(data, 20)
    cases = {}
    for case in [*MULTI, "lora-single-gpu"]:
        result = make_result(case)
        result.plan.data.path = str(data)  # a file that exists: SkyPilot checks local mount sources
        folder = write_plan_folder(result, tmp_path / case)
        if SKY not in os.listdir(folder):  # a single-GPU plan: `ftplan launch --sky` writes it
            (folder / SKY).write_text(render_sky(result.plan))
        cases[case] = (result.plan, folder / SKY, None)
    bucketed = tmp_path / "bucketed"
    bucketed.mkdir()
    plan = cases["fsdp-multinode"][0]
    (bucketed / SKY).write_text(render_sky(plan, bucket="s3://my-bucket/runs/llama/"))
    cases["bucket"] = (plan, bucketed / SKY, "s3://my-bucket/runs/llama")
    proc = subprocess.run(
        [sky_python, "-c", SKY_PARSE, *(str(p) for _, p, _ in cases.values())],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    known = set(out["names"])
    for gpu, names in SKYPILOT_ACCELERATORS.items():
        assert set(names) <= known, (gpu, set(names) - known)
    for case, (plan, path, bucket) in cases.items():
        task = out["tasks"][str(path)]
        launch = launch_info(plan)
        assert task["num_nodes"] == launch.nodes, case
        accs = [r["accelerators"] for r in task["resources"]]
        assert {name for a in accs for name in a} == set(SKYPILOT_ACCELERATORS[plan.hardware.gpu]), case
        assert all(set(a.values()) == {launch.gpus_per_node} for a in accs), case
        disks = {r["disk_size"] for r in task["resources"]}
        assert disks == {disk_gb(plan)} and disk_gb(plan) * 1e9 > 2 * plan.model.total_params, case
        assert task["workdir"] == str(path.parent), case  # the plan folder
        assert task["file_mounts"][plan.data.path] == plan.data.path, case
        src = task["file_mounts"]["~/ftplan-src"]
        assert (Path(src) / "constraints.txt").is_file(), case  # installed with the tested versions
        assert "constraints.txt" in task["setup"] and "ftplan[train" in task["setup"], case
        assert ("deepspeed" in task["setup"]) == launch.deepspeed, case
        for var in ("SKYPILOT_NODE_RANK", "SKYPILOT_NODE_IPS", "SKYPILOT_NUM_NODES", "SKYPILOT_NUM_GPUS_PER_NODE"):
            assert var in task["run"], (case, var)
        assert "./launch.sh" in task["run"], case
        if bucket:
            assert task["storage"] == {"~/sky_workdir/output": {"source": bucket, "mode": "MOUNT_CACHED"}}
        else:
            assert task["storage"] == {}, case


# ------------------------------------------------------------------------------------------ the CLI


def _ftplan(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "ftplan.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120,
        env=env,
    )


def _no_submit_env(tmp_path: Path, **extra) -> dict[str, str]:
    """sbatch/sky stand-ins that leave a mark if anything ever runs them."""
    bin_dir = tmp_path / "submit-bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("sbatch", "sky", "srun", "scontrol"):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\ntouch "{tmp_path}/SUBMITTED-{name}"\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **extra}


def test_launch_writes_and_prints_but_never_submits(tmp_path):
    data = tmp_path / "train.jsonl"
    _write_alpaca(data, 200)
    env = _no_submit_env(tmp_path, **FAKE_SECRETS)
    plan_dir = tmp_path / "plans" / "qwen 8x"
    proc = _ftplan(
        "plan", "--model", "Qwen/Qwen2.5-0.5B", "--data", str(data), "--task", "sft", "--gpu", "H100-SXM",
        "--gpus", "8", "--out", str(plan_dir), "--set", "strategy.distribution=ddp", env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert {SLURM, SKY, SKYIGNORE} <= set(os.listdir(plan_dir))  # a multi-process plan gains them
    outputs = [proc.stdout + proc.stderr]

    slurm = _ftplan("launch", str(plan_dir), "--slurm", cwd=tmp_path, env=env)
    assert slurm.returncode == 0, slurm.stderr
    assert slurm.stdout == "cd 'plans/qwen 8x' && sbatch slurm.sbatch\n"  # the command alone, quoted
    assert "nothing submitted" in slurm.stderr

    sky = _ftplan("launch", str(plan_dir), "--sky", "--bucket", "gs://bkt/qwen", cwd=tmp_path, env=env)
    assert sky.returncode == 0, sky.stderr
    assert sky.stdout == (
        "cd 'plans/qwen 8x' && sky launch -c ftplan-qwen-8x --secret HF_TOKEN --secret HUGGING_FACE_HUB_TOKEN "
        "--secret WANDB_API_KEY --secret MLFLOW_TRACKING_TOKEN sky.yaml\n"
    )
    task = yaml.safe_load((plan_dir / SKY).read_text())
    assert task["file_mounts"]["~/sky_workdir/output"] == {"source": "gs://bkt/qwen", "mode": "MOUNT_CACHED"}
    outputs += [slurm.stdout + slurm.stderr, sky.stdout + sky.stderr]

    again = _ftplan("launch", str(plan_dir), "--sky", cwd=tmp_path, env=env)  # without --bucket: none
    assert again.returncode == 0, again.stderr
    assert "~/sky_workdir/output" not in yaml.safe_load((plan_dir / SKY).read_text())["file_mounts"]
    assert "outputs stay on the node" in again.stderr
    assert not list(tmp_path.glob("SUBMITTED-*"))  # nothing was ever submitted

    written = [p for p in tmp_path.rglob("*") if p.is_file() and "submit-bin" not in p.parts]
    for value in FAKE_SECRETS.values():
        for path in written:
            assert value not in path.read_text(errors="replace"), (path, value)
        for text in outputs:
            assert value not in text


def test_launch_single_gpu_plan_on_the_cloud(tmp_path):
    data = tmp_path / "train.jsonl"
    _write_alpaca(data, 50)
    result = make_result("lora-single-gpu")
    result.plan.data.path = str(data)
    folder = write_plan_folder(result, tmp_path / "one")
    assert SKY not in os.listdir(folder) and SLURM not in os.listdir(folder)
    proc = _ftplan("launch", str(folder), "--sky", "--cluster", "my-run", env={**os.environ, "HF_TOKEN": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("sky launch -c my-run sky.yaml")  # an empty token is not passed
    task = yaml.safe_load((folder / SKY).read_text())
    assert task["num_nodes"] == 1 and task["resources"]["accelerators"] == "RTX4090:1"
    assert (folder / SKYIGNORE).read_text().splitlines()[1] == "output/"
    proc = _ftplan("launch", str(folder), "--slurm")  # a one-process Slurm job works too
    assert proc.returncode == 0 and sbatch_options((folder / SLURM).read_text()).get("--gpus-per-node") == "1"


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("zero3-8gpu", [], "exactly one of --slurm or --sky"),
        ("zero3-8gpu", ["--slurm", "--sky"], "exactly one of --slurm or --sky"),
        ("zero3-8gpu", ["--slurm", "--bucket", "s3://b"], "go with --sky"),
        ("zero3-8gpu", ["--sky", "--bucket", "/local/dir"], "not a bucket URL"),
        ("zero3-8gpu", ["--sky", "--bucket", "s3://KEY:SECRET@bucket/x"], "carries credentials"),
        ("zero3-8gpu", ["--sky"], "/data/train.jsonl: not found here"),
        ("cpu-classification", ["--sky"], "CPU plan"),
        (None, ["--slurm"], "no plan.yaml"),
    ],
)
def test_launch_bad_input_exits_2_and_writes_nothing(tmp_path, case, args, message):
    folder = tmp_path / "p"
    if case:
        write_plan_folder(make_result(case), folder)
    else:
        folder.mkdir()
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    proc = _ftplan("launch", str(folder), *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_plan_yaml_rules_the_job(tmp_path):
    """`ftplan launch` renders from plan.yaml as it is now (a hand edit included), launch.sh too."""
    folder = write_plan_folder(make_result("fsdp-multinode"), tmp_path / "p")
    text = (folder / "plan.yaml").read_text().replace("nodes: 2", "nodes: 3")
    (folder / "plan.yaml").write_text(text)
    assert load_plan(folder).hardware.nodes == 3
    proc = _ftplan("launch", str(folder), "--slurm")
    assert proc.returncode == 0, proc.stderr
    assert sbatch_options((folder / SLURM).read_text())["--nodes"] == "3"
    assert 'NNODES="${NNODES:-3}"' in (folder / "launch.sh").read_text()


def test_user_values_stay_values_in_sky_yaml(tmp_path):
    """Paths with quotes, `$()`, newlines and YAML syntax reach SkyPilot as the same strings; a bucket URL
    with whitespace or a newline (YAML injection) is refused."""
    from tests.test_render import NASTY

    result = make_result("fsdp-multinode")
    plan = result.plan
    plan.data.path = f"/data/{NASTY}: x\n#y.jsonl"
    plan.output_dir = "out: {a}\nrun: evil"
    text = render_sky(plan, bucket="s3://b/x", source="/opt/it's: {src}")
    task = yaml.safe_load(text)
    assert task["file_mounts"][plan.data.path] == plan.data.path
    assert task["file_mounts"]["~/ftplan-src"] == "/opt/it's: {src}"
    assert task["file_mounts"][f"~/sky_workdir/{plan.output_dir}"]["source"] == "s3://b/x"
    assert set(task) == {"name", "workdir", "num_nodes", "resources", "file_mounts", "setup", "run"}
    for bad in ("s3://b/x\nrun: evil", "s3://b x", "s3://", "file:///tmp"):
        with pytest.raises(FtplanError, match="not a bucket URL"):
            render_sky(plan, bucket=bad)
    assert yaml.safe_load(render_sky(plan, bucket="https://acct.blob.core.windows.net/c"))["file_mounts"]
