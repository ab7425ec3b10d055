"""The memory estimator against the papers' numbers, its own invariants, and measured spot checks."""

from __future__ import annotations

import pytest

from planner.errors import FtplanError
from planner.estimate import estimate, max_micro_batch, max_seq_len, standard_strategies
from planner.hardware import Hardware, resolve_gpu
from planner.memory import TrainSetup, activation_bytes, estimate_memory, nf4_bytes
from planner.model_spec import load_model_spec

GB = 10**9


def spec(name: str = "meta-llama/Llama-3.1-8B"):
    return load_model_spec(name)


def hw(gpu: str = "A100-80GB", count: int = 1) -> Hardware:
    g = resolve_gpu(gpu)
    return Hardware(gpu=g, count=count, free_memory_bytes=g.memory_bytes, detected=False)


# --------------------------------------------------------------------------------------- papers


def test_zero_paper_16_bytes_per_param_mixed_precision_adam():
    """ZeRO (Rajbhandari et al. 2020, sec. 3.1): mixed-precision Adam keeps 2 (fp16 params) + 2 (fp16
    grads) + 12 (fp32 master params, momentum, variance) = 16 bytes per parameter.

    Single GPU with torch autocast, the breakdown is fp32 weights (4, the master copy itself) + fp32
    grads (4) + Adam m, v (8) = 16; with DeepSpeed ZeRO it is the paper's 2 + 2 + 12 split.
    """
    s = spec()
    n = s.param_counts().total
    single = estimate_memory(s, TrainSetup(method="full", precision="bf16", mixed_precision=True, seq_len=512))
    assert (single.weights + single.gradients + single.optimizer) / n == pytest.approx(16, abs=1e-6)
    zero1 = estimate_memory(s, TrainSetup(method="full", precision="bf16", mixed_precision=True, seq_len=512,
                                          gpus=2, distribution="zero1"))
    assert zero1.weights / n == pytest.approx(2)
    assert zero1.gradients / n == pytest.approx(2)
    assert zero1.optimizer * 2 / n == pytest.approx(12, rel=1e-6)  # partitioned over 2 GPUs


def test_pure_bf16_full_is_8_bytes_per_param():
    s = spec()
    m = estimate_memory(s, TrainSetup(method="full", precision="bf16", seq_len=512))
    assert (m.weights + m.gradients + m.optimizer) / s.param_counts().total == pytest.approx(8)


def test_qlora_paper_65b_from_780gb_to_48gb():
    """QLoRA (Dettmers et al. 2023, abstract/intro): finetuning LLaMA 65B in 16 bit needs more than
    780 GB; QLoRA (NF4 + double quant, paged 8-bit AdamW, r=64 on all linear layers, gradient
    checkpointing) fits in less than 48 GB."""
    s = spec("huggyllama/llama-65b")
    full = estimate_memory(s, TrainSetup(method="full", precision="bf16", mixed_precision=True, seq_len=512))
    assert full.peak_allocated > 780 * GB
    q = estimate_memory(s, TrainSetup(method="qlora", precision="bf16", seq_len=512, micro_batch=1,
                                      gradient_checkpointing=True,
                                      optimizer="paged_adamw_8bit", lora_r=64, lora_target_modules=("all-linear",)))
    assert q.total < 48 * GB
    # the NF4 weights alone: ~65.2e9 * (0.5 + 0.127/8) bytes ≈ 33.7 GB for the Linear layers
    assert 30 * GB < q.weights < 40 * GB


def test_nf4_double_quant_overhead_is_0127_bits_per_param():
    n = 64 * 256 * 1000
    dq = nf4_bytes(n, tensors=0) * 8 / n - 4
    plain = nf4_bytes(n, tensors=0, double_quant=False) * 8 / n - 4
    assert dq == pytest.approx(8 / 64 + 32 / (64 * 256), rel=1e-6)  # 0.127 bits (QLoRA sec. 3)
    assert plain == pytest.approx(0.5)


