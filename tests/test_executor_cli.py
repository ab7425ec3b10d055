"""The executor's CLI through the real click group: go (plan + confirm + run), generate, chat."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from executor_helpers import arith_rows, tiny_model, write_jsonl

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    """`ftplan go ... --yes` on a tiny local model: plans on this (CPU) machine, then trains."""
    from ftplan.cli import cli

    root = tmp_path_factory.mktemp("go")
    model = tiny_model(root)
    data = write_jsonl(root / "arith.jsonl", arith_rows(60))
    out = root / "plan"
    result = CliRunner().invoke(
        cli,
        [
            "go",
            "--model",
            str(model),
            "--data",
            str(data),
            "--task",
            "sft",
            "--out",
            str(out),
            "--yes",
            "--set",
            "training.max_steps=3",
            "--set",
            "evaluation.max_eval_samples=4",
        ],
        catch_exceptions=False,
    )
    return out, result.output


def test_go_plans_shows_summary_and_runs(trained):
    out, output = trained
    assert "strategy" in output and "memory" in output and "time/cost" in output
    assert "ftplan: completed: 3 steps" in output
    summary = json.loads((out / "output" / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 3
    assert (out / "plan.yaml").is_file() and (out / "launch.sh").is_file()


def test_go_without_yes_asks_and_can_decline(tmp_path):
    from ftplan.cli import cli

    model = tiny_model(tmp_path)
    data = write_jsonl(tmp_path / "arith.jsonl", arith_rows(30))
    out = tmp_path / "plan"
    result = CliRunner().invoke(
        cli,
        ["go", "--model", str(model), "--data", str(data), "--task", "sft", "--out", str(out)],
        input="n\n",
        catch_exceptions=False,
    )
    assert "Run this plan now?" in result.output and "Not run" in result.output
    assert (out / "plan.yaml").is_file() and not (out / "output").exists()


def test_generate_and_chat(trained):
    from ftplan.cli import cli

    out, _ = trained
    gen = CliRunner().invoke(
        cli, ["generate", str(out), "--prompt", "4+2", "--max-new-tokens", "4"], catch_exceptions=False
    )
    assert gen.exit_code == 0
    chat = CliRunner().invoke(
        cli,
        ["chat", str(out), "--max-new-tokens", "4"],
        input="4+2\n/reset\n1+1\n/exit\n",
        catch_exceptions=False,
    )
    assert chat.exit_code == 0 and chat.output.count("model>") == 2
