"""Rendering: golden files for every template over representative plans, each rendered config
re-validated by its own library, shell quoting of user values, atomic folders, and the CLI end to end.

Regenerate the golden files after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_render.py``.
They are rendered with a stub estimator (tests/rules_helpers.stub_estimate) and fixed versions so they
do not change when the real estimator is tuned or a library is upgraded.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from planner.errors import FtplanError
from planner.hardware import Hardware, resolve_hardware
from planner.plan import load_plan
from planner.render import (
    ACCELERATE,
    DEEPSPEED,
    LAUNCH,
    REPORT,
    render_files,
    render_plan_yaml,
    render_report,
    write_plan_folder,
)
from planner.request import PlanRequest
from planner.rules import make_plan
from tests.rules_helpers import FIXED_VERSIONS, make_profile, stub_estimate

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
CPU = Hardware(gpu=None, count=0, free_memory_bytes=0, detected=True, cpu_memory_bytes=64_000_000_000)
NASTY = """my model's "dir"; $(touch pwned) `touch pwned2` \\ $HOME"""

# name -> (model, hardware, profile kwargs, task, goal, overrides)
CASES = {
    "lora-single-gpu": ("meta-llama/Llama-3.1-8B", ("RTX-4090", 1), dict(rows=5_000), "sft", "balanced", {}),
    "full-single-gpu": (
        "Qwen/Qwen2.5-0.5B",
        ("A100-80GB", 1),
        dict(rows=50_000, labels={}),
        "sft",
        "balanced",
        {},
    ),
    "zero3-8gpu": ("meta-llama/Llama-3.1-70B", ("H100-SXM", 8), dict(rows=200_000), "sft", "balanced", {}),
    "zero3-offload-fp16": ("Qwen/Qwen2.5-32B", ("V100-32GB", 8), dict(rows=50_000), "sft", "quality", {}),
    "fsdp-multinode": (
        "meta-llama/Llama-3.1-70B",
        ("H100-SXM", 8, 2),
        dict(rows=100_000),
        "sft",
        "balanced",
        {
            "strategy.method": "qlora",
            "strategy.distribution": "fsdp",
            "strategy.optimizer": "paged_adamw_8bit",
        },
    ),
    "cpu-classification": (
        "HuggingFaceTB/SmolLM2-135M",
        None,
        dict(
            rows=300,
            fmt="classification",
            mean=60,
            response_mean=2,
            labels={"yes": 280, "no": 20},
            invalid=3,
            duplicates=4,
        ),
        "classification",
        "balanced",
        {},
    ),
}


def _hardware(spec):
    if spec is None:
        return CPU
    name, count, *nodes = spec
    hw = resolve_hardware(name, count)
    if nodes:
        from dataclasses import replace

        hw = replace(hw, nodes=nodes[0])
    return hw


def make_result(name: str, **request_changes):
    model, hw, prof, task, goal, overrides = CASES[name]
    profile = make_profile(path="/data/train.jsonl", **prof)
    req = PlanRequest(
        model=model, data=profile.path, task=task, goal=goal, overrides=dict(overrides), **request_changes
    )
    return make_plan(
        req, hardware=_hardware(hw), profile=profile, estimator=stub_estimate, versions=FIXED_VERSIONS
    )


@pytest.fixture(scope="module")
def rendered():
    return {name: render_files(make_result(name)) for name in CASES}


def _golden_pairs():
    return [(case, fname) for case in CASES for fname in ("plan.yaml", LAUNCH, ACCELERATE, DEEPSPEED, REPORT)]


@pytest.mark.parametrize(("case", "fname"), _golden_pairs(), ids=[f"{c}/{f}" for c, f in _golden_pairs()])
def test_golden(case, fname, rendered):
    files = rendered[case]
    path = GOLDEN / case / fname
    if fname not in files:  # deepspeed.json exists only for ZeRO plans
        if UPDATE:
            path.unlink(missing_ok=True)
        assert not path.exists(), f"{path} is stale: the plan renders no {fname}"
        return
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[fname], encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert files[fname] == path.read_text(encoding="utf-8"), (
        f"{case}/{fname} differs (UPDATE_GOLDEN=1 to accept)"
    )


