"""Strategy: which method (full / LoRA / QLoRA) and which distribution (DDP, ZeRO-1/2/3, offload,
FSDP) to use. Two steps, both small:

1. :func:`family_order` ranks the method families from the task, data size and goal (pure rule).
2. :func:`candidates` lists the concrete setups of each family on this hardware; the glue estimates
   them and keeps, within the first family that has any setup that *fits with margin*, the fastest.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.memory import TrainSetup
from planner.rules.common import QLORA, SEED_GUIDE, SEED_STRATEGIES, ZERO, Choice

FULL_MIN_ROWS = 10_000  # seeds/001 full fine-tuning "Large dataset (10K+ examples)"; seeds/003 "10K+"
FULL_MIN_CPT_TOKENS = 5_000_000  # a domain corpus worth full continued pretraining (~10K docs x 500 tokens)


@dataclass(frozen=True)
class Candidate:
    """A named setup the glue estimates; ``family`` is full | lora | qlora."""

    name: str
    family: str
    setup: TrainSetup
    offload: bool = False


def family_order(
    task: str, train_rows: int, total_tokens: int, goal: str, *, gpu: bool = True
) -> Choice[tuple[str, ...]]:
    """Method families in order of preference (the first that fits wins)."""
    if not gpu:
        return Choice(
            ("lora", "full"),
            "no GPU: LoRA first (a third fewer FLOPs and far less memory on a CPU; no 4-bit kernels there)",
            SEED_STRATEGIES + " 'LoRA: limited compute'",
        )
    big = train_rows >= FULL_MIN_ROWS or (
        task == "continued-pretraining" and total_tokens >= FULL_MIN_CPT_TOKENS
    )
    if goal == "cost":
        return Choice(
            ("lora", "qlora", "full"),
            "goal=cost: LoRA first (fewer FLOPs, small checkpoints), QLoRA if it does not fit",
            SEED_STRATEGIES + " 'Start with LoRA'",
        )
    if task == "preference" and goal != "quality":
        return Choice(
            ("lora", "qlora", "full"),
            "DPO with LoRA: the frozen base doubles as the reference model (no second copy in memory)",
            "TRL DPOTrainer with peft (ref_model=None)",
        )
    if big:
        size = (
            f"{total_tokens / 1e6:.0f}M tokens of domain text"
            if task == "continued-pretraining"
            else f"{train_rows} examples"
        )
        return Choice(
            ("full", "lora", "qlora"),
            f"{size} (>= 10K): full fine-tuning when it fits, for the highest quality; LoRA otherwise",
            SEED_STRATEGIES + " 'Full fine-tuning: when to use'",
        )
    if goal == "quality":
        return Choice(
            ("lora", "full", "qlora"),
            f"goal=quality but only {train_rows} examples (< 10K): LoRA "
            "matches full fine-tuning on medium data; full next",
            SEED_STRATEGIES + " 'LoRA: medium dataset'",
        )
    return Choice(
        ("lora", "qlora", "full"),
        f"{train_rows} examples (< 10K): LoRA (QLoRA when LoRA does not fit)",
        SEED_STRATEGIES + " 'LoRA: limited compute, medium dataset'; " + SEED_GUIDE,
    )


def candidates(base: TrainSetup, world: int, gpu: bool, allow_offload: bool) -> list[Candidate]:
    """Every setup worth estimating on ``world`` GPUs, cheapest communication first within a family.

    Order matters only as a tie-break: ZeRO-1/2 move as many bytes as DDP, ZeRO-3 1.5x (ZeRO paper
    §7), offload adds PCIe traffic and CPU Adam steps.
    """
    base = base.with_(
        distribution="single", offload_optimizer=False, offload_params=False, gpus=world if gpu else 1
    )
    full = base.with_(method="full")
    lora = base.with_(method="lora")
    qlora = base.with_(method="qlora", optimizer="paged_adamw_8bit")
    out: list[Candidate] = []
    if not gpu:
        return [Candidate("lora", "lora", lora.with_(gpus=1)), Candidate("full", "full", full.with_(gpus=1))]
    if world == 1:
        # ZeRO/FSDP offload on a single GPU (ZeRO-Offload) is not modelled by planner.memory
        # (it requires gpus >= 2), so one GPU gets plain setups only.
        return [
            Candidate("full", "full", full),
            Candidate("lora", "lora", lora),
            Candidate("qlora", "qlora", qlora),
        ]
    for dist in ("ddp", "zero1", "zero2", "zero3"):
        out.append(Candidate(f"full-{dist}", "full", full.with_(distribution=dist)))
    if allow_offload:
        out.append(
            Candidate(
                "full-zero3-offload",
                "full",
                full.with_(distribution="zero3", offload_optimizer=True, offload_params=True),
                offload=True,
            )
        )
    out += [
        Candidate("lora-ddp", "lora", lora.with_(distribution="ddp")),
        Candidate("lora-zero3", "lora", lora.with_(distribution="zero3")),
        Candidate("qlora-ddp", "qlora", qlora.with_(distribution="ddp")),
        # FSDP + QLoRA shards the 4-bit base (PEFT docs "FSDP + QLoRA"; needs
        # bnb_4bit_quant_storage = the compute dtype).
        Candidate("qlora-fsdp", "qlora", qlora.with_(distribution="fsdp")),
    ]
    return out


def distribution_reason(name: str, world: int, fits: list[str]) -> str:
    others = ", ".join(n for n in fits if n != name) or "none"
    if world == 1:
        return f"one GPU: {name} (other setups that fit: {others})"
    return f"{world} GPUs: {name} is the fastest setup of its family that fits (others that fit: {others})"


DISTRIBUTION_SOURCE = ZERO + "; " + SEED_STRATEGIES
QLORA_SOURCE = QLORA
