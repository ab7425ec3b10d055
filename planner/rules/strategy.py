"""Strategy: which method (full / LoRA / QLoRA) and which distribution (DDP, ZeRO-1/2/3, offload,
FSDP) to use. Two steps, both small:

1. :func:`family_order` ranks the method families from the task, data size and goal (pure rule).
2. :func:`candidates` lists the concrete setups of each family on this hardware; the glue estimates
   them and keeps, within the first family that has any setup that *fits with margin*, the fastest.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.errors import FtplanError
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
    §7), offload adds PCIe traffic and CPU Adam steps. On CPU, ``world`` is the processes of
    --cpu-processes x --nodes: DDP and DeepSpeed ZeRO run there over gloo (DeepSpeed's CPU accelerator);
    no 4-bit kernels (QLoRA), no FSDP, no offload (the states already live in host RAM).
    """
    base = base.with_(distribution="single", offload_optimizer=False, offload_params=False, gpus=world)
    full = base.with_(method="full")
    lora = base.with_(method="lora")
    qlora = base.with_(method="qlora", optimizer="paged_adamw_8bit")
    out: list[Candidate] = []
    if not gpu and world == 1:
        return [Candidate("lora", "lora", lora), Candidate("full", "full", full)]
    if not gpu:
        return [
            Candidate("lora-ddp", "lora", lora.with_(distribution="ddp")),
            Candidate("lora-zero3", "lora", lora.with_(distribution="zero3")),
            *(Candidate(f"full-{d}", "full", full.with_(distribution=d)) for d in ("ddp", "zero1", "zero2", "zero3")),
        ]
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


def distribution_reason(name: str, world: int, fits: list[str], gpu: bool = True) -> str:
    others = ", ".join(n for n in fits if n != name) or "none"
    if world == 1:
        return f"one GPU: {name} (other setups that fit: {others})"
    units = "GPUs" if gpu else "CPU processes"
    return f"{world} {units}: {name} is the fastest setup of its family that fits (others that fit: {others})"


def cpu_processes_rule(processes: int, nodes: int, overrides) -> Choice[int]:
    """hardware.count of a CPU plan from --cpu-processes: training processes per node, each a rank of one
    gloo process group (DDP, or DeepSpeed ZeRO through its CPU accelerator). The --set keys that would say
    otherwise are refused rather than letting one silently win."""
    if not isinstance(processes, int) or processes < 1:
        raise FtplanError(f"--cpu-processes must be a positive integer, got {processes}")
    overrides = overrides or {}
    for key in ("hardware.count", "hardware.gpu", "hardware.nodes"):
        if key in overrides:
            raise FtplanError(
                f"--set {key}={overrides[key]} and --cpu-processes {processes} both set the hardware",
                hint="keep one: --cpu-processes N [--nodes M] plans N CPU processes on each of M machines",
            )
    world = processes * nodes
    dist = str(overrides.get("strategy.distribution", "")).strip()
    if world > 1 and dist in ("single", "fsdp"):
        raise FtplanError(
            f"--set strategy.distribution={dist}: {world} CPU processes need ddp, zero1, zero2 or zero3",
            hint="drop the --set to let the rules choose, or use --cpu-processes 1 --nodes 1 for one process",
        )
    where = f"on each of {nodes} nodes" if nodes > 1 else "on this machine"
    return Choice(
        processes,
        f"--cpu-processes {processes}: {processes} training process(es) {where}, world size {world}, "
        "one gloo process group (DDP, or DeepSpeed ZeRO on its CPU accelerator)",
        CPU_DISTRIBUTED_SOURCE,
    )


CPU_DISTRIBUTED_SOURCE = (
    "PyTorch distributed docs (gloo: the CPU backend); deepspeed/accelerator/cpu_accelerator.py"
)


DISTRIBUTION_SOURCE = ZERO + "; " + SEED_STRATEGIES
QLORA_SOURCE = QLORA
