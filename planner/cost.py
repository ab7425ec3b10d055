"""Training FLOPs -> hours -> money, method-aware.

FLOPs per token (N = parameters touched per token, MoE: active experts only):
* forward 2N, backward 4N (2N for activation gradients + 2N for weight gradients): 6N for full
  fine-tuning (Kaplan et al. 2020 sec. 2.1; Hoffmann et al. 2022 "Chinchilla" appendix F);
* attention scores add 12 * L * h_attn * s per token over forward + backward with causal masking halving
  the useful work (PaLM, Chowdhery et al. 2022, appendix B: 6N + 12 L H Q T); we count the causal half
  as flash/sdpa kernels skip the masked blocks;
* frozen base (LoRA/QLoRA/prompt/prefix): no weight gradients for the base, so ~4N + adapter work
  (LoRA paper, Hu et al. 2021 sec. 4.2 reports ~25% higher throughput for GPT-3 175B);
* gradient checkpointing recomputes the forward: + 2N per token (Chen et al. 2016; the HF docs quote
  ~20-30% slowdown);
* QLoRA dequantises every NF4 weight in forward and backward: modelled as a lower utilisation
  (QLORA_SLOWDOWN) rather than FLOPs.

Hours = FLOPs / (gpus * peak dense TFLOPS * MFU) + optimizer steps x per-step overhead (below): the
training steps only (evaluation, loading and checkpoint saves are not modelled). The MFU figures below
are the utilisation a HF Trainer run reaches in practice (public measurements cited per entry); they are deliberately
conservative because the planner must not promise a run that takes longer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from planner.vocab import ADAPTER_METHODS

if TYPE_CHECKING:  # pragma: no cover
    from planner.hardware import Hardware
    from planner.memory import TrainSetup
    from planner.model_spec import ModelSpec

# Model FLOPs utilisation (MFU = model FLOPs / (time x peak dense TFLOPS)) assumed per method. Public
# reference points: PaLM 540B 46% (Chowdhery et al. 2022, table 3), Gopher 32.5%, GPT-3 21% (same table);
# Llama 3 405B 38-43% bf16 on H100 with 4D parallelism (Llama Team 2024, table 4); LMMs-Engine reports
# 50-55% for Qwen2.5-7B with FSDP2 + packing + Liger kernels on A800 (lmms-engine docs, "MFU reference").
# A plain HF Trainer fine-tuning run (no packing, unfused kernels, small micro-batches) is below those:
# we assume 0.38 for full fine-tuning of >= 7B models. These are assumptions, not measurements of this
# project (no GPU in its sessions); ``ftplan run`` reports the measured throughput next to this figure.
# - small models (< 4096 hidden) cannot fill the GPU: scaled by sqrt(h / 4096), floor 0.3x;
# - LoRA: same base matmuls without weight gradients, plus small launch-bound adapter kernels: 0.30;
# - QLoRA: NF4 weights are dequantised before every matmul (forward and backward); community
#   measurements put QLoRA 20-40% slower than 16-bit LoRA on the same GPU: 0.30 / QLORA_SLOWDOWN.
MFU = {"full": 0.38, "lora": 0.30, "dora": 0.30 / 1.35, "qlora": 0.30 / 1.35, "ia3": 0.30, "prompt": 0.30,
       "prefix": 0.30}
QLORA_SLOWDOWN = 1.35  # documented above; folded into MFU["qlora"]
DORA_SLOWDOWN = 1.35  # peft DoRA docs: DoRA is slower than LoRA (weight norm every step)
# Multi-GPU scaling: data parallel over NVLink keeps ~90-95% per-GPU efficiency; ZeRO-3/FSDP gathers
# parameters every layer (~85%); CPU offload is PCIe-bound (DeepSpeed ZeRO-Offload paper, Ren et al.
# 2021: ~40% of GPU-only throughput for 10B on one V100, we take 0.5).
SCALING = {"single": 1.0, "ddp": 0.93, "zero1": 0.92, "zero2": 0.9, "zero3": 0.85, "fsdp": 0.85}
OFFLOAD_FACTOR = 0.5
# CPU-only rate: fitted on this project's 2-core development host by benchmarks/cpu_rate.py (least
# squares t_micro = overhead + FLOPs / rate over real fp32 Llama training steps, 0.2-56 GFLOP per
# micro-step: 0.153 TFLOP/s, intercept 0.012 s; BENCHMARKS.md "Time model calibration"). Bigger hosts are
# faster; the figure is deliberately the small machine's, and the executor reports the measured rate.
CPU_TFLOPS = 0.15

# Fixed per-step overhead: for small models the step time is dominated by work that does not scale with
# FLOPs (Python dispatch of every op, autograd bookkeeping, the Trainer's collator, callbacks, logging,
# the loss .item() sync, the optimizer's memory-bound update).
# CPU per micro-step: the fitted intercept of the plain loop (0.012 s) + the Trainer's own work per step,
# 0.017 s: an `ftplan run` of the demo model measured 0.064 s/step against 0.047 s for the plain loop at
# its padded batch (benchmarks/cpu_rate.py --metrics; BENCHMARKS.md).
CPU_MICRO_STEP_S = 0.03
# CPU optimizer step: torch AdamW (foreach) is memory-bound, ~1.8 ns per trainable parameter on the same
# host (0.6M params 2.3 ms, 5M 9.6 ms, 20M 37 ms: benchmarks/results/cpu_rate.json), + zero_grad.
CPU_ADAMW_S_PER_PARAM = 1.8e-9
CPU_OPTIMIZER_STEP_S = 1e-3
# GPU: kernel-launch bound. A CUDA kernel launch costs ~5 us of host time (NVIDIA CUDA C++ Best Practices
# Guide, "kernel launch overhead"; the PyTorch performance tuning guide recommends CUDA graphs for exactly
# this), and an unfused HF decoder layer launches ~100 kernels over forward + backward (norms, rotary,
# projections, sdpa, activation, residuals and their gradients). The Trainer adds ~5 ms per micro-step of
# Python, collation and logging. Assumptions: no GPU was lent to the calibration session;
# ``benchmarks/cpu_rate.py --device cuda`` measures both (intercept and per-layer slope).
GPU_LAUNCH_S = 5e-6
GPU_KERNELS_PER_LAYER = 100
GPU_MICRO_STEP_S = 5e-3
# Fused AdamW (the executor's default on GPU) is a handful of multi-tensor launches: ~1 ms per step.
GPU_OPTIMIZER_STEP_S = 1e-3


@dataclass(frozen=True)
class TimeCost:
    flops: float
    hours: float
    cost_usd: float
    tokens_per_second: float
    mfu: float
    notes: tuple[str, ...] = ()
    overhead_hours: float = 0.0  # the per-step overhead part of ``hours``


def flops_per_token(spec: ModelSpec, setup: TrainSetup) -> float:
    """Training FLOPs per token (forward + backward + recompute), method-aware."""
    n = float(spec.active_params)
    # embeddings are lookups, not matmuls (Kaplan et al. exclude them); the lm_head is a matmul.
    n -= spec.vocab_size * spec.hidden_size if not spec.tie_word_embeddings else 0
    n = max(n, 1.0)
    attn = 6.0 * spec.num_layers * spec.num_attention_heads * spec.head_dim * setup.seq_len  # fwd+bwd causal
    frozen = setup.method != "full"
    fwd = 2 * n + attn / 3
    bwd = (2 * n if frozen else 4 * n) + 2 * attn / 3
    adapters = 0.0
    if setup.method in ADAPTER_METHODS:
        # adapter matmuls: forward 2, backward 4 FLOPs per adapter parameter (they get weight gradients)
        adapters = 6.0 * spec.lora_trainable_params(setup.lora_target_modules, setup.lora_r)
    recompute = fwd if setup.gradient_checkpointing else 0.0
    return fwd + bwd + adapters + recompute


def mfu(spec: ModelSpec, setup: TrainSetup) -> float:
    base = MFU.get(setup.method, 0.3)
    size = max(0.3, min(1.0, (spec.hidden_size / 4096) ** 0.5))
    scale = SCALING.get(setup.distribution, 1.0) if setup.gpus > 1 else 1.0
    offload = OFFLOAD_FACTOR if (setup.offload_optimizer or setup.offload_params) else 1.0
    return base * size * scale * offload


def peak_tflops(hardware: Hardware, setup: TrainSetup) -> float:
    gpu = hardware.gpu
    if gpu is None:
        return 0.0
    if setup.precision == "fp32" and not setup.mixed_precision and setup.method != "qlora":
        # fp32 matmuls use TF32 tensor cores only when torch.backends.cuda.matmul.allow_tf32 is set
        # (off by default since torch 1.12): plain fp32 peak.
        return gpu.fp32_tflops
    if setup.precision == "bf16" and gpu.bf16_tflops:
        return gpu.bf16_tflops
    return gpu.fp16_tflops or gpu.bf16_tflops


def optimizer_steps(setup: TrainSetup, total_tokens: float) -> int:
    """Optimizer steps when the caller does not know them: packed rows of seq_len tokens."""
    per_step = setup.micro_batch * setup.sequences_per_row * setup.seq_len * max(1, setup.gpus) * setup.grad_accum
    return int(-(-total_tokens // per_step)) if total_tokens else 0


def step_overhead_seconds(spec: ModelSpec, setup: TrainSetup, *, gpu: bool) -> float:
    """Fixed seconds per optimizer step (grad_accum micro-steps + one optimizer step), see above."""
    if not gpu:
        from planner.memory import _trainable

        adamw = CPU_ADAMW_S_PER_PARAM * _trainable(spec, setup) if setup.optimizer != "sgd" else 0.0
        return setup.grad_accum * CPU_MICRO_STEP_S + CPU_OPTIMIZER_STEP_S + adamw
    layers = spec.num_layers * (2 if setup.gradient_checkpointing else 1)  # checkpointing relaunches the forward
    micro = GPU_MICRO_STEP_S + GPU_LAUNCH_S * GPU_KERNELS_PER_LAYER * layers
    return setup.grad_accum * micro + GPU_OPTIMIZER_STEP_S


def time_and_cost(
    spec: ModelSpec, setup: TrainSetup, hardware: Hardware, *, tokens: int, epochs: float = 1.0,
    steps: int | None = None,
) -> TimeCost:
    """FLOPs, training hours and dollars for ``tokens`` training tokens x ``epochs`` on ``hardware``.

    ``steps``: optimizer steps of the whole run (the rules count them from the data); None derives them
    from the tokens as packed seq_len rows. Training time only: evaluation, checkpoint saving and model
    loading are not included (the executor reports them in its wall time).
    """
    total_tokens = float(tokens) * float(epochs)
    flops = flops_per_token(spec, setup) * total_tokens
    gpus = max(1, setup.gpus)
    n_steps = optimizer_steps(setup, total_tokens) if steps is None else max(0, int(steps))
    fixed = n_steps * step_overhead_seconds(spec, setup, gpu=hardware.gpu is not None) / 3600.0
    if hardware.gpu is None:
        rate = CPU_TFLOPS * 1e12
        hours = (flops / rate / 3600.0 + fixed) if total_tokens else 0.0
        note = (f"CPU only: training time from {CPU_TFLOPS} TFLOP/s and "
                f"{step_overhead_seconds(spec, setup, gpu=False):.3f} s per optimizer step, measured on an idle "
                "2-core host (BENCHMARKS.md); training steps only, evaluation and checkpoint saves not included")
        return TimeCost(flops, hours, 0.0, total_tokens / (hours * 3600) if hours else 0.0, 0.0, (note,), fixed)
    u = mfu(spec, setup)
    rate = gpus * peak_tflops(hardware, setup) * 1e12 * u
    hours = flops / rate / 3600.0 + fixed if rate > 0 else float("inf")
    price = hardware.hourly_price
    cost = hours * gpus * price
    tps = total_tokens / (hours * 3600.0) if hours and hours != float("inf") else 0.0
    return TimeCost(flops, hours, cost, tps, u, (), fixed)