def test_zero3_on_8_gpus_shards_state_to_an_eighth():
    s = spec()
    base = {"method": "full", "precision": "bf16", "mixed_precision": True, "seq_len": 1024, "gpus": 8}
    z0 = estimate_memory(s, TrainSetup(distribution="ddp", **base))
    z3 = estimate_memory(s, TrainSetup(distribution="zero3", **base))
    n = s.param_counts().total
    assert z3.weights == pytest.approx(2 * n / 8, rel=1e-3)
    assert z3.gradients == pytest.approx(2 * n / 8, rel=1e-3)
    assert z3.optimizer == pytest.approx(12 * n / 8, rel=1e-3)
    assert z3.peak_allocated < z0.peak_allocated / 3


def test_offload_moves_optimizer_to_cpu():
    s = spec()
    base = {"method": "full", "precision": "bf16", "mixed_precision": True, "seq_len": 1024,
            "gpus": 8, "distribution": "zero3"}
    on = estimate_memory(s, TrainSetup(offload_optimizer=True, offload_params=True, **base))
    off = estimate_memory(s, TrainSetup(**base))
    assert on.optimizer == 0 and on.weights == 0
    assert on.cpu_bytes >= 12 * s.param_counts().total
    assert on.peak_allocated < off.peak_allocated


# --------------------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_activations_grow_with_sequence_and_batch(method):
    s = spec("Qwen/Qwen2.5-0.5B")
    a = TrainSetup(method=method, seq_len=512, micro_batch=1)
    assert activation_bytes(s, a.with_(seq_len=1024)) > activation_bytes(s, a)
    assert activation_bytes(s, a.with_(micro_batch=2)) > activation_bytes(s, a)
    assert estimate_memory(s, a.with_(micro_batch=4)).peak_allocated > estimate_memory(s, a).peak_allocated


@pytest.mark.parametrize("method", ["full", "lora"])
def test_gradient_checkpointing_saves_memory(method):
    s = spec()
    a = TrainSetup(method=method, seq_len=4096, micro_batch=2)
    assert activation_bytes(s, a.with_(gradient_checkpointing=True)) < activation_bytes(s, a) / 5
    ckpt = estimate_memory(s, a.with_(gradient_checkpointing=True))
    assert ckpt.peak_allocated < estimate_memory(s, a).peak_allocated


def test_eager_attention_costs_more_than_sdpa_at_long_sequences():
    s = spec()
    a = TrainSetup(method="lora", seq_len=8192)
    eager = estimate_memory(s, a.with_(attn_implementation="eager")).peak_allocated
    sdpa = estimate_memory(s, a.with_(attn_implementation="sdpa")).peak_allocated
    assert eager > 1.5 * sdpa


def test_method_ordering_for_a_7b_model():
    s = spec()
    mem = {m: estimate_memory(s, TrainSetup(method=m, seq_len=1024)).peak_allocated
           for m in ("full", "lora", "qlora", "prompt")}
    assert mem["qlora"] < mem["lora"] < mem["full"]
    assert mem["prompt"] < mem["lora"]


def test_optimizer_states():
    s = spec("Qwen/Qwen2.5-0.5B")
    n = s.param_counts().total
    opt = {o: estimate_memory(s, TrainSetup(method="full", optimizer=o, seq_len=256)).optimizer
           for o in ("adamw", "adamw_8bit", "sgd", "adafactor")}
    assert opt["adamw"] == 2 * 2 * n  # two bf16 states
    assert 2 * n < opt["adamw_8bit"] < 2.1 * n  # uint8 x 2 + fp32 absmax per block
    assert opt["sgd"] == 0
    assert 0 < opt["adafactor"] < opt["adamw"] / 2


def test_lora_dropout_adds_a_mask_per_adapter_input():
    s = spec()
    a = TrainSetup(method="lora", seq_len=1024)
    assert activation_bytes(s, a.with_(lora_dropout=0.05)) > activation_bytes(s, a)


@pytest.mark.parametrize("field,value", [("seq_len", 0), ("micro_batch", -1), ("lora_r", 100000),
                                         ("optimizer", "lion"), ("gpus", 0), ("lora_dropout", 1.5)])
def test_bad_setups_raise_ftplan_error(field, value):
    with pytest.raises(FtplanError):
        estimate_memory(spec(), TrainSetup(method="lora").with_(**{field: value}))


