"""One strategy's full estimate (memory + verdict + time + cost) and the side-by-side table.

Used by the rules, render, the wizard and the CLI:
  estimate(spec, setup, hardware, *, tokens, epochs=1.0) -> StrategyEstimate
  standard_strategies(spec, hardware, *, seq_len, micro_batch=1, ...) -> list[(name, TrainSetup)]
  estimate_all(spec, hardware, *, seq_len, micro_batch, tokens, epochs) -> list[StrategyEstimate]
  max_micro_batch(spec, setup, hardware) -> int ; max_seq_len(spec, setup, hardware) -> int
  cheapest_and_fastest(spec, setup, *, tokens, epochs) -> (StrategyEstimate | None, StrategyEstimate | None)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from planner.cost import time_and_cost
from planner.memory import MemoryBreakdown, TrainSetup, estimate_memory
from planner.vocab import ADAPTER_METHODS, DEFAULT_LORA_R

if TYPE_CHECKING:  # pragma: no cover
    from planner.hardware import Hardware
    from planner.model_spec import ModelSpec

Verdict = Literal["fits", "tight", "exceeds", "cpu"]

# Safety margin of the verdict: "fits" needs total <= 90% of the free memory. The estimator's measured
# error is <= 10% at worst on the benchmark (BENCHMARKS.md "Memory accuracy"), and real batches vary in
# length around the planned seq_len; 10% covers both. Within the last 10%: "tight".
SAFETY_MARGIN = 0.10
MAX_SEARCH_BATCH = 4096
MAX_SEARCH_SEQ = 1 << 20


@dataclass(frozen=True)
class StrategyEstimate:
    name: str  # e.g. "full-bf16", "full-mixed", "lora", "qlora", "zero3-offload", "fsdp"
    setup: TrainSetup
    total_params: int
    trainable_params: int
    memory: MemoryBreakdown
    verdict: Verdict  # fits: total <= (1 - margin) * free; tight: within the margin; exceeds
    headroom_bytes: int  # free memory per GPU minus memory.total (negative when exceeding)
    max_micro_batch: int  # largest micro-batch that fits at setup.seq_len (0 if none)
    max_seq_len: int  # longest sequence that fits at setup.micro_batch (0 if none)
    tokens: int  # tokens processed (all epochs)
    flops: float  # training FLOPs (all epochs, incl. recompute / dequant)
    time_hours: float
    cost_usd: float
    tokens_per_second: float
    gpu_name: str = ""
    gpus: int = 1
    notes: tuple[str, ...] = ()  # time/cost caveats (CPU-only rate, ...); memory caveats are in memory.notes

    @property
    def fits(self) -> bool:
        return self.verdict in ("fits", "tight")

    def to_dict(self) -> dict:
        """JSON-ready (``ftplan estimate --json``)."""
        m = self.memory
        return {
            "name": self.name,
            "model": {"total_params": self.total_params, "trainable_params": self.trainable_params},
            "setup": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.setup.__dict__.items()},
            "gpu": self.gpu_name or None,
            "gpus": self.gpus,
            "per_gpu_bytes": m.to_dict(),
            "peak_phase": m.phase,
            "cpu_bytes": m.cpu_bytes,
            "fits": self.fits,
            "verdict": self.verdict,
            "headroom_bytes": self.headroom_bytes,
            "max_micro_batch": self.max_micro_batch,
            "max_seq_len": self.max_seq_len,
            "tokens": self.tokens,
            "flops": self.flops,
            "time_hours": self.time_hours,
            "cost_usd": self.cost_usd,
            "tokens_per_second": self.tokens_per_second,
            "notes": list(m.notes) + list(self.notes),
        }


def verdict_for(total: int, hardware: Hardware) -> Verdict:
    if hardware.gpu is None:
        return "cpu"
    free = hardware.free_memory_bytes
    if total <= (1.0 - SAFETY_MARGIN) * free:
        return "fits"
    return "tight" if total <= free else "exceeds"


def on_hardware(setup: TrainSetup, hardware: Hardware) -> TrainSetup:
    """``setup`` with the GPU kind of ``hardware`` (the device total's context and workspaces depend on it)."""
    if hardware.gpu is None or setup.gpu_kind:
        return setup
    return setup.with_(gpu_kind=hardware.gpu.name)


def _fits(spec: ModelSpec, setup: TrainSetup, hardware: Hardware) -> bool:
    if hardware.gpu is None:
        return False
    setup = on_hardware(setup, hardware)
    return estimate_memory(spec, setup).total <= (1.0 - SAFETY_MARGIN) * hardware.free_memory_bytes


def largest_fitting(fits, hi: int) -> int:
    """Largest x in [1, hi] with fits(x), 0 if none. Memory is monotone in x, so doubling then bisection
    needs only O(log hi) estimates."""
    if hi < 1 or not fits(1):
        return 0
    lo = 1
    while lo * 2 <= hi and fits(lo * 2):
        lo *= 2
    top = min(hi, lo * 2)
    if top == lo:
        return lo
    hi_bad = top + 1 if fits(top) else top  # first known failure (or beyond the cap)
    if hi_bad > top:
        return top
    while hi_bad - lo > 1:
        mid = (lo + hi_bad) // 2
        if fits(mid):
            lo = mid
        else:
            hi_bad = mid
    return lo


def max_micro_batch(spec: ModelSpec, setup: TrainSetup, hardware: Hardware) -> int:
    """Largest micro-batch that "fits" (with the safety margin) at ``setup.seq_len``; 0 if none."""
    return largest_fitting(lambda b: _fits(spec, setup.with_(micro_batch=b), hardware), MAX_SEARCH_BATCH)


def max_seq_len(spec: ModelSpec, setup: TrainSetup, hardware: Hardware) -> int:
    """Longest sequence (capped by the model's max_position_embeddings) that fits at
    ``setup.micro_batch``; 0 if none."""
    cap = min(MAX_SEARCH_SEQ, spec.max_position_embeddings or MAX_SEARCH_SEQ)
    return largest_fitting(lambda s: _fits(spec, setup.with_(seq_len=s), hardware), cap)


def estimate(
    spec: ModelSpec, setup: TrainSetup, hardware: Hardware, *, tokens: int, epochs: float = 1.0,
    name: str | None = None, search: bool = True, steps: int | None = None,
) -> StrategyEstimate:
    """Memory, verdict, largest batch/sequence, time and cost of one strategy on ``hardware``.

    ``steps``: optimizer steps of the run when the caller knows them (per-step overhead of the time
    model); None derives them from ``tokens`` as packed rows."""
    setup = on_hardware(setup, hardware)
    mem = estimate_memory(spec, setup)
    verdict = verdict_for(mem.total, hardware)
    tc = time_and_cost(spec, setup, hardware, tokens=tokens, epochs=epochs, steps=steps)
    trainable = spec.param_counts().total if setup.method == "full" else _trainable_params(spec, setup)
    return StrategyEstimate(
        name=name or strategy_name(setup),
        setup=setup,
        total_params=spec.param_counts().total,
        trainable_params=trainable,
        memory=mem,
        verdict=verdict,
        headroom_bytes=(hardware.free_memory_bytes - mem.total) if hardware.gpu else 0,
        max_micro_batch=max_micro_batch(spec, setup, hardware) if search else 0,
        max_seq_len=max_seq_len(spec, setup, hardware) if search else 0,
        tokens=int(tokens * epochs),
        flops=tc.flops,
        time_hours=tc.hours,
        cost_usd=tc.cost_usd,
        tokens_per_second=tc.tokens_per_second,
        gpu_name=hardware.gpu.name if hardware.gpu else "cpu",
        gpus=setup.gpus,
        notes=tc.notes,
    )


def _trainable_params(spec: ModelSpec, setup: TrainSetup) -> int:
    from planner.memory import _trainable

    return _trainable(spec, setup)


def strategy_name(setup: TrainSetup) -> str:
    """Short label: full-bf16, full-mixed, lora, qlora..., prefixed by the distribution (zero3-offload...)."""
    base = f"full-{'mixed' if setup.mixed_precision else setup.precision}" if setup.method == "full" else setup.method
    if setup.distribution == "single":
        return base
    dist = setup.distribution + ("-offload" if setup.offload_optimizer or setup.offload_params else "")
    return dist if base == "full-mixed" and dist != "ddp" else f"{dist}-{base}"


def standard_strategies(
    spec: ModelSpec, hardware: Hardware, *, seq_len: int, micro_batch: int = 1, gpus: int | None = None,
    gradient_checkpointing: bool = False, attn_implementation: str = "sdpa", lora_r: int = DEFAULT_LORA_R,
    lora_target_modules: tuple[str, ...] = ("all-linear",), optimizer: str = "adamw", lora_dropout: float = 0.0,
    **settings,
) -> list[tuple[str, TrainSetup]]:
    """Every strategy the planner compares: full fp32 / mixed / pure 16-bit, LoRA, QLoRA, prompt and
    prefix tuning; with more than one GPU also DDP, ZeRO-1/2/3, ZeRO-3 with CPU offload and FSDP.
    ``settings``: more TrainSetup fields for every strategy (grad_accum, fused_loss, ...); qlora_upcast
    reaches QLoRA only, modules_to_save the LoRA-family strategies only."""
    rows = _standard(spec, hardware, seq_len=seq_len, micro_batch=micro_batch, gpus=gpus,
                     gradient_checkpointing=gradient_checkpointing, attn_implementation=attn_implementation,
                     lora_r=lora_r, lora_target_modules=lora_target_modules, optimizer=optimizer,
                     lora_dropout=lora_dropout)
    out = []
    for name, setup in rows:
        extra = dict(settings)
        if setup.method != "qlora":
            extra.pop("qlora_upcast", None)
        if setup.method not in ADAPTER_METHODS:
            extra.pop("modules_to_save", None)
        out.append((name, setup.with_(**extra)))
    return out


def _standard(
    spec: ModelSpec, hardware: Hardware, *, seq_len: int, micro_batch: int, gpus: int | None,
    gradient_checkpointing: bool, attn_implementation: str, lora_r: int, lora_target_modules: tuple[str, ...],
    optimizer: str, lora_dropout: float,
) -> list[tuple[str, TrainSetup]]:
    n = gpus or (hardware.total_gpus if hardware.gpu else 1)
    half = "bf16" if (hardware.gpu is None or hardware.bf16) else "fp16"
    common = {"seq_len": seq_len, "micro_batch": micro_batch, "gradient_checkpointing": gradient_checkpointing,
              "attn_implementation": attn_implementation, "lora_r": lora_r,
              "lora_target_modules": tuple(lora_target_modules), "optimizer": optimizer, "gpus": 1,
              "lora_dropout": lora_dropout}
    single = [
        ("full-fp32", TrainSetup(method="full", precision="fp32", **common)),
        ("full-mixed", TrainSetup(method="full", precision=half, mixed_precision=True, **common)),
        (f"full-{half}", TrainSetup(method="full", precision=half, **common)),
        ("lora", TrainSetup(method="lora", precision=half, **common)),
        ("qlora", TrainSetup(method="qlora", precision=half, **{**common, "optimizer": "paged_adamw_8bit"})),
        ("prompt", TrainSetup(method="prompt", precision=half, **common)),
        ("prefix", TrainSetup(method="prefix", precision=half, **common)),
    ]
    if n <= 1:
        return single
    multi = dict(common, gpus=n)
    full = {"method": "full", "precision": half, "mixed_precision": True}
    dist = [
        ("ddp-lora", TrainSetup(method="lora", precision=half, distribution="ddp", **multi)),
        ("ddp-full-mixed", TrainSetup(distribution="ddp", **full, **multi)),
        ("zero1", TrainSetup(distribution="zero1", **full, **multi)),
        ("zero2", TrainSetup(distribution="zero2", **full, **multi)),
        ("zero3", TrainSetup(distribution="zero3", **full, **multi)),
        ("zero3-offload", TrainSetup(distribution="zero3", offload_optimizer=True, offload_params=True,
                                     **full, **multi)),
        ("fsdp", TrainSetup(distribution="fsdp", **full, **multi)),
    ]
    return single + dist


def estimate_all(
    spec: ModelSpec, hardware: Hardware, *, seq_len: int, micro_batch: int = 1, tokens: int,
    epochs: float = 1.0, gpus: int | None = None, **options,
) -> list[StrategyEstimate]:
    """``estimate`` for every standard strategy."""
    return [
        estimate(spec, setup, hardware, tokens=tokens, epochs=epochs, name=name)
        for name, setup in standard_strategies(spec, hardware, seq_len=seq_len, micro_batch=micro_batch,
                                               gpus=gpus, **options)
    ]


CATALOG_COUNTS = (1, 2, 4, 8)


def cheapest_and_fastest(
    spec: ModelSpec, setup: TrainSetup, *, tokens: int, epochs: float = 1.0,
) -> tuple[StrategyEstimate | None, StrategyEstimate | None]:
    """Over the GPU catalog x {1, 2, 4, 8} GPUs: the cheapest and the fastest configuration on which
    ``setup``'s method fits (multi-GPU: the same method data-parallel, full fine-tuning with ZeRO-3)."""
    from planner.hardware import Hardware, gpu_catalog

    fitting: list[StrategyEstimate] = []
    for gpu in gpu_catalog().values():
        if getattr(gpu, "generic", False):
            continue
        for count in CATALOG_COUNTS:
            hw = Hardware(gpu=gpu, count=count, free_memory_bytes=gpu.memory_bytes, detected=False)
            s = _on(setup, count, gpu.bf16)
            est = estimate(spec, s, hw, tokens=tokens, epochs=epochs, search=False)
            if est.verdict == "fits" and est.time_hours != float("inf"):
                fitting.append(est)
                break  # more GPUs of the same type cost the same and only go faster: keep the smallest
    if not fitting:
        return None, None
    cheapest = min(fitting, key=lambda e: (e.cost_usd, e.time_hours))
    fastest = min(_with_more_gpus(spec, setup, fitting, tokens, epochs), key=lambda e: (e.time_hours, e.cost_usd))
    return cheapest, fastest


def _on(setup: TrainSetup, count: int, bf16: bool) -> TrainSetup:
    precision = setup.precision if (bf16 or setup.precision != "bf16") else "fp16"
    if count == 1:
        return replace(setup, gpus=1, distribution="single", precision=precision, offload_optimizer=False,
                       offload_params=False)
    dist = "zero3" if setup.method == "full" else "ddp"
    return replace(setup, gpus=count, distribution=dist, precision=precision, offload_optimizer=False,
                   offload_params=False)


def _with_more_gpus(spec, setup, fitting, tokens, epochs) -> list[StrategyEstimate]:
    """For the fastest: each fitting GPU type also at 8 GPUs (more GPUs finish sooner)."""
    from planner.hardware import Hardware

    out = list(fitting)
    for est in fitting:
        if est.gpus < CATALOG_COUNTS[-1]:
            gpu = next(iter([g for g in _catalog() if g.name == est.gpu_name]), None)
            if gpu is None:
                continue
            n = CATALOG_COUNTS[-1]
            hw = Hardware(gpu=gpu, count=n, free_memory_bytes=gpu.memory_bytes, detected=False)
            e = estimate(spec, _on(setup, n, gpu.bf16), hw, tokens=tokens, epochs=epochs, search=False)
            if e.verdict == "fits":
                out.append(e)
    return out


def _catalog():
    from planner.hardware import gpu_catalog

    return list(gpu_catalog().values())
