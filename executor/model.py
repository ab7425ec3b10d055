"""build_model(plan, tokenizer): the base model as the plan says (dtype, attention, 4-bit), then PEFT.

Methods are a registry of PEFT-config builders (peft's own ``PeftType`` names each one); ``full`` has
none and trains every weight.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from planner.errors import FtplanError
from planner.plan import Plan

PEFT_METHODS = ("lora", "dora", "qlora", "ia3", "prompt", "prefix")


def torch_dtype(name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def load_dtype(plan: Plan):
    """Dtype the weights are loaded in.

    Full fine-tuning with ``mixed_precision`` keeps fp32 master weights and lets autocast compute in
    16 bits (Micikevicius et al. 2018, the Trainer's ``bf16``/``fp16`` flags); without it, the weights
    themselves are 16-bit ("pure bf16"). PEFT methods freeze the base, so it is loaded in the compute
    dtype; PEFT keeps the trainable adapter in fp32 (``autocast_adapter_dtype=True``, peft/tuners/tuners_utils.py).
    """
    if plan.strategy.method == "full" and plan.strategy.mixed_precision:
        return torch_dtype("fp32")
    return torch_dtype(plan.strategy.precision)


def is_head_classification(plan: Plan) -> bool:
    return plan.task == "classification" and plan.training.classification_mode == "head"


def quantization_config(plan: Plan):
    """QLoRA (Dettmers et al. 2023): NF4 storage, double quantization, 16-bit compute."""
    if plan.strategy.method != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    compute = "fp16" if plan.strategy.precision == "fp16" else "bf16"  # the QLoRA paper computes in bf16
    sharded = plan.strategy.distribution in ("fsdp", "zero3")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=plan.strategy.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(compute),
        # sharded QLoRA: the packed 4-bit data stored in the compute dtype so FSDP/ZeRO-3 shard and gather it
        # with the other weights (uint8 storage is left out of sharding: every rank would hold the whole
        # base). Answer.AI FSDP-QLoRA; transformers docs "FSDP-QLoRA"; planner.sharding gathers packed NF4.
        bnb_4bit_quant_storage=torch_dtype(compute) if sharded else None,
    )


def load_base_model(plan: Plan, tokenizer, labels: list[str] | None = None):
    """from_pretrained with the plan's dtype, attention implementation and quantization (no PEFT yet)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs: dict = {
        "dtype": load_dtype(plan),
        "attn_implementation": plan.strategy.attn_implementation,
        "use_safetensors": True,
        "trust_remote_code": plan.model.trust_remote_code,
        "revision": plan.model.revision,
    }
    qconfig = quantization_config(plan)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        if torch.cuda.is_available():  # bitsandbytes quantizes on the device the weights land on
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # this process's GPU
    if is_head_classification(plan):
        assert labels, "classification head needs the label set"
        cls = AutoModelForSequenceClassification
        kwargs.update(
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            pad_token_id=tokenizer.pad_token_id,
        )
    else:
        cls = AutoModelForCausalLM
    try:
        model = cls.from_pretrained(plan.model.name_or_path, **kwargs)
    except (OSError, ValueError, ImportError) as exc:  # missing files, bad config, absent attention kernel
        raise FtplanError(
            f"model.name_or_path '{plan.model.name_or_path}': cannot load the model ({_first_line(exc)})",
            hint="point plan.yaml at a local model folder (config.json + safetensors) or a reachable hub id",
        ) from None
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        # model.added_tokens grew the vocabulary: one new embedding (and untied lm_head) row per token,
        # initialised from the old rows' mean and covariance (transformers resize_token_embeddings)
        model.resize_token_embeddings(len(tokenizer))
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def _task_type(plan: Plan) -> str:
    return "SEQ_CLS" if is_head_classification(plan) else "CAUSAL_LM"


def _target_modules(plan: Plan):
    targets = list(plan.lora.target_modules)
    return "all-linear" if targets == ["all-linear"] else targets


def _lora(plan: Plan):
    from peft import LoraConfig

    return LoraConfig(
        r=plan.lora.r,
        lora_alpha=plan.lora.alpha,
        lora_dropout=plan.lora.dropout,
        target_modules=_target_modules(plan),
        use_dora=plan.strategy.method == "dora" or plan.lora.use_dora,  # Liu et al. 2024
        task_type=_task_type(plan),
        # whole modules trained beside the adapters (e.g. the embeddings of added tokens): peft keeps a
        # trainable copy of each (ModulesToSaveWrapper), as planner.memory counts it
        modules_to_save=list(plan.lora.modules_to_save) or None,
    )


def _ia3(plan: Plan):
    from peft import IA3Config

    # peft picks the per-architecture targets (peft/utils/constants.py TRANSFORMERS_MODELS_TO_IA3_*).
    return IA3Config(task_type=_task_type(plan))


def _prompt(plan: Plan):
    from peft import PromptTuningConfig

    return PromptTuningConfig(task_type=_task_type(plan), num_virtual_tokens=plan.strategy.num_virtual_tokens)


def _prefix(plan: Plan):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(task_type=_task_type(plan), num_virtual_tokens=plan.strategy.num_virtual_tokens)


# method -> PEFT config builder (registry; "full" trains every weight and has no entry).
PEFT_CONFIGS: dict[str, Callable] = {
    "lora": _lora,
    "dora": _lora,
    "qlora": _lora,
    "ia3": _ia3,
    "prompt": _prompt,
    "prefix": _prefix,
}


def peft_config(plan: Plan):
    builder = PEFT_CONFIGS.get(plan.strategy.method)
    return builder(plan) if builder else None


def build_model(plan: Plan, tokenizer, labels: list[str] | None = None):
    """The model ready for the trainer: base (+ k-bit preparation) (+ PEFT wrapper)."""
    model = load_base_model(plan, tokenizer, labels)
    if plan.strategy.method == "qlora" and plan.strategy.qlora_upcast:
        from peft import prepare_model_for_kbit_training

        # Casts norms to fp32 and enables input grads for checkpointing (peft/utils/other.py).
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=plan.strategy.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    # strategy.qlora_upcast: false (sharded QLoRA, fused MoE experts) skips that call, as TRL's
    # prepare_peft_model does for sharded QLoRA: get_peft_model freezes the base, the Trainer enables
    # checkpointing (training.gradient_checkpointing) and the input grads are enabled below.
    config = peft_config(plan)
    if config is not None:
        from peft import get_peft_model

        if plan.strategy.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks need a grad input
        # lora.adapter_dtype: fp32 adapters (peft's default upcast) or the model's 16-bit dtype
        fp32 = plan.lora is None or plan.lora.adapter_dtype == "fp32"
        model = get_peft_model(model, config, autocast_adapter_dtype=fp32)
    model.config.use_cache = False  # the KV cache is useless (and warned about) while training
    return model


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
