"""The README demo (examples/demo.py via the real `ftplan go` entry point), at a reduced size."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("trl")

REPO = Path(__file__).resolve().parents[1]


def _load_demo():
    spec = importlib.util.spec_from_file_location("ftplan_demo", REPO / "examples" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The demo's settings with fewer steps and eval samples: same code path, under a minute on 2 cores.
SHORT = {
    "training.max_steps": "16",
    "evaluation.eval_steps": "8",
    "checkpointing.save_steps": "8",
    "evaluation.max_eval_samples": "12",
}


@pytest.mark.slow
def test_demo_flow_trains_and_leaves_every_artifact(tmp_path, capsys):
    demo = _load_demo()
    out = tmp_path / "demo"
    (out / "stale").mkdir(parents=True)  # re-running replaces the output folder
    summary = demo.run_demo(out, SHORT)
    assert not (out / "stale").exists()

    plan_dir = out / "plan"
    for name in ("plan.yaml", "launch.sh", "REPORT.md", "accelerate_config.yaml"):
        assert (plan_dir / name).is_file(), name
    plan_text = (plan_dir / "plan.yaml").read_text()
    assert "method: full" in plan_text and "lr: 0.003" in plan_text  # the demo's overrides landed

    on_disk = json.loads((plan_dir / "output" / "run_summary.json").read_text())
    assert on_disk == summary
    assert summary["status"] == "completed"
    assert summary["global_step"] == 16
    assert math.isfinite(summary["final_train_loss"])
    # Even 16 steps from random init move the held-out loss well below the untrained model's.
    assert summary["tuned"]["loss"] < summary["base"]["loss"] - 0.5
    assert 0.0 <= summary["tuned"]["exact_match"] <= 1.0

    report = (plan_dir / "REPORT.md").read_text()
    assert "## Run results" in report
    assert (plan_dir / "output" / "loss_curve.png").is_file()

    final = Path(summary["artifacts"]["final"])
    model = transformers.AutoModelForCausalLM.from_pretrained(final, use_safetensors=True)
    tok = transformers.AutoTokenizer.from_pretrained(final)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Write 2031-07-04 as a date in words."}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]

    text = demo.headline(summary)
    assert f"{100 * summary['tuned']['exact_match']:.0f}%" in text
    assert f"{summary['tuned']['loss']:.3f}" in text


def test_demo_sh_is_valid_bash_and_runs_demo_py():
    script = REPO / "examples" / "demo.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    assert "examples/demo.py" in script.read_text()


def test_demo_overrides_are_accepted_by_the_planner(tmp_path):
    """Every --set the demo passes is a valid plan field (planning only: fast, no torch)."""
    demo = _load_demo()
    data = REPO / "examples" / "data" / "dates.jsonl"
    model = demo.build_model(tmp_path / "model")
    cmd = [sys.executable, "-m", "ftplan.cli", "plan", "--model", str(model), "--data", str(data),
           "--task", "sft", "--out", str(tmp_path / "plan")]
    for key, value in demo.DEMO_OVERRIDES.items():
        cmd += ["--set", f"{key}={value}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "full" in proc.stdout
