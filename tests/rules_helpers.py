"""Shared helpers for the rule-engine, plan-schema and render tests: profiles built from numbers
(no 200K-row files), named hardware, and a PlanRequest factory."""

from __future__ import annotations

from planner.dataset.profile import DataProfile, InvalidRow

FIXED_VERSIONS = {"ftplan": "0.0.0-test"}  # rendered files must not depend on installed versions


def make_profile(
    rows: int,
    *,
    mean: float = 300,
    p50: int | None = None,
    p95: int | None = None,
    p99: int | None = None,
    max_len: int | None = None,
    response_mean: float = 120,
    fmt: str = "alpaca",
    duplicates: int = 0,
    invalid: int = 0,
    labels: dict | None = None,
    path: str = "data/train.jsonl",
    fields: tuple[str, ...] = (),
) -> DataProfile:
    """A DataProfile with plausible percentiles around ``mean`` tokens per example."""
    p50 = p50 or int(mean * 0.9)
    p95 = p95 or int(mean * 2.0)
    p99 = p99 or int(mean * 2.8)
    max_len = max_len or int(mean * 4)
    fields = fields or {
        "alpaca": ("instruction", "input", "output"),
        "chat": ("messages",),
        "text": ("text",),
        "preference": ("prompt", "chosen", "rejected"),
        "classification": ("text", "label"),
    }.get(fmt, ("prompt", "completion"))
    return DataProfile(
        path=path,
        file_format="jsonl",
        format=fmt,
        fields=fields,
        rows=rows + invalid,
        valid_rows=rows,
        duplicates=duplicates,
        empty_rows=0,
        invalid=tuple(InvalidRow(i + 2, "not valid JSON") for i in range(min(invalid, 50))),
        invalid_count=invalid,
        tokens_p50=p50,
        tokens_p95=p95,
        tokens_p99=p99,
        tokens_max=max_len,
        tokens_mean=float(mean),
        total_tokens=int(rows * mean),
        response_tokens_mean=float(response_mean),
        tokenizer="heuristic:test",
        sha256="0" * 64,
        size_bytes=int(rows * mean * 4),
        label_counts=dict(labels or {}),
        sequences_per_row=2 if fmt == "preference" else 1,  # as the profiler reports DPO rows
    )


def stub_estimate(spec, setup, hardware, *, tokens, epochs=1.0):
    """A deterministic stand-in for planner.estimate.estimate with the same shape of answer.

    Used by the render/golden tests so rendered files do not change whenever the real estimator's
    coefficients are tuned; the scenario tests use the real estimator. Bytes per parameter follow
    the ZeRO paper (2+2+12 mixed precision), QLoRA ~0.55 bytes per 4-bit parameter.
    """
    from planner.estimate import StrategyEstimate
    from planner.memory import MemoryBreakdown

    P = spec.param_counts().total
    world = max(1, setup.gpus)
    shard_w = world if setup.distribution in ("zero3", "fsdp") else 1
    shard_g = world if setup.distribution in ("zero2", "zero3", "fsdp") else 1
    shard_o = world if setup.distribution in ("zero1", "zero2", "zero3", "fsdp") else 1
    if setup.method == "full":
        wb, gbytes, ob = (4, 4, 8) if setup.mixed_precision or setup.precision == "fp32" else (2, 2, 8)
        trainable = P
        weights, grads, opt = P * wb / shard_w, P * gbytes / shard_g, P * ob / shard_o
    else:
        trainable = int(P * 0.005 * setup.lora_r / 16)
        wb = 0.55 if setup.method == "qlora" else (4 if setup.precision == "fp32" else 2)
        weights = P * wb / shard_w + trainable * 4
        grads, opt = trainable * 4, trainable * 8
    if setup.offload_optimizer:
        opt = 0
    if setup.offload_params:
        weights = weights / 4
    act_per_layer = setup.seq_len * setup.micro_batch * spec.hidden_size * (2 if setup.gradient_checkpointing else 16)
    acts = act_per_layer * spec.num_layers
    temp = setup.seq_len * setup.micro_batch * spec.vocab_size * 6
    peak = int(weights + grads + opt + acts + temp)
    overhead = 1_000_000_000
    total = peak + overhead
    free = hardware.free_memory_bytes if hardware.gpu else 64_000_000_000
    gpu = hardware.gpu is not None
    verdict = ("fits" if total <= 0.9 * free else "tight" if total <= free else "exceeds") if gpu else "cpu"
    flops = (
        6 * P * tokens * epochs * (4 / 3 if setup.gradient_checkpointing else 1)
        * (2 / 3 if setup.method != "full" else 1)
    )
    tflops = (hardware.gpu.bf16_tflops or hardware.gpu.fp16_tflops) * world if gpu else 1.0
    tps = tokens / max(flops / (tflops * 1e12 * 0.4), 1e-9) if flops else 0.0
    hours = flops / (tflops * 1e12 * 0.4) / 3600 * (2.5 if setup.offload_optimizer else 1)
    cost = hours * (hardware.hourly_price * world if gpu else 0.0)
    mem = MemoryBreakdown(int(weights), int(grads), int(opt), int(acts), int(temp), peak, overhead, total)
    return StrategyEstimate(
        name=setup.method,
        setup=setup,
        total_params=P,
        trainable_params=trainable,
        memory=mem,
        verdict=verdict,
        headroom_bytes=int(free - total),
        max_micro_batch=0,
        max_seq_len=0,
        tokens=int(tokens * epochs),
        flops=flops,
        time_hours=hours,
        cost_usd=cost,
        tokens_per_second=tps,
    )
