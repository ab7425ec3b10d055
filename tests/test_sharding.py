"""Per-rank memory of DeepSpeed ZeRO and FSDP2 (planner/sharding.py): first-principles expectations, the
rendered deepspeed.json against what the estimator reads, and one FSDPMemTracker trace of a tiny model
on a fake process group."""

from __future__ import annotations

import json

import pytest

from planner.memory import FP32, TrainSetup, estimate_memory, nf4_bytes
from planner.model_spec import load_model_spec
from planner.sharding import (
    DS_MAX_LIVE_PARAMETERS,
    deepspeed_zero_values,
    shard_state,
    zero3_live_params,
)

MODEL = "meta-llama/Llama-3.1-8B"


def spec(name: str = MODEL):
    return load_model_spec(name)


def sharded(setup: TrainSetup, name: str = MODEL):
    """The Sharded record estimate_memory builds for ``setup`` (same inputs, through its own helpers)."""
    import planner.memory as m

    s = spec(name)
    prec = m._precision(setup)
    p = m._params(s, setup)
    weights = m._weight_bytes(s, setup, p, prec)
    return shard_state(s, setup, p, prec, weights=weights, grads=p.trainable * prec.train,
                       optim=m._optimizer_bytes(setup, p, s, prec), step_tmp=0), p


FULL = {"method": "full", "precision": "bf16", "mixed_precision": True, "seq_len": 1024}
LORA = {"method": "lora", "precision": "bf16", "seq_len": 1024}


# --------------------------------------------------------------------------------------- DeepSpeed


@pytest.mark.parametrize(("dist", "n", "weights", "grads", "optim"), [
    # (ZeRO paper sec. 3: 2 B 16-bit params, 2 B grads, 12 B fp32 master + Adam m, v per parameter)
    ("zero1", 4, lambda P, t: 2 * P, lambda P, t: 2 * t, lambda P, t: 12 * t / 4),
    ("zero2", 4, lambda P, t: 2 * P, lambda P, t: 2 * t / 4, lambda P, t: 12 * t / 4),
    ("zero3", 8, lambda P, t: 2 * P / 8, lambda P, t: 2 * t / 8, lambda P, t: 12 * t / 8),
    ("zero2", 1, lambda P, t: 2 * P, lambda P, t: 2 * t, lambda P, t: 12 * t),
])
def test_zero_partitions_follow_the_zero_paper(dist, n, weights, grads, optim):
    s = spec()
    P = s.param_counts().total
    m = estimate_memory(s, TrainSetup(gpus=n, distribution=dist, **FULL))
    assert m.weights == pytest.approx(weights(P, P), rel=1e-4)
    assert m.gradients == pytest.approx(grads(P, P), rel=1e-4)
    assert m.optimizer == pytest.approx(optim(P, P), rel=1e-4)


def test_zero_lora_adapters_train_in_16_bit_with_an_fp32_master():
    """DeepSpeed casts the whole module (adapters included) to bf16; the master copy is fp32."""
    sh, p = sharded(TrainSetup(gpus=4, distribution="zero2", **LORA))
    assert sh.grads == 2 * p.trainable // 4
    assert sh.optim == pytest.approx(12 * p.trainable / 4, rel=1e-6)
    assert not sh.prec.autocast and sh.prec.train == 2


def test_zero2_buckets_are_the_rendered_reduce_bucket_size_twice():
    """setup_buckets: two reduce_bucket_size buffers (overlap_comm) in the gradient dtype."""
    s = spec()
    values = deepspeed_zero_values(s.hidden_size, 2)
    assert values["reduce_bucket_size"] == s.hidden_size ** 2
    sh, _ = sharded(TrainSetup(gpus=4, distribution="zero2", **FULL))
    assert sh.gather == 2 * values["reduce_bucket_size"] * 2


