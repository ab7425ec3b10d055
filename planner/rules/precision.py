"""Numeric precision, attention implementation and optimizer choice."""

from __future__ import annotations

from typing import TYPE_CHECKING

from planner.memory import unquantized_expert_params
from planner.rules.common import MIXED, QLORA, Choice

if TYPE_CHECKING:  # pragma: no cover
    from planner.memory import TrainSetup
    from planner.model_spec import ModelSpec

# Models whose attention needs the eager path in transformers: Gemma-2 soft-caps attention logits,
# which SDPA/FlashAttention kernels do not implement (transformers Gemma2 docs recommend eager for
# training).
EAGER_MODEL_TYPES = ("gemma2",)


def precision_rule(hardware) -> Choice[str]:
    """bf16 where the GPU supports it (compute capability >= 8.0), fp16 with loss scaling before that,
    fp32 on CPU."""
    if hardware.gpu is None:
        return Choice("fp32", "no GPU: CPU training runs in fp32", "PyTorch CPU autocast support is partial")
    name = hardware.gpu.name
    if hardware.bf16:
        return Choice(
            "bf16",
            f"{name} supports bf16 (compute capability >= 8.0): same range as fp32, no loss scaling",
            MIXED + "; NVIDIA Ampere whitepaper",
        )
    return Choice(
        "fp16", f"{name} has no bf16 (compute capability < 8.0): fp16 with dynamic loss scaling", MIXED
    )


def mixed_precision_rule(method: str, precision: str) -> Choice[bool]:
    if method == "full" and precision != "fp32":
        return Choice(
            True,
            f"full fine-tuning keeps fp32 master weights and optimizer states with {precision} "
            "compute (pure 16-bit Adam updates lose small steps)",
            MIXED,
        )
    if precision == "fp32":
        return Choice(False, "fp32 throughout", "")
    return Choice(
        False,
        f"frozen base weights are stored in {precision}; adapters train in fp32 under autocast",
        "peft / transformers Trainer autocast",
    )


def attention_rule(model_type: str, hardware) -> Choice[str]:
    if model_type in EAGER_MODEL_TYPES:
        return Choice(
            "eager",
            f"{model_type} soft-caps attention logits, which only the eager path implements",
            "transformers Gemma2 documentation",
        )
    if hardware.gpu is None:
        return Choice(
            "sdpa",
            "PyTorch scaled_dot_product_attention (portable, CPU too)",
            "torch.nn.functional.scaled_dot_product_attention",
        )
    return Choice(
        "sdpa",
        "PyTorch SDPA: dispatches to FlashAttention-2/memory-efficient kernels without an "
        "extra package (flash_attention_2 via --set if flash-attn is installed)",
        "torch.nn.functional.scaled_dot_product_attention docs",
    )


def optimizer_rule(method: str, hardware) -> Choice[str]:
    if method == "qlora":
        return Choice(
            "paged_adamw_8bit",
            "QLoRA's paged optimizer absorbs memory spikes on long batches",
            QLORA + " §3 'Paged Optimizers'; bitsandbytes",
        )
    if hardware.gpu is None:
        return Choice("adamw", "AdamW (torch)", "")
    return Choice("adamw", "AdamW (torch fused)", "Loshchilov & Hutter 2019, AdamW")


def qlora_upcast_rule(distribution: str, fused_experts: bool) -> Choice[bool]:
    """Whether QLoRA upcasts every non-quantized parameter to fp32 (peft prepare_model_for_kbit_training)."""
    if distribution in ("fsdp", "zero3"):
        return Choice(
            False,
            "sharded QLoRA keeps the non-quantized weights in bf16 (FSDP/ZeRO-3 need one storage dtype); TRL "
            "skips the fp32 upcast there too",
            "trl/models/utils.py prepare_peft_model (is_sharded_qlora); Answer.AI FSDP-QLoRA",
        )
    if fused_experts:
        return Choice(
            False,
            "the MoE experts are fused tensors bitsandbytes does not quantize: an fp32 upcast would double them",
            "transformers integrations/bitsandbytes.py replace_with_bnb_linear (nn.Linear only)",
        )
    return Choice(
        True,
        "peft's k-bit preparation: norms, embeddings and head in fp32 for stable training",
        QLORA + "; peft prepare_model_for_kbit_training",
    )


def qlora_upcast_for(setup: TrainSetup, spec: ModelSpec) -> Choice[bool]:
    """``qlora_upcast_rule`` for this setup's distribution and this model's experts."""
    return qlora_upcast_rule(setup.distribution, unquantized_expert_params(spec) > 0)
