"""CUDA checks: the executor on a GPU, QLoRA's 4-bit path, and measured vs estimated peak memory.

Every test is marked ``gpu``; tests/conftest.py skips them when torch.cuda is unavailable. Each is meant
to finish in well under a minute on one H100.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    """benchmarks/gpu_memory.py (not a package): the same model building and step as the benchmark."""
    spec = importlib.util.spec_from_file_location("ftplan_gpu_memory", REPO / "benchmarks" / "gpu_memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.gpu
def test_executor_lora_run_records_cuda_peak_and_comparison(tmp_path):
    from click.testing import CliRunner
    from executor_helpers import arith_rows, tiny_model, write_jsonl

    from executor.run import run_plan
    from ftplan.cli import cli

    model = tiny_model(tmp_path)
    data = write_jsonl(tmp_path / "arith.jsonl", arith_rows(60))
    out = tmp_path / "plan"
    result = CliRunner().invoke(
        cli,
        ["plan", "--model", str(model), "--data", str(data), "--task", "sft", "--gpu", "H100-SXM",
         "--out", str(out), "--set", "strategy.method=lora", "--set", "training.max_steps=3",
         "--set", "evaluation.max_eval_samples=4"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output

    summary = run_plan(out, log=lambda *a, **k: None)
    assert summary.status == "completed"
    assert summary.device != "cpu"  # torch.cuda.get_device_name()
    assert summary.peak_memory_gb["cuda_max_allocated_gb"] > 0
    assert summary.peak_memory_gb["cuda_max_reserved_gb"] >= summary.peak_memory_gb["cuda_max_allocated_gb"]
    quantities = {c.quantity: c for c in summary.comparisons}
    alloc = quantities["peak GPU memory allocated"]
    assert alloc.estimate > 0 and alloc.measured == summary.peak_memory_gb["cuda_max_allocated_gb"]
    assert alloc.error_pct is not None and math.isfinite(alloc.error_pct)
    assert "peak GPU memory reserved" in quantities


@pytest.mark.gpu
def test_qlora_loads_4bit_and_trains_one_step(tmp_path):
    import torch
    from bitsandbytes.nn import Linear4bit

    g = _bench()
    case = g.Case("Qwen/Qwen2.5-0.5B", "qlora", 256, 2, False, layers=2)
    model, opt, autocast = g.build(case, tmp_path)
    quantized = [m for m in model.modules() if isinstance(m, Linear4bit)]
    # 7 projections per decoder layer (q, k, v, o, gate, up, down) are NF4; lm_head stays unquantized.
    assert len(quantized) == 7 * case.layers
    assert all(m.weight.quant_type == "nf4" for m in quantized)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.randint(0, model.get_input_embeddings().num_embeddings, (case.batch, case.seq), device="cuda")
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    loss = g.train_step(model, opt, ids, autocast)
    assert math.isfinite(float(loss))
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # the paged 8-bit AdamW stepped


@pytest.mark.gpu
@pytest.mark.parametrize(
    "method, seq, batch, ckpt",
    [("full", 512, 1, False), ("full", 1024, 2, True), ("lora", 1024, 2, False)],
)
def test_measured_peak_allocated_within_10_percent_of_estimate(tmp_path, method, seq, batch, ckpt):
    g = _bench()
    case = g.Case("Qwen/Qwen2.5-0.5B", method, seq, batch, ckpt, layers=4)
    measured = g.measure(case, tmp_path, steps=3)
    assert all(math.isfinite(x) for x in measured["losses"])
    estimated = g.estimate_case(case, None)["est_peak_allocated"]
    err = (estimated - measured["max_allocated"]) / measured["max_allocated"]
    assert abs(err) <= 0.10, (
        f"{case.label}: estimated {estimated / 2**30:.3f} GiB vs measured "
        f"{measured['max_allocated'] / 2**30:.3f} GiB ({100 * err:+.1f}%)"
    )
