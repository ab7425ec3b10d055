"""VRAM per GPU of a fine-tuning run, as a breakdown in bytes.

INTERFACE: TrainSetup and MemoryBreakdown below are the contract used by cost/rules/render/executor.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Method = Literal["full", "lora", "dora", "qlora", "ia3", "prompt", "prefix"]
DType = Literal["bf16", "fp16", "fp32"]
Optimizer = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor"]
AttnImpl = Literal["sdpa", "flash_attention_2", "eager"]
Distribution = Literal["single", "ddp", "zero1", "zero2", "zero3", "fsdp"]


@dataclass(frozen=True)
class TrainSetup:
    """The knobs that decide memory and time; one strategy = one TrainSetup."""

    method: Method = "lora"
    dtype: DType = "bf16"  # compute dtype (and weight dtype unless mixed_precision)
    mixed_precision: bool = False  # fp32 master weights/grads/optimizer + 16-bit autocast compute
    seq_len: int = 2048
    micro_batch: int = 1
    grad_ckpt: bool = False
    optimizer: Optimizer = "adamw"
    attn_impl: AttnImpl = "sdpa"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: tuple[str, ...] = ("all-linear",)  # or module names like ("q_proj", "v_proj")
    num_virtual_tokens: int = 20  # prompt / prefix tuning
    gpus: int = 1  # world size (all nodes)
    distribution: Distribution = "single"
    offload_optimizer: bool = False  # ZeRO / FSDP CPU offload of optimizer states
    offload_params: bool = False  # ZeRO-3 / FSDP CPU offload of parameters
    grad_accum: int = 1

    def with_(self, **changes) -> "TrainSetup":
        return replace(self, **changes)

    @property
    def zero_stage(self) -> int:
        return {"zero1": 1, "zero2": 2, "zero3": 3}.get(self.distribution, 0)


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU. ``peak_allocated`` ~ torch.cuda.max_memory_allocated(); ``total`` = what the
    device must have free (peak + allocator fragmentation + CUDA context)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    temporary: int  # logits + fp32 upcast for the loss, optimizer step buffers, all-gather buffers
    peak_allocated: int
    overhead: int  # CUDA context + caching-allocator reserve
    total: int
    cpu_bytes: int = 0  # host RAM needed by offload (0 without offload)
    notes: tuple[str, ...] = field(default_factory=tuple)
