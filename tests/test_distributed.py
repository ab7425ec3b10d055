"""Two-process DeepSpeed ZeRO-2 and ZeRO-3 on CPU, through the plan folder's launch.sh.

The recipe (DeepSpeed 0.19 + accelerate 1.15 on CPU): a CPU plan with ``hardware.count=2`` and a ZeRO
distribution renders ``accelerate_config.yaml`` with ``distributed_type: DEEPSPEED`` and ``use_cpu: true``;
``launch.sh`` runs ``accelerate launch --config_file ... -m executor run PLAN_DIR``, which starts two
ranks; the executor hands ``deepspeed.json`` to the HF Trainer and DeepSpeed picks its CPU accelerator
(gloo collectives, ``deepspeed/accelerator/cpu_accelerator.py``). The first run on a machine JIT-compiles
DeepSpeed's shared-memory allreduce op (``deepspeed_shm_comm``, cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
transformers = pytest.importorskip("transformers")

from examples.tiny_model import build_tiny_model, iter_corpus_file

REPO = Path(__file__).resolve().parents[1]
DATES = REPO / "examples" / "data" / "dates.jsonl"
VENV_BIN = Path(sys.executable).parent


def _small_data(tmp_path: Path, rows: int = 96) -> Path:
    lines = DATES.read_text(encoding="utf-8").splitlines()[:rows]
    out = tmp_path / "dates_small.jsonl"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _ftplan(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ftplan.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_two_process_zero_on_cpu_through_launch_sh(tmp_path, stage):
    data = _small_data(tmp_path)
    model = build_tiny_model(tmp_path / "model", corpus_texts=list(iter_corpus_file(data)))
    plan_dir = tmp_path / "plan"
    planned = _ftplan(
        "plan", "--model", str(model), "--data", str(data), "--task", "sft", "--out", str(plan_dir),
        "--set", "hardware.gpu=null",  # a CPU plan even where a GPU is present
        "--set", "strategy.precision=fp32",
        "--set", "strategy.method=full",
        "--set", f"strategy.distribution=zero{stage}",
        "--set", "hardware.count=2",
        "--set", "training.max_steps=4",
        "--set", "training.micro_batch=4",
        "--set", "training.lr=1e-3",
        "--set", "evaluation.metric=loss",
        "--set", "evaluation.compare_base=false",
        "--set", "evaluation.max_eval_samples=16",
        cwd=REPO,
    )
    assert planned.returncode == 0, planned.stdout + planned.stderr
    ds_config = json.loads((plan_dir / "deepspeed.json").read_text())
    assert ds_config["zero_optimization"]["stage"] == stage

    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # accelerate from this interpreter's venv
    env["PYTHON"] = sys.executable
    env["MASTER_PORT"] = str(29500 + 10 * stage + os.getpid() % 10)  # two stages never share a port
    env["PYTHONPATH"] = str(REPO)
    env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path, on any machine
    proc = subprocess.run(
        ["bash", str(plan_dir / "launch.sh")], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]

    summary = json.loads((plan_dir / "output" / "run_summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["world_size"] == 2  # both ranks joined the process group
    assert summary["global_step"] == 4
    assert math.isfinite(summary["final_train_loss"])
    # Each rank initialises DeepSpeed's communication backend once: two ranks, two lines (when the
    # shared-memory op can be built at all; without a compiler DeepSpeed falls back to plain gloo).
    assert log.count("deepspeed_shm_comm_op built successfully") in (0, 2)

    final = Path(summary["artifacts"]["final"])
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(final, use_safetensors=True)
    tok = transformers.AutoTokenizer.from_pretrained(final)
    assert reloaded.config.vocab_size == len(tok)
    original = transformers.AutoModelForCausalLM.from_pretrained(model, use_safetensors=True)
    # ZeRO-3 gathers the sharded weights on save (stage3_gather_16bit_weights_on_model_save): the file
    # holds full tensors, and training moved them.
    moved = [
        name
        for (name, p), (_, q) in zip(reloaded.named_parameters(), original.named_parameters())
        if p.shape == q.shape and not bool((p - q).abs().max() == 0)
    ]
    assert all(p.numel() > 0 for p in reloaded.parameters())
    assert moved, "saved weights equal the initial ones: the run did not train"