def test_zero_step_converts_the_gradient_partition_to_fp32():
    sh, p = sharded(TrainSetup(gpus=4, distribution="zero2", **FULL))
    part = -(-p.trainable // 4)
    assert sh.step_tmp == part * (2 + FP32)  # the flattened 16-bit partition and its fp32 copy


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_zero_offload_on_one_gpu_leaves_no_optimizer_bytes_on_the_gpu(stage):
    """ZeRO-Offload (Ren et al. 2021) on one GPU: master, Adam states and fp32 gradients in host RAM."""
    params = stage == "zero3"
    m = estimate_memory(spec(), TrainSetup(gpus=1, distribution=stage, offload_optimizer=True, offload_params=params,
                                           **FULL))
    P = spec().param_counts().total
    assert m.optimizer == 0 and m.gradients == 0
    assert m.cpu_bytes >= 16 * P  # 12 B states + master, 4 B fp32 gradients
    if params:
        assert m.weights == 0
        no_offload = estimate_memory(spec(), TrainSetup(gpus=1, distribution="zero3", **FULL))
        assert m.peak_allocated < no_offload.peak_allocated / 4


def test_zero3_gathers_what_the_coordinator_keeps_live():
    """partitioned_param_coordinator: prefetch up to max_live_parameters (the 1e9 default), plus at most
    one module beyond it; at least the largest module and one prefetch bucket."""
    s = spec()
    values = deepspeed_zero_values(s.hidden_size, 3)
    loss, bwd, persistent = zero3_live_params(s, values)
    largest = max(s.vocab_size * s.hidden_size, *(x.in_features * x.out_features for x in s.linear_layers()))
    for live in (loss, bwd):
        assert values["stage3_prefetch_bucket_size"] < live <= DS_MAX_LIVE_PARAMETERS + largest
    assert persistent == s.hidden_size * (2 * s.num_layers + 1)  # the norm weights
    # a smaller live limit gathers less
    small = dict(values, stage3_max_live_parameters=50_000_000, stage3_max_reuse_distance=0)
    assert zero3_live_params(s, small)[1] < bwd


def test_zero3_qlora_gathers_the_packed_nf4_storage():
    """bnb_4bit_quant_storage bf16: a quantised Linear is a quarter of its 16-bit elements."""
    from planner.model_spec import spec_from_config

    cfg = dict(spec().config, vocab_size=1000)  # a small head, so a decoder Linear is the largest module
    s = spec_from_config(cfg, MODEL, source="catalog")
    values = deepspeed_zero_values(s.hidden_size, 3)
    # no prefetch, no reuse: only the module being run is gathered
    only = dict(values, stage3_prefetch_bucket_size=1, stage3_max_live_parameters=1, stage3_max_reuse_distance=0)
    mlp = s.hidden_size * s.intermediate_size
    q, f = zero3_live_params(s, only, quantized=True), zero3_live_params(s, only)
    assert f[1] == mlp and q[1] == mlp // 4


# --------------------------------------------------------------------------------------- one truth


def _ds_plan():
    from tests.test_render import make_result

    return make_result("zero3-8gpu")


def test_rendered_deepspeed_values_are_what_the_estimator_reads():
    from planner.render import render_files

    result = _ds_plan()
    rendered = json.loads(render_files(result)["deepspeed.json"])["zero_optimization"]
    values = deepspeed_zero_values(result.spec.hidden_size, rendered["stage"])
    for key, value in values.items():
        assert rendered[key] == value, key
    # and the estimate of that plan is built from them (reduce bucket in the backward points)
    s = result.spec
    setup = TrainSetup(method=result.plan.strategy.method, precision="bf16", gpus=8, distribution="zero3", seq_len=512)
    import planner.memory as m

    p = m._params(s, setup)
    prec = m._precision(setup)
    sh = shard_state(s, setup, p, prec, weights=m._weight_bytes(s, setup, p, prec),
                     grads=p.trainable * prec.train, optim=m._optimizer_bytes(setup, p, s, prec), step_tmp=0)
    loss, bwd, persistent = zero3_live_params(s, values)
    assert sh.gather == (loss + persistent) * 2
    assert sh.backward[0][-1] == (bwd + persistent) * 2 + rendered["reduce_bucket_size"] * 2


@pytest.mark.slow  # imports deepspeed and TrainingArguments (~8 s)
def test_deepspeed_values_equal_transformers_auto_resolution(tmp_path):
    """The numbers ftplan writes are what HF's "auto" would fill from the model's hidden size."""
    integ = pytest.importorskip("transformers.integrations.deepspeed")
    pytest.importorskip("deepspeed")
    h = 4096
    auto = {"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                                  "stage3_param_persistence_threshold": "auto"}}
    from transformers import TrainingArguments

    hf = integ.HfTrainerDeepSpeedConfig(auto)

    class _Model:
        class config:  # noqa: N801 - stands for model.config
            hidden_size = h

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    hf.trainer_config_finalize(args, _Model(), 10)
    ours = deepspeed_zero_values(h, 3)
    for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
        assert hf.config["zero_optimization"][key] == ours[key], key


def test_unknown_hidden_size_renders_auto():
    values = deepspeed_zero_values(None, 3)
    assert values["reduce_bucket_size"] == values["stage3_prefetch_bucket_size"] == "auto"


# --------------------------------------------------------------------------------------- FSDP2


def test_fsdp_full_mixed_shards_fp32_state_and_computes_in_bf16():
    """accelerate fsdp2_prepare_model upcasts trainable parameters to fp32; MixedPrecisionPolicy
    all-gathers bf16: 4 + 4 + 8 B per parameter over N ranks, 16-bit activations without autocast."""
    s = spec()
    P = s.param_counts().total
    m = estimate_memory(s, TrainSetup(gpus=8, distribution="fsdp", **FULL))
    assert (m.weights, m.gradients, m.optimizer) == (pytest.approx(4 * P / 8, rel=1e-4),
                                                       pytest.approx(4 * P / 8, rel=1e-4),
                                                       pytest.approx(8 * P / 8, rel=1e-4))
    sh, _ = sharded(TrainSetup(gpus=8, distribution="fsdp", **FULL))
    assert sh.prec.base == sh.prec.compute == 2 and not sh.prec.autocast


def test_fsdp_full_without_mixed_precision_still_trains_fp32_state():
    """TrainingArguments(bf16=True) makes accelerate's mixed_precision bf16, and fsdp2_prepare_model then
    upcasts every trainable parameter: a bf16-loaded model has the fp32 state of a mixed one."""
    s = spec()
    pure = estimate_memory(s, TrainSetup(gpus=4, distribution="fsdp", method="full", precision="bf16", seq_len=1024))
    mixed = estimate_memory(s, TrainSetup(gpus=4, distribution="fsdp", **FULL))
    assert (pure.weights, pure.gradients, pure.optimizer) == (mixed.weights, mixed.gradients, mixed.optimizer)


def test_fsdp_gathers_two_layers_in_backward_and_the_tail_at_the_loss():
    s = spec()  # untied: the tail is [norm, lm_head]
    sh, _ = sharded(TrainSetup(gpus=8, distribution="fsdp", **FULL))
    layer = (s.param_counts().total - 2 * s.vocab_size * s.hidden_size - s.hidden_size) // s.num_layers
    assert sh.gather == (s.vocab_size + 1) * s.hidden_size * 2  # the tail, bf16
    top = dict((pt[0], pt) for pt in sh.backward)["backward-second"]
    # current + prefetched unit, the reduce-scatter buffer of the layer above, bf16; plus the lm_head's
    # fp32 gradient shard where memory.py counts a bf16 one
    head = s.vocab_size * s.hidden_size * (FP32 - 2) // 8
    assert top[-1] == pytest.approx(3 * layer * 2 + head, rel=1e-3)


def test_fsdp_lora_gathers_adapters_in_bf16_and_keeps_fp32_adapter_state():
    sh, p = sharded(TrainSetup(gpus=4, distribution="fsdp", **LORA))
    assert sh.grads == p.trainable * FP32 // 4 and sh.optim == 2 * p.trainable * FP32 // 4
    assert not sh.prec.autocast  # peft's fp32 adapters run in bf16 under param_dtype
    lora, _ = sharded(TrainSetup(gpus=4, distribution="fsdp", **LORA))
    frozen, _ = sharded(TrainSetup(gpus=4, distribution="fsdp", method="full", precision="bf16", seq_len=1024))
    fwd = {pt[0]: pt[-1] for pt in lora.backward}["forward-last-layer"]
    fwd_full = {pt[0]: pt[-1] for pt in frozen.backward}["forward-last-layer"]
    assert fwd - fwd_full == pytest.approx(2 * 2 * p.trainable // spec().num_layers, rel=1e-3)


def test_fsdp_qlora_gathers_packed_nf4():
    """bnb_4bit_quant_storage bf16: the all-gathered Linear weights are the packed 4-bit bytes."""
    s = spec()
    q, p = sharded(TrainSetup(gpus=2, distribution="fsdp", method="qlora", precision="bf16", seq_len=1024,
                              qlora_upcast=False))
    lora, _ = sharded(TrainSetup(gpus=2, distribution="fsdp", **LORA))
    fwd_q = {pt[0]: pt[-1] for pt in q.backward}["forward-last-layer"]
    fwd_l = {pt[0]: pt[-1] for pt in lora.backward}["forward-last-layer"]
    linear = p.linear // s.num_layers
    assert fwd_l - fwd_q == pytest.approx(2 * (2 * linear - linear // 2), rel=1e-3)  # 2 units, 2 B vs 0.5 B
    # each rank stores half the packed data but the whole QuantState
    meta = nf4_bytes(p.linear, p.linear_tensors) - p.linear // 2
    assert q.weights > meta + p.linear // 4
    assert q.prec.other == 2  # not upcast (TRL skips prepare_model_for_kbit_training when sharded)


def test_fsdp_offload_moves_all_sharded_state_to_the_host():
    m = estimate_memory(spec(), TrainSetup(gpus=4, distribution="fsdp", offload_params=True, **FULL))
    assert m.weights == m.gradients == m.optimizer == 0 and m.cpu_bytes > 0


# --------------------------------------------------------------------------------------- traced


def test_tiny_llama_fsdp_trace_matches_the_estimate():
    """FSDPMemTracker on a fake 4-rank process group (benchmarks/sharding_accuracy.py), tiny Llama with
    a 4k vocabulary so the layers' backward sets the peak: within 3% for full (fp32 + bf16 policy) and
    LoRA. The benchmark's own cases, with real model widths, are within 0.2% median."""
    pytest.importorskip("torch")
    import torch.distributed as dist

    from benchmarks import sharding_accuracy as bench

    raw = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
           "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 4096, "tie_word_embeddings": False,
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0}
    try:
        for policy in ("mixed", "lora"):
            case = bench.Case("tiny", 4, policy, 4, 256, 2)
            truth = bench.measure(case, raw)
            est, _ = bench.estimated(case, raw)
            assert abs(est - truth) / truth < 0.03, (policy, est, truth)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        bench._PG.clear()