def test_golden_cases_cover_every_template():
    templates = {p.name for p in (Path(__file__).parent.parent / "templates").glob("*.j2")}
    covered = set()
    for case in CASES:
        covered |= {f"{f}.j2" for f in (GOLDEN / case).glob("*") for f in [f.name]}
    assert templates <= covered | {"plan.yaml.j2"}, templates - covered


def test_golden_files_hold_nothing_volatile():
    for path in GOLDEN.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "0.0.0-test" in text or path.name != "plan.yaml"
            for lib in ("torch", "transformers", "peft"):
                assert f"{lib}: " not in text, path  # versions are injected, never the installed ones


# ------------------------------------------------------------------- each file, its own validator


def test_plan_yaml_round_trips(rendered, tmp_path):
    for case, files in rendered.items():
        (tmp_path / "plan.yaml").write_text(files["plan.yaml"])
        plan = load_plan(tmp_path)
        assert render_plan_yaml(plan) == files["plan.yaml"], case


def test_accelerate_config_loads_with_accelerate(rendered, tmp_path):
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    seen = set()
    for case, files in rendered.items():
        path = tmp_path / f"{case}.yaml"
        path.write_text(files[ACCELERATE])
        cfg = config_args.load_config_from_file(str(path))
        plan = load_plan_text(files["plan.yaml"], tmp_path)
        world = plan.hardware.count * plan.hardware.nodes if plan.hardware.gpu else 1
        assert cfg.num_processes == world and cfg.num_machines == (
            plan.hardware.nodes if plan.hardware.gpu else 1
        )
        kind = str(
            cfg.distributed_type.value if hasattr(cfg.distributed_type, "value") else cfg.distributed_type
        )
        seen.add(kind)
        if kind == "DEEPSPEED":
            assert cfg.deepspeed_config["deepspeed_config_file"] == DEEPSPEED
            assert cfg.mixed_precision is None  # accelerate refuses it beside a DeepSpeed config file
        if kind == "FSDP":
            assert cfg.fsdp_config["fsdp_version"] == 2
        assert cfg.use_cpu == (plan.hardware.gpu is None)
    assert {"DEEPSPEED", "FSDP", "NO"} <= seen


def test_accelerate_launch_accepts_config_and_flags(tmp_path):
    """What launch.sh runs, through accelerate's own argument parser and launch-time validation
    (e.g. it refuses mixed_precision in the accelerate config beside a DeepSpeed config file)."""
    launch = pytest.importorskip("accelerate.commands.launch")
    expected = {"zero3-8gpu": "use_deepspeed", "fsdp-multinode": "use_fsdp"}
    for case, flag in expected.items():
        folder = write_plan_folder(make_result(case), tmp_path / case)
        argv = [
            "--config_file",
            str(folder / ACCELERATE),
            "--num_processes",
            "8",
            "--num_machines",
            "1",
            "--machine_rank",
            "0",
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            "29500",
            "-m",
            "executor",
            "run",
            str(folder),
        ]
        args, _, mp_from_config = launch._validate_launch_command(
            launch.launch_command_parser().parse_args(argv)
        )
        assert getattr(args, flag) is True, case
        assert (
            args.module
            and args.training_script == "executor"
            and args.training_script_args == ["run", str(folder)]
        )
        if flag == "use_deepspeed":
            assert mp_from_config is False  # would make DeepSpeed refuse the config file at launch


def load_plan_text(text, tmp_path):
    (tmp_path / "plan.yaml").write_text(text)
    return load_plan(tmp_path)


def test_deepspeed_json_parses_with_deepspeed(rendered, tmp_path):
    ds_config = pytest.importorskip("deepspeed.runtime.config")
    checked = 0
    for case, files in rendered.items():
        if DEEPSPEED not in files:
            continue
        plan = load_plan_text(files["plan.yaml"], tmp_path)
        path = tmp_path / f"{case}.json"
        path.write_text(files[DEEPSPEED])
        cfg = ds_config.DeepSpeedConfig(str(path))  # no distributed init: world size 1
        assert cfg.zero_optimization_stage == int(plan.strategy.distribution[-1])
        assert cfg.train_micro_batch_size_per_gpu == plan.training.micro_batch
        assert cfg.gradient_accumulation_steps == plan.training.grad_accum
        assert cfg.gradient_clipping == plan.training.max_grad_norm
        assert cfg.bfloat16_config.enabled == (plan.strategy.precision == "bf16")
        assert cfg.float16_config.enabled == (plan.strategy.precision == "fp16")
        offload = cfg.zero_config.offload_optimizer
        assert (
            offload is not None and str(offload.device).endswith("cpu")
        ) == plan.strategy.offload_optimizer
        checked += 1
    assert checked >= 2


