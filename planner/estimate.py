"""One strategy's full estimate (memory + verdict + time + cost) and the side-by-side table.

INTERFACE (used by rules, render, wizard, CLI):
  estimate(spec, setup, hardware, *, tokens, epochs=1.0) -> StrategyEstimate
  standard_strategies(spec, hardware, *, seq_len, micro_batch=1, ...) -> list[(name, TrainSetup)]
  estimate_all(spec, hardware, *, seq_len, micro_batch, tokens, epochs) -> list[StrategyEstimate]
  max_micro_batch(spec, setup, hardware) -> int ; max_seq_len(spec, setup, hardware) -> int
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from planner.memory import MemoryBreakdown, TrainSetup

Verdict = Literal["fits", "tight", "exceeds", "cpu"]


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