def test_verdict_and_search_are_consistent():
    s = spec()
    h = hw("RTX-4090")
    lora = TrainSetup(method="lora", seq_len=1024)
    e = estimate(s, lora, h, tokens=10**6)
    assert e.verdict == "exceeds"  # 16 GB of bf16 weights + activations do not fit in 24 GB
    q = estimate(s, TrainSetup(method="qlora", seq_len=1024, optimizer="paged_adamw_8bit"), h, tokens=10**6)
    assert q.verdict == "fits"
    b = max_micro_batch(s, q.setup, h)
    assert b >= 1
    assert estimate(s, q.setup.with_(micro_batch=b), h, tokens=1, search=False).verdict == "fits"
    assert estimate(s, q.setup.with_(micro_batch=b + 1), h, tokens=1, search=False).verdict != "fits"
    L = max_seq_len(s, q.setup, h)
    assert 1024 <= L <= s.max_position_embeddings


def test_standard_strategies_cover_the_issue():
    names = [n for n, _ in standard_strategies(spec(), hw(count=8), seq_len=1024, gpus=8)]
    for required in ("full-fp32", "full-mixed", "full-bf16", "lora", "qlora", "prompt", "prefix",
                     "zero1", "zero2", "zero3", "zero3-offload", "fsdp"):
        assert required in names