@pytest.mark.slow
def test_deepspeed_json_agrees_with_hf_training_arguments(rendered, tmp_path):
    """transformers checks every explicit DeepSpeed value against TrainingArguments (a mismatch is an
    error at train time): the executor builds its arguments from the same plan."""
    pytest.importorskip("deepspeed")
    integ = pytest.importorskip("transformers.integrations.deepspeed")
    from transformers import TrainingArguments

    for case, files in rendered.items():
        if DEEPSPEED not in files:
            continue
        plan = load_plan_text(files["plan.yaml"], tmp_path)
        path = tmp_path / f"{case}.json"
        path.write_text(files[DEEPSPEED])
        t = plan.training
        args = TrainingArguments(
            output_dir=str(tmp_path / "out"),
            per_device_train_batch_size=t.micro_batch,
            gradient_accumulation_steps=t.grad_accum,
            max_grad_norm=t.max_grad_norm,
            learning_rate=t.lr,
            weight_decay=t.weight_decay,
            use_cpu=True,
            report_to=[],
        )
        args.fp16 = plan.strategy.precision == "fp16"
        args.bf16 = plan.strategy.precision == "bf16"
        hf = integ.HfTrainerDeepSpeedConfig(str(path))
        hf.trainer_config_process(args)  # raises ValueError on any mismatch
        assert not hf.mismatches, (case, hf.mismatches)


def test_report_has_every_section(rendered):
    report = rendered["zero3-8gpu"][REPORT]
    for heading in (
        "## Decisions",
        "## Memory per GPU, every strategy",
        "## Time and cost",
        "## Data",
        "## Evaluation and safety nets",
        "## Commands",
    ):
        assert heading in report
    assert "**lora-zero3** (chosen)" in report or "(chosen)" in report
    for label in ("this plan", "cheapest", "fastest"):
        assert f"| {label} |" in report
    cls = rendered["cpu-classification"][REPORT]
    assert "3 malformed" in cls and "line 2: not valid JSON" in cls and "class imbalance" in cls


def test_report_escapes_table_breakers():
    res = make_result("lora-single-gpu")
    res.plan.warnings.append("a | pipe")
    res.plan.decisions[0].reason = "reason with | pipe\nand newline"
    text = render_report(res)
    assert "reason with \\| pipe and newline" in text


# --------------------------------------------------------------------------------- shell safety


