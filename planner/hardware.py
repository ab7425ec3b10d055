"""GPU catalog and probe.

INTERFACE: GPUType and Hardware below are the contract used by memory/cost/rules/wizard.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GPUType:
    name: str  # catalog key, e.g. "A100-80GB", "H100-SXM", "RTX-4090"
    memory_bytes: int  # total device memory
    bf16_tflops: float  # peak dense bf16 tensor TFLOPS (0 when unsupported)
    fp16_tflops: float  # peak dense fp16 tensor TFLOPS
    fp32_tflops: float  # peak fp32 (non-tensor) TFLOPS
    compute_capability: tuple[int, int]
    price_per_hour: float  # USD per GPU-hour, typical on-demand cloud price
    memory_bandwidth_gbs: float = 0.0
    source: str = ""  # where the figures come from (datasheet URL / price source)

    @property
    def bf16(self) -> bool:
        """bf16 needs compute capability >= 8.0 (Ampere)."""
        return self.compute_capability >= (8, 0)


@dataclass(frozen=True)
class Hardware:
    gpu: GPUType | None  # None: no GPU (CPU only)
    count: int  # GPUs per node
    free_memory_bytes: int  # per GPU, what a run may use (probe: free now; named: total)
    detected: bool  # True when read from pynvml
    nodes: int = 1
    cpu_memory_bytes: int = 0  # host RAM (for offload verdicts); 0 = unknown
    price_per_hour: float | None = None  # user override per GPU-hour

    @property
    def memory_bytes(self) -> int:
        return self.gpu.memory_bytes if self.gpu else 0

    @property
    def bf16(self) -> bool:
        return bool(self.gpu and self.gpu.bf16)

    @property
    def hourly_price(self) -> float:
        if self.price_per_hour is not None:
            return self.price_per_hour
        return self.gpu.price_per_hour if self.gpu else 0.0