def test_nf4_bytes_match_a_real_bitsandbytes_quantization():
    """Quantize real weights with bitsandbytes on the CPU (NF4, blocksize 64, double quantization) and
    sum the storage of every tensor the Linear4bit keeps."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    total, numel = 0, 0
    for shape in ((256, 1024), (1000, 320)):
        w = torch.randn(*shape, dtype=torch.bfloat16)
        p = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=True,
                              blocksize=64)._quantize("cpu")
        qs = p.quant_state
        tensors = [p.data, qs.absmax, qs.code, qs.state2.absmax, qs.state2.code, qs.offset]
        total += sum(t.numel() * t.element_size() for t in tensors)
        numel += w.numel()
    assert nf4_bytes(256 * 1024, 1) + nf4_bytes(1000 * 320, 1) == total


# --------------------------------------------------------------------------------------- measured


def _bench():
    """benchmarks/memory_accuracy.py, loaded by path (benchmarks/ is not a package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "memory_accuracy.py"
    module_spec = importlib.util.spec_from_file_location("memory_accuracy", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["memory_accuracy"] = module  # dataclasses look their module up
    module_spec.loader.exec_module(module)
    return module


TINY_LLAMA = {
    "model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 3000, "max_position_embeddings": 512,
    "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
}


@pytest.mark.parametrize("method,seq,batch,ckpt,attn", [
    ("full", 256, 2, False, "sdpa"),
    ("full", 256, 1, True, "eager"),
    ("lora", 256, 2, False, "sdpa"),
])
def test_estimate_matches_memtracker_on_a_tiny_llama(method, seq, batch, ckpt, attn):
    """Spot check of the benchmark: a real training step on fake tensors, measured by MemTracker."""
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    bench = _bench()
    case = bench.Case("tiny-llama", 2, method, seq, batch, ckpt, attn=attn)
    measured = bench.measure(case, dict(TINY_LLAMA))
    est, _, _ = bench.estimated(case, dict(TINY_LLAMA))
    assert abs(est - measured) / measured < 0.05


# --------------------------------------------------------------------------------------- time and cost


def test_flops_follow_6n_4n_and_recompute():
    from planner.cost import flops_per_token

    s = spec()
    short = {"seq_len": 16}  # attention term negligible
    full = flops_per_token(s, TrainSetup(method="full", **short))
    lora = flops_per_token(s, TrainSetup(method="lora", **short))
    ckpt = flops_per_token(s, TrainSetup(method="full", gradient_checkpointing=True, **short))
    n = s.active_params - s.vocab_size * s.hidden_size  # embeddings are lookups (untied Llama 3.1)
    assert full == pytest.approx(6 * n, rel=0.01)
    assert lora == pytest.approx(4 * n, rel=0.02)  # no weight gradients for the frozen base
    assert ckpt == pytest.approx(8 * n, rel=0.01)  # + one recomputed forward


def test_time_scales_with_tokens_gpus_and_price():
    from planner.cost import time_and_cost

    s = spec()
    h1 = hw("H100-SXM")
    setup = TrainSetup(method="lora", seq_len=2048)
    one = time_and_cost(s, setup, h1, tokens=10**8)
    two_epochs = time_and_cost(s, setup, h1, tokens=10**8, epochs=2)
    assert two_epochs.hours == pytest.approx(2 * one.hours)
    assert one.cost_usd == pytest.approx(one.hours * h1.hourly_price)
    cheap = Hardware(gpu=h1.gpu, count=1, free_memory_bytes=h1.free_memory_bytes, detected=False, price_per_hour=1.0)
    assert time_and_cost(s, setup, cheap, tokens=10**8).cost_usd == pytest.approx(one.hours * 1.0)
    eight = time_and_cost(s, setup.with_(gpus=8, distribution="ddp"), hw("H100-SXM", 8), tokens=10**8)
    assert one.hours / 8 < eight.hours < one.hours / 6
    qlora = time_and_cost(s, setup.with_(method="qlora"), h1, tokens=10**8)
    assert qlora.hours > one.hours  # NF4 dequantisation


def test_cheapest_and_fastest_fit():
    from planner.estimate import cheapest_and_fastest

    cheap, fast = cheapest_and_fastest(spec(), TrainSetup(method="qlora", seq_len=1024,
                                                          optimizer="paged_adamw_8bit"), tokens=10**7)
    assert cheap is not None and fast is not None
    assert cheap.verdict == fast.verdict == "fits"
    assert cheap.cost_usd <= fast.cost_usd and fast.time_hours <= cheap.time_hours


# ---------------------------------------------------------------------------------------------------------
# What the executor does: DPO reference copy, TRL fused LM head, padding mask; time model overhead
# ---------------------------------------------------------------------------------------------------------


def test_dpo_reference_model_is_a_frozen_weight_copy_for_full_only():
    s = spec()
    full = TrainSetup(method="full", precision="bf16", seq_len=512)
    with_ref = estimate_memory(s, full.with_(reference_model=True))
    without = estimate_memory(s, full)
    # one more copy of every weight in the policy's dtype; no gradients or optimizer states for it
    assert with_ref.weights - without.weights == s.param_counts().total * 2
    assert with_ref.gradients == without.gradients and with_ref.optimizer == without.optimizer
    assert with_ref.peak_allocated - without.peak_allocated == s.param_counts().total * 2
    # LoRA: the reference is the base with adapters disabled (trl DPOTrainer: ref_model None for peft)
    lora = TrainSetup(method="lora", seq_len=512)
    assert estimate_memory(s, lora.with_(reference_model=True)).total == estimate_memory(s, lora).total


def test_fused_lm_head_has_no_vocab_sized_logits():
    s = spec()  # 128K vocabulary: the T x V logits dominate the loss phases
    small = TrainSetup(method="lora", seq_len=1024, fused_loss=True)
    plain = estimate_memory(s, small.with_(fused_loss=False))
    fused = estimate_memory(s, small)
    T = 1024
    # the plain loss keeps logits + fp32 log-softmax + fp32 gradients: >= 3 x 4 x T x V bytes more
    assert plain.peak_allocated - fused.peak_allocated >= 2 * 4 * T * s.vocab_size
    # its transient tensors (one [T, 32768] tile, the fp32 hidden gradient) are below one 16-bit logits tensor
    assert fused.phase == "lm-head-backward" and fused.temporary < 2 * T * s.vocab_size
    assert "loss-backward" not in dict(fused.phases)


def test_fused_lm_head_full_fine_tuning_accumulates_head_gradient_in_fp32():
    s = load_model_spec("Qwen/Qwen2.5-0.5B")
    setup = TrainSetup(method="full", precision="bf16", seq_len=256, fused_loss=True)
    phases = dict(estimate_memory(s, setup).phases)
    lora_phases = dict(estimate_memory(s, setup.with_(method="lora")).phases)
    assert phases["lm-head-backward"] > phases["forward"]
    # the frozen head (LoRA) has no fp32 V x h accumulator
    vh = s.vocab_size * s.hidden_size
    full_gap = phases["lm-head-backward"] - phases["forward"]
    lora_gap = lora_phases["lm-head-backward"] - lora_phases["forward"]
    assert full_gap - lora_gap >= 4 * vh


def test_padding_mask_repeats_kv_for_gqa_only():
    gqa = spec()  # Llama 3.1 8B: 8 kv heads for 32 query heads
    setup = TrainSetup(method="lora", seq_len=1024)
    a = estimate_memory(gqa, setup).activations
    b = estimate_memory(gqa, setup.with_(padding_mask=True)).activations
    q, kv = gqa.num_attention_heads * gqa.head_dim, gqa.num_kv_heads * gqa.head_dim
    # per layer 2 x (q - kv) more 16-bit k/v elements per token, plus the [b, 1, s, s] bool mask once
    assert b - a == gqa.num_layers * 2 * 2 * 1024 * (q - kv) + 1024 * 1024
    mha = load_model_spec("gpt2")  # multi-head attention: nothing repeated, the mask only
    s2 = TrainSetup(method="lora", seq_len=512)
    assert (estimate_memory(mha, s2.with_(padding_mask=True)).activations
            - estimate_memory(mha, s2).activations) == 512 * 512


def test_time_model_charges_a_fixed_overhead_per_step():
    from planner.cost import step_overhead_seconds, time_and_cost

    tiny = load_model_spec("gpt2")
    cpu = Hardware(gpu=None, count=1, free_memory_bytes=0, detected=False)
    setup = TrainSetup(method="full", precision="fp32", seq_len=64, micro_batch=32)
    one = time_and_cost(tiny, setup, cpu, tokens=200_000, steps=100)
    two = time_and_cost(tiny, setup, cpu, tokens=200_000, steps=200)
    # same FLOPs, 100 more optimizer steps: exactly 100 x the per-step overhead more
    assert one.flops == two.flops
    extra = (two.hours - one.hours) * 3600
    assert extra == pytest.approx(100 * step_overhead_seconds(tiny, setup, gpu=False))
    # gradient accumulation: more micro-steps per optimizer step cost more overhead
    acc = setup.with_(grad_accum=4)
    assert step_overhead_seconds(tiny, acc, gpu=False) > step_overhead_seconds(tiny, setup, gpu=False)
    # without steps the estimator counts packed seq_len rows: tokens / (micro_batch x seq_len)
    derived = time_and_cost(tiny, setup, cpu, tokens=64 * 32 * 50)
    given = time_and_cost(tiny, setup, cpu, tokens=64 * 32 * 50, steps=50)
    assert derived.hours == pytest.approx(given.hours)


def test_gpu_overhead_grows_with_layers_and_checkpointing():
    from planner.cost import step_overhead_seconds

    small, big = load_model_spec("Qwen/Qwen2.5-0.5B"), spec()
    setup = TrainSetup(method="lora", seq_len=512)
    assert step_overhead_seconds(big, setup, gpu=True) > step_overhead_seconds(small, setup, gpu=True)
    assert (step_overhead_seconds(big, setup.with_(gradient_checkpointing=True), gpu=True)
            > step_overhead_seconds(big, setup, gpu=True))
    # on a big model the overhead is a small share of the time
    est = estimate(big, setup.with_(micro_batch=8), hw("H100-80GB"), tokens=10_000_000, search=False)
    fixed = (10_000_000 / (8 * 512)) * step_overhead_seconds(big, setup.with_(micro_batch=8), gpu=True)
    assert fixed / (est.time_hours * 3600) < 0.2


def test_fused_lm_head_on_cpu_matches_memtracker_on_a_held_out_vocabulary():
    """TRL's torch fallback of the fused head (no Triton on CPU) allocates fp32 tile copies; the
    coefficient was fitted at vocab 32000, this is vocab 50000 (two vocabulary chunks)."""
    pytest.importorskip("trl")
    import importlib.util
    from pathlib import Path

    from planner.model_spec import spec_from_config

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fused_head_memory.py"
    spec_ = importlib.util.spec_from_file_location("fused_head_memory", path)
    bench = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(bench)
    raw = dict(bench.raw, vocab_size=50000)
    s = spec_from_config(raw, "tiny", source="catalog")
    measured = bench.measure(raw, "lora", 384, 2, True)
    setup = TrainSetup(method="lora", seq_len=384, micro_batch=2, fused_loss=True, device="cpu")
    est = estimate_memory(s, setup)
    assert abs(est.peak_allocated - measured) / measured < 0.05