def _stub_bin(tmp_path: Path) -> Path:
    """python/accelerate stand-ins that print their argv, one argument per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "accelerate", "torchrun", "deepspeed"):
        path = bin_dir / name
        path.write_text(
            '#!/bin/sh\nprintf "%s\\n" "$(basename "$0")"\nfor a in "$@"; do printf "<%s>\\n" "$a"; done\n'
        )
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.mark.parametrize("case", ["lora-single-gpu", "zero3-8gpu"])
def test_user_values_reach_the_program_verbatim_and_run_nothing(tmp_path, case):
    result = make_result(case)
    result.plan.model.name_or_path = NASTY
    result.plan.data.path = "/data/" + NASTY + ".jsonl"
    out = tmp_path / "plans" / "it's a $(touch pwned3) plan"
    folder = write_plan_folder(result, out)
    assert load_plan(folder).model.name_or_path == NASTY  # what the executor will read
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": f"{_stub_bin(tmp_path)}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    proc = subprocess.run(
        ["bash", str(folder / LAUNCH)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"ftplan: training {NASTY} on /data/{NASTY}.jsonl" in proc.stderr
    argv = proc.stdout.splitlines()
    real = str(folder.resolve())
    assert argv[-2:] == ["<run>", f"<{real}>"]  # python -m executor run PLAN_DIR
    assert "<-m>" in argv and "<executor>" in argv
    if case == "zero3-8gpu":
        assert argv[0] == "accelerate" and f"<{real}/accelerate_config.yaml>" in argv
        assert argv[argv.index("<--num_processes>") + 1] == "<8>"
    else:
        assert argv[0] == "python"
    for root in (work, folder, tmp_path, Path.cwd()):
        assert not list(root.glob("pwned*")), root


def test_multinode_variables(tmp_path):
    folder = write_plan_folder(make_result("fsdp-multinode"), tmp_path / "p")
    env = {
        "PATH": f"{_stub_bin(tmp_path)}:{os.environ['PATH']}",
        "NNODES": "2",
        "NODE_RANK": "1",
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "1234",
    }
    proc = subprocess.run(["bash", str(folder / LAUNCH)], env=env, capture_output=True, text=True, timeout=30)
    argv = proc.stdout.splitlines()

    def after(flag):
        return argv[argv.index(f"<{flag}>") + 1]

    assert argv[:2] == ["accelerate", "<launch>"]
    assert after("--num_processes") == "<16>" and after("--machine_rank") == "<1>"
    assert after("--main_process_ip") == "<10.0.0.1>" and after("--main_process_port") == "<1234>"
    proc = subprocess.run(
        ["bash", str(folder / LAUNCH)],
        env={**env, "LAUNCHER": "torchrun"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.stdout.splitlines()[0] == "torchrun" and "<--nproc_per_node>" in proc.stdout


# ------------------------------------------------------------------------------- atomic folders


def test_folder_is_written_atomically(tmp_path, monkeypatch):
    from planner import render

    result = make_result("lora-single-gpu")

    def boom(folder):
        raise FtplanError("validation failed")

    monkeypatch.setattr(render, "validate_folder", boom)
    with pytest.raises(FtplanError):
        write_plan_folder(result, tmp_path / "plan")
    assert list(tmp_path.iterdir()) == []  # no folder, no temp leftovers


def test_existing_folder_needs_force_and_keeps_outputs(tmp_path):
    out = tmp_path / "plan"
    write_plan_folder(make_result("zero3-8gpu"), out)
    (out / "output").mkdir()
    (out / "output" / "keep.txt").write_text("checkpoint")
    with pytest.raises(FtplanError, match="not empty"):
        write_plan_folder(make_result("lora-single-gpu"), out)
    write_plan_folder(make_result("lora-single-gpu"), out, force=True)
    assert (out / "output" / "keep.txt").read_text() == "checkpoint"
    assert not (out / DEEPSPEED).exists()  # stale ZeRO config removed
    assert load_plan(out).strategy.distribution == "single"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [ACCELERATE, LAUNCH, REPORT, "output", "plan.yaml"]
    )


def test_launch_sh_is_executable(tmp_path):
    folder = write_plan_folder(make_result("lora-single-gpu"), tmp_path / "p")
    assert os.access(folder / LAUNCH, os.X_OK)


# ---------------------------------------------------------------------------------------- CLI


def _ftplan(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ftplan.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def _write_alpaca(path: Path, rows: int, bad_lines: int = 0):
    with path.open("w") as fh:
        for i in range(rows):
            fh.write(
                json.dumps(
                    {
                        "instruction": f"Add {i} and {i % 7}.",
                        "input": "",
                        "output": f"The sum is {i + i % 7}.",
                    }
                )
                + "\n"
            )
        for _ in range(bad_lines):
            fh.write("{not json\n")


def test_cli_end_to_end(tmp_path):
    data = tmp_path / "train.jsonl"
    _write_alpaca(data, 400)
    out = tmp_path / "plan"
    proc = _ftplan(
        "plan",
        "--model",
        "Qwen/Qwen2.5-0.5B",
        "--data",
        str(data),
        "--task",
        "sft",
        "--gpu",
        "L4",
        "--out",
        str(out),
        "--set",
        "training.seed=7",
    )
    assert proc.returncode == 0, proc.stderr
    assert "strategy" in proc.stdout and "time/cost" in proc.stdout and str(out) in proc.stdout
    plan = load_plan(out)
    assert plan.data.rows == 400 and plan.data.sha256 and plan.training.seed == 7
    assert plan.data.path == str(data) and plan.hardware.gpu == "L4"
    assert {p.name for p in out.iterdir()} >= {"plan.yaml", LAUNCH, ACCELERATE, REPORT}
    # the same --out again: refused without --force, accepted with it
    again = _ftplan(
        "plan",
        "--model",
        "Qwen/Qwen2.5-0.5B",
        "--data",
        str(data),
        "--task",
        "sft",
        "--gpu",
        "L4",
        "--out",
        str(out),
    )
    assert again.returncode == 2 and "not empty" in again.stderr
    forced = _ftplan(
        "plan",
        "--model",
        "Qwen/Qwen2.5-0.5B",
        "--data",
        str(data),
        "--task",
        "sft",
        "--gpu",
        "L4",
        "--out",
        str(out),
        "--force",
    )
    assert forced.returncode == 0, forced.stderr


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("none", ["--data", "{tmp}/missing.jsonl"], "missing.jsonl"),
        ("empty", ["--data", "{tmp}/empty.jsonl"], "empty"),
        ("malformed", ["--data", "{tmp}/bad.jsonl"], "line"),
        ("good", ["--data", "{tmp}/good.jsonl", "--set", "training.lrr=1"], "did you mean 'training.lr'"),
        ("good", ["--data", "{tmp}/good.jsonl", "--set", "training.lr=-1"], "training.lr: must be > 0"),
        ("good", ["--data", "{tmp}/good.jsonl", "--set", "nonsense"], "expected key=value"),
        ("good", ["--data", "{tmp}/good.jsonl", "--task", "preference"], "preference"),
        ("good", ["--data", "{tmp}/good.jsonl", "--max-hours", "-1"], "--max-hours must be positive"),
    ],
)
def test_cli_bad_input_exits_2_without_a_folder(tmp_path, setup, args, message):
    (tmp_path / "empty.jsonl").write_text("")
    _write_alpaca(tmp_path / "bad.jsonl", 5, bad_lines=20)
    _write_alpaca(tmp_path / "good.jsonl", 50)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--task" not in args:
        args += ["--task", "sft"]
    out = tmp_path / "out"
    proc = _ftplan("plan", "--model", "Qwen/Qwen2.5-0.5B", "--gpu", "L4", "--out", str(out), *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_plan_yaml_edited_into_nonsense_is_refused(tmp_path):
    folder = write_plan_folder(make_result("lora-single-gpu"), tmp_path / "p")
    text = (folder / "plan.yaml").read_text()
    text = text.replace("lr: 0.0002", "lr: -1").replace("method: lora", "method: lroa")
    text = text.replace("micro_batch: ", "micro_batch: x").replace("seed: 42", "seed: 42\n  sed: 1")
    (folder / "plan.yaml").write_text(text)
    with pytest.raises(FtplanError) as err:
        load_plan(folder)
    msg = str(err.value)
    for part in (
        "training.lr: must be > 0, got -1",
        "strategy.method: unknown 'lroa' (did you mean 'lora'?)",
        "training.micro_batch: must be an integer",
        "training.sed: unknown key (did you mean 'seed'?)",
    ):
        assert part in msg


def test_every_fallback_yields_a_valid_plan_and_matching_configs(tmp_path):
    fallback = pytest.importorskip("executor.fallback")
    ds_config = pytest.importorskip("deepspeed.runtime.config")
    from planner.render import rerender_configs

    for case in ("full-single-gpu", "zero3-8gpu"):
        result = make_result(case)
        folder = write_plan_folder(result, tmp_path / case)
        plan = result.plan
        assert plan.fallbacks, case
        while plan.fallbacks:
            plan = fallback.apply_next_fallback(plan, "test OOM")  # validates the changed plan
            rerender_configs(plan, folder)
            if (folder / DEEPSPEED).exists():
                cfg = ds_config.DeepSpeedConfig(str(folder / DEEPSPEED))
                assert cfg.train_micro_batch_size_per_gpu == plan.training.micro_batch
                assert cfg.gradient_accumulation_steps == plan.training.grad_accum
        switched = [f for f in result.plan.fallbacks if "strategy.method" in f.set]
        for f in switched:  # a switch keeps the launcher: same distribution, no offload change
            assert "strategy.distribution" not in f.set and "strategy.offload_params" not in f.set
