"""``ftplan estimate`` through the real entry point: JSON contract, table, bad input, no torch import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ftplan.cli import main

MODEL = "Qwen/Qwen2.5-0.5B"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["estimate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_contract_for_one_method(capsys):
    code, out, _ = run_cli(capsys, "--model", MODEL, "--method", "full", "--dtype", "bf16", "--seq-len", "1024",
                           "--micro-batch", "2", "--gpu", "A100-80GB", "--tokens", "1000000", "--json")
    assert code == 0
    data = json.loads(out)  # exactly one JSON object
    assert data["model"]["total_params"] == data["model"]["trainable_params"] > 0
    per = data["per_gpu_bytes"]
    for key in ("weights", "gradients", "optimizer", "activations", "temporary", "peak_allocated", "overhead",
                "total"):
        assert isinstance(per[key], int) and per[key] >= 0
    assert per["total"] == per["peak_allocated"] + per["overhead"]
    assert per["peak_allocated"] >= per["weights"] + per["optimizer"]
    # pure bf16: weights, grads and both AdamW states at 2 bytes per parameter
    n = data["model"]["total_params"]
    assert per["weights"] == per["gradients"] == 2 * n
    assert per["optimizer"] == 4 * n
    assert data["fits"] is True and data["verdict"] == "fits"
    assert data["time_hours"] > 0 and data["cost_usd"] > 0
    assert data["max_micro_batch"] >= 2


def test_json_lora_has_few_trainable_params_and_mixed_doubles_weights(capsys):
    _, out, _ = run_cli(capsys, "--model", MODEL, "--method", "lora", "--lora-r", "8", "--lora-targets",
                        "q_proj,v_proj", "--gpu", "A100-80GB", "--json")
    lora = json.loads(out)
    assert 0 < lora["model"]["trainable_params"] < lora["model"]["total_params"] / 100
    _, out, _ = run_cli(capsys, "--model", MODEL, "--method", "full", "--mixed-precision", "--gpu", "A100-80GB",
                        "--json")
    mixed = json.loads(out)
    n = mixed["model"]["total_params"]
    per = mixed["per_gpu_bytes"]
    assert per["weights"] + per["gradients"] + per["optimizer"] == 16 * n


def test_json_zero3_on_8_gpus(capsys):
    _, out, _ = run_cli(capsys, "--model", "meta-llama/Llama-3.1-8B", "--method", "full", "--mixed-precision",
                        "--gpus", "8", "--zero", "3", "--gpu", "H100-SXM", "--json")
    data = json.loads(out)
    n = data["model"]["total_params"]
    assert data["per_gpu_bytes"]["optimizer"] == pytest.approx(12 * n / 8, rel=1e-3)


def test_table_lists_every_strategy(capsys):
    code, out, _ = run_cli(capsys, "--model", MODEL, "--gpu", "RTX-4090", "--seq-len", "512")
    assert code == 0
    for name in ("full-fp32", "full-mixed", "full-bf16", "lora", "qlora", "prompt", "prefix"):
        assert name in out
    assert "cheapest" in out and "fastest" in out


def test_table_json_lists_strategies(capsys):
    code, out, _ = run_cli(capsys, "--model", MODEL, "--gpu", "A100-80GB", "--gpus", "8", "--json")
    assert code == 0
    names = [s["name"] for s in json.loads(out)["strategies"]]
    assert {"zero1", "zero2", "zero3", "zero3-offload", "fsdp"} <= set(names)


@pytest.mark.parametrize("args", [
    ["--seq-len", "0"],
    ["--micro-batch", "-2"],
    ["--method", "lora", "--lora-r", "100000"],
    ["--method", "full", "--gpus", "2", "--zero", "4"],
    ["--method", "full", "--optimizer", "lion"],
    ["--method", "lora", "--lora-targets", "nonexistent_proj"],
    ["--gpu", "NoSuchGPU-1"],
])
def test_bad_values_exit_2_with_one_line(capsys, args):
    code, _out, err = run_cli(capsys, "--model", MODEL, "--gpu-memory", "24", *args)
    assert code == 2
    assert err.startswith("ftplan: error:") and err.count("\n") == 1
    assert "Traceback" not in err


def test_unknown_model_exits_2(capsys):
    code, _, err = run_cli(capsys, "--model", "no-such/model-xyz-123", "--gpu", "A100-80GB")
    assert code == 2 and "Traceback" not in err


def test_estimate_does_not_import_torch():
    code = (
        "import sys; from ftplan.cli import main; "
        "rc = main(['estimate', '--model', 'Qwen/Qwen2.5-0.5B', '--method', 'qlora', '--gpu', 'A100-80GB', '--json']); "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes', 'deepspeed', 'accelerate') "
        "if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout


def test_data_file_sets_tokens_and_sequence_length(capsys, tmp_path):
    data = tmp_path / "train.jsonl"
    rows = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": str(2 * i + 1)} for i in range(50)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, out, _ = run_cli(capsys, "--model", MODEL, "--method", "lora", "--data", str(data), "--gpu", "L4",
                           "--epochs", "2", "--json")
    assert code == 0
    est = json.loads(out)
    assert 0 < est["setup"]["seq_len"] <= 128  # from the longest (short) example, not the 2048 default
    assert est["tokens"] > 50 * 2  # tokens of all rows x 2 epochs


def test_default_table_adds_checkpointing_rows_only_where_they_rescue(capsys):
    """8B LoRA at 2048 tokens exceeds a 24 GB card without checkpointing and fits with it."""
    args = ["--model", "meta-llama/Llama-3.1-8B", "--gpu", "RTX-4090", "--json"]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    rows = {s["name"]: s for s in json.loads(out)["strategies"]}
    assert rows["lora"]["verdict"] == "exceeds"
    assert rows["lora+ckpt"]["fits"] and rows["lora+ckpt"]["setup"]["gradient_checkpointing"]
    assert "full-bf16+ckpt" not in rows  # 8B full fine-tuning exceeds 24 GB either way
    # an explicit --no-grad-ckpt means: show exactly that
    code, out, _ = run_cli(capsys, *args, "--no-grad-ckpt")
    assert not any(s["name"].endswith("+ckpt") for s in json.loads(out)["strategies"])
