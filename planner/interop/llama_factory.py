"""LLaMA-Factory <-> plan.yaml: one mapping table, read by ``read_config`` and written by ``export_config``.

Keys, defaults and semantics are LLaMA-Factory 0.9.5's (``pip install llamafactory==0.9.5``): its argument
dataclasses (src/llamafactory/hparams/model_args.py, data_args.py, finetuning_args.py, parser.py) on top of
transformers' Seq2SeqTrainingArguments, its model patches (model/model_utils/checkpointing.py: gradient
checkpointing on unless ``disable_gradient_checkpointing``; no fp32 upcast of QLoRA's frozen weights, only of
the trainable ones unless ``pure_bf16``), its DPO trainer (train/dpo/trainer.py: log-probs from full-vocabulary
fp32 logits), data/dataset_info.json's format and examples/train_*/.

Units: ``per_device_train_batch_size`` counts rows per GPU; a DPO row is a preference pair (the pairwise
collator puts chosen and rejected in the batch, two sequences per pair), the same unit as ftplan's
``training.micro_batch``. ``cutoff_len`` is tokens per sequence (for DPO per side), as ``training.seq_len``.
Unset training keys take transformers' TrainingArguments defaults (batch 8, lr 5e-5, 3 epochs, linear schedule).
"""

from __future__ import annotations

from pathlib import Path

from planner.interop.common import (
    BadValue,
    Row,
    as_bool,
    as_float,
    as_int,
    as_names,
    as_str,
    deepspeed_dict,
    deepspeed_settings,
    fsdp_settings,
    mixed_for,
    no_sharding,
    on,
    optimizer_from,
    optimizer_to,
    scheduler_from,
)
from planner.memory import SAVE_MODULES

NAME = "llama-factory"
LAUNCH = "FORCE_TORCHRUN=1 NPROC_PER_NODE={n} llamafactory-cli train {config}"
STAGES = {"pt": "continued-pretraining", "sft": "sft", "dpo": "preference"}


def _model(v, c):
    if "model_name_or_path" not in v:
        raise BadValue("model_name_or_path", "required (the model to fine-tune)")
    out = {"model.name_or_path": as_str("model_name_or_path", v["model_name_or_path"])}
    if "trust_remote_code" in v:
        out["model.trust_remote_code"] = as_bool("trust_remote_code", v["trust_remote_code"])
    return out


def _task(v, c):
    stage = str(v.get("stage", "sft"))
    if stage not in STAGES:
        raise BadValue("stage", f"'{stage}' is not modelled (ftplan estimates {', '.join(STAGES)})")
    loss = str(v.get("pref_loss", "sigmoid"))
    if stage == "dpo" and loss in ("orpo", "simpo"):
        c.unsupported["pref_loss"] = (f"{loss} needs no reference model: estimated with one (full fine-tuning: "
                                      "one frozen model copy too many)")
    return {"task": STAGES[stage]}


def _task_w(v, c):
    # do_train: LLaMA-Factory's workflows train only when it is set (train/sft/workflow.py)
    return {"stage": {"continued-pretraining": "pt", "preference": "dpo"}.get(v["task"], "sft"), "do_train": True}


def _method(v, c):
    kind = str(v.get("finetuning_type", "lora"))
    if kind not in ("lora", "full"):
        raise BadValue("finetuning_type", f"'{kind}' is not modelled (lora or full)")
    bits = v.get("quantization_bit")
    method = str(v.get("quantization_method", "bnb"))
    dora = as_bool("use_dora", v["use_dora"]) if "use_dora" in v else False
    if bits is not None:
        bits = as_int("quantization_bit", bits)
        if method != "bnb":
            raise BadValue("quantization_method", f"'{method}' quantization is not modelled (bitsandbytes only)")
        if bits not in (4, 8):
            raise BadValue("quantization_bit", f"{bits}-bit bitsandbytes is not modelled (4 or 8)")
        if kind == "full":
            raise BadValue("quantization_bit", "a quantized model cannot be fully fine-tuned "
                                               "(LLaMA-Factory refuses it)")
    if kind == "full":
        return {"strategy.method": "full"}
    if bits == 4:
        if dora:
            c.unsupported["use_dora"] = "DoRA on a 4-bit base (QDoRA): estimated as QLoRA"
        return {"strategy.method": "qlora", "lora.use_dora": dora}
    if bits == 8:
        c.unsupported["quantization_bit"] = ("8-bit (LLM.int8) base weights are not modelled: estimated as 16-bit "
                                             "LoRA (int8 weights take half the bytes)")
    return {"strategy.method": "dora" if dora else "lora"}


def _method_w(v, c):
    m = v["strategy.method"]
    if m == "full":
        return {"finetuning_type": "full"}
    if m in ("lora", "dora"):
        return {"finetuning_type": "lora", "use_dora": True if m == "dora" else None}
    if m == "qlora":
        return {"finetuning_type": "lora", "quantization_bit": 4, "quantization_method": "bnb",
                "use_dora": True if v.get("lora.use_dora") else None}
    raise BadValue("strategy.method", f"LLaMA-Factory has no '{m}' (it trains full, LoRA, DoRA and QLoRA)")


def _rank(v, c):
    return {"lora.r": as_int("lora_rank", v.get("lora_rank", 8))} if c.lora else {}


def _alpha(v, c):
    if not c.lora:
        return {}
    if "lora_alpha" in v:
        return {"lora.alpha": as_int("lora_alpha", v["lora_alpha"])}
    return {"lora.alpha": 2 * c.get("lora.r", 8)}  # finetuning_args.py: lora_alpha defaults to lora_rank * 2


def _targets(v, c):
    if not c.lora:
        return {}
    names = as_names("lora_target", v.get("lora_target", "all"))
    return {"lora.target_modules": ["all-linear"] if names in (["all"], []) else names}


def _targets_w(v, c):
    t = v["lora.target_modules"]
    return {"lora_target": "all" if t == ["all-linear"] else ",".join(t)}


def _save(v, c):
    if not c.lora:
        return {}
    names = as_names("additional_target", v.get("additional_target", ""))
    for n in names:
        if n not in SAVE_MODULES:
            raise BadValue("additional_target", f"'{n}' is not a module ftplan models",
                           hint=f"one of: {', '.join(SAVE_MODULES)}")
    return {"lora.modules_to_save": names}


def _precision(v, c):
    if on(v.get("fp8")):
        raise BadValue("fp8", "FP8 training is not modelled")
    pure = as_bool("pure_bf16", v["pure_bf16"]) if "pure_bf16" in v else False
    bf16 = as_bool("bf16", v["bf16"]) if "bf16" in v else False
    fp16 = as_bool("fp16", v["fp16"]) if "fp16" in v else False
    prec = "bf16" if (pure or bf16) else ("fp16" if fp16 else "fp32")
    # parser.py: compute dtype from bf16/pure_bf16/fp16 (none: fp32); adapter.py upcasts the trainable parameters to
    # fp32 unless pure_bf16 (full fine-tuning: fp32 master weights; LoRA: fp32 adapters)
    out = {"strategy.precision": prec,
           "strategy.mixed_precision": mixed_for(c.method, prec, c.get("strategy.distribution", "single"),
                                                 tool_upcasts=not pure)}
    if c.lora:
        out["lora.adapter_dtype"] = "model" if pure else "fp32"
    return out


def _precision_w(v, c):
    prec, method = v["strategy.precision"], c.method
    pure = prec == "bf16" and ((method == "full" and not v.get("strategy.mixed_precision"))
                               or (c.lora and v.get("lora.adapter_dtype") == "model"))
    if pure:
        if c.get("strategy.distribution") == "zero3":
            raise BadValue("strategy.precision", "LLaMA-Factory refuses pure_bf16 with DeepSpeed ZeRO-3 (parser.py)",
                           hint="plan with fp32 adapters / mixed precision, or another distribution")
        return {"pure_bf16": True}
    if c.lora and v.get("lora.adapter_dtype") == "model":
        c.notes.append("LLaMA-Factory keeps 16-bit adapters only with pure_bf16 (bf16): the fp16 plan's adapters "
                       "train in fp32 there")
    return {"bf16": True if prec == "bf16" else None, "fp16": True if prec == "fp16" else None}


ATTENTION = {"auto": "sdpa", "sdpa": "sdpa", "disabled": "eager", "fa2": "flash_attention_2",
             "fa3": "flash_attention_2"}
ATTENTION_W = {"sdpa": "sdpa", "eager": "disabled", "flash_attention_2": "fa2"}


def _attention(v, c):
    name = str(v.get("flash_attn", "auto"))
    if name not in ATTENTION:
        raise BadValue("flash_attn", f"'{name}' is not one of: {', '.join(ATTENTION)}")
    if name == "fa3":
        c.notes.append("flash_attn fa3: estimated as flash_attention_2 (no materialised attention scores either)")
    return {"strategy.attn_implementation": ATTENTION[name]}


def _checkpointing(v, c):
    if on(v.get("use_unsloth_gc")):
        c.unsupported["use_unsloth_gc"] = "Unsloth's offloaded checkpointing: estimated as plain checkpointing"
    off = as_bool("disable_gradient_checkpointing", v.get("disable_gradient_checkpointing", False))
    return {"strategy.gradient_checkpointing": not off}


def _distribution(v, c):
    ds, fsdp, cfg = v.get("deepspeed"), v.get("fsdp"), v.get("fsdp_config")
    acc = c.accelerate or {}
    if on(ds):
        if on(fsdp):
            raise BadValue("deepspeed", "DeepSpeed and FSDP are alternatives; the config sets both")
        return deepspeed_settings("deepspeed", ds, c)
    if on(fsdp):  # transformers TrainingArguments: "full_shard auto_wrap offload" (or a list)
        opts = [o.lower() for o in (fsdp if isinstance(fsdp, list) else str(fsdp).split())]
        cfg = cfg if isinstance(cfg, dict) else {}
        ckpt = cfg.get("activation_checkpointing")
        return fsdp_settings("fsdp", "full_shard" in opts or "hybrid_shard" in opts, "offload" in opts, c,
                             checkpointing=True if on(ckpt) else None)
    kind = str(acc.get("distributed_type", "")).upper()
    if kind == "FSDP":  # accelerate config (how examples/extras/fsdp_qlora is launched)
        fc = acc.get("fsdp_config") or {}
        strategy = str(fc.get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
        full = strategy in ("FULL_SHARD", "1", "HYBRID_SHARD", "4") and fc.get("fsdp_reshard_after_forward", True)
        c.notes.append("FSDP from the accelerate config")
        return fsdp_settings("--accelerate-config", bool(full), on(fc.get("fsdp_offload_params")), c,
                             checkpointing=True if on(fc.get("fsdp_activation_checkpointing")) else None)
    if kind == "DEEPSPEED":
        dc = acc.get("deepspeed_config") or {}
        if dc.get("deepspeed_config_file"):
            return deepspeed_settings("--accelerate-config", dc["deepspeed_config_file"], c)
        stage = as_int("--accelerate-config zero_stage", dc.get("zero_stage", 0), minimum=0)
        obj = {"zero_optimization": {"stage": stage,
                                     "offload_optimizer": {"device": dc.get("offload_optimizer_device", "none")},
                                     "offload_param": {"device": dc.get("offload_param_device", "none")}}}
        return deepspeed_settings("--accelerate-config", obj, c)
    return no_sharding(c)


def _distribution_w(v, c):
    d = v["strategy.distribution"]
    if d.startswith("zero"):
        return {"deepspeed": deepspeed_dict(c)}
    if d == "fsdp":
        offload = " offload" if v.get("strategy.offload_params") else ""
        return {"fsdp": f"full_shard auto_wrap{offload}", "fsdp_config": {"fsdp_version": 2}}
    return {}


def _fused_loss(v, c):
    """SFT/pre-training: ``enable_liger_kernel`` patches the model with Liger's fused linear cross-entropy (no
    T x V logits), as TRL's chunked loss ftplan plans with; without it the loss runs over full logits. DPO:
    LLaMA-Factory's trainer takes log-probs from ``model(**batch).logits.to(float32)`` whatever the kernels."""
    if c.task == "preference":
        return {"training.fused_loss": False}
    return {"training.fused_loss": as_bool("enable_liger_kernel", v.get("enable_liger_kernel", False))}


def _fused_loss_w(v, c):
    if c.task == "preference":
        if v.get("training.fused_loss", True):
            c.notes.append("LLaMA-Factory's DPO trainer computes log-probs over full-vocabulary fp32 logits: the "
                           "fused loss the plan assumes is not available there")
        return {}
    return {"enable_liger_kernel": True if v.get("training.fused_loss", True) else None}


def _upcast_w(v, c):
    if c.method == "qlora" and v.get("strategy.qlora_upcast"):
        c.notes.append("LLaMA-Factory does not upcast QLoRA's frozen 16-bit weights to fp32 (no peft "
                       "prepare_model_for_kbit_training): it needs less memory than the plan")
    return {}


def _simple(tool, plan, conv, default=None, *, only=None, note="", **kw) -> Row:
    def read(v, c):
        if only is not None and not only(c):
            return {}
        if tool in v:
            return {plan: conv(tool, v[tool])}
        return {} if default is None else {plan: default}

    def write(v, c):
        if only is not None and not only(c):
            return {}
        return {tool: v.get(plan)}

    return Row((tool,), (plan,), read, write, note, **kw)


def _packing(v, c):
    if on(v.get("neat_packing")):
        return {"training.packing": True}
    if "packing" in v:
        return {"training.packing": as_bool("packing", v["packing"])}
    return {"training.packing": c.task == "continued-pretraining"}  # parser.py: packing defaults to stage == pt


def _val(v, c):
    size = as_float("val_size", v.get("val_size", 0.0), lo=0.0)
    if size >= 1:
        return {"data.val_rows": int(size)}
    return {"data.val_split": size}


def _val_w(v, c):
    rows = v.get("data.val_rows") or 0
    return {"val_size": int(rows) if rows > 0 else float(v.get("data.val_split", 0.0))}


def _eval(v, c):
    if "eval_steps" not in v:
        return {}
    value = v["eval_steps"]
    if isinstance(value, float) and value < 1:
        c.notes.append(f"eval_steps {value:g} is a fraction of the run's steps (not carried: the plan counts steps)")
        return {}
    return {"evaluation.eval_steps": as_int("eval_steps", value)}


def _eval_w(v, c):
    has_val = (c.get("data.val_rows") or 0) > 0 or c.get("data.val_split", 0) > 0
    if not has_val:
        return {}
    # transformers' per_device_eval_batch_size defaults to 8: evaluate with the planned micro-batch instead
    return {"eval_strategy": "steps", "eval_steps": v["evaluation.eval_steps"],
            "per_device_eval_batch_size": c.get("training.micro_batch", 1)}


def _tokens(v, c):
    return {"model.added_tokens": as_names("add_tokens", v.get("add_tokens", ""))
            + as_names("add_special_tokens", v.get("add_special_tokens", ""))}


def _is_pref(c):
    return c.task == "preference"


ROWS: list[Row] = [
    Row(("model_name_or_path", "trust_remote_code"), ("model.name_or_path", "model.trust_remote_code"), _model,
        lambda v, c: {"model_name_or_path": v["model.name_or_path"],
                      "trust_remote_code": v.get("model.trust_remote_code") or None},
        "hub id or local folder", always=True),
    Row(("stage", "pref_loss", "do_train"), ("task",), _task, _task_w,
        "pt -> continued-pretraining, sft -> sft (ftplan's sft and chat), dpo -> preference (sigmoid/hinge/ipo "
        "losses keep a reference model)", always=True),
    Row(("finetuning_type", "quantization_bit", "quantization_method", "use_dora"),
        ("strategy.method", "lora.use_dora"),
        _method, _method_w, "full; lora (LLaMA-Factory's default); use_dora = dora; quantization_bit 4 (bitsandbytes "
        "NF4) = qlora; 8-bit estimated as 16-bit LoRA", always=True),
    Row(("deepspeed", "fsdp", "fsdp_config"), ("strategy.distribution", "strategy.offload_optimizer",
                                               "strategy.offload_params"), _distribution, _distribution_w,
        "DeepSpeed JSON: zero_optimization.stage and offload devices; FSDP from transformers' fsdp/fsdp_config or "
        "the accelerate config (--accelerate-config); neither = DDP over --gpus processes", always=True),
    Row(("bf16", "fp16", "pure_bf16", "fp8"), ("strategy.precision", "strategy.mixed_precision", "lora.adapter_dtype"),
        _precision, _precision_w,
        "bf16/fp16 compute (none = fp32); trainable parameters upcast to fp32 (full: master weights, LoRA: "
        "adapters) unless pure_bf16", always=True),
    Row(("lora_rank",), ("lora.r",), _rank, lambda v, c: {"lora_rank": v["lora.r"]} if c.lora else {},
        "adapter rank; LLaMA-Factory's 8"),
    Row(("lora_alpha",), ("lora.alpha",), _alpha, lambda v, c: {"lora_alpha": v["lora.alpha"]} if c.lora else {},
        "scale alpha/r; LLaMA-Factory's lora_rank * 2"),
    Row(("lora_dropout",), ("lora.dropout",),
        lambda v, c: {"lora.dropout": as_float("lora_dropout", v.get("lora_dropout", 0.0), lo=0.0, hi=0.999)}
        if c.lora else {}, lambda v, c: {"lora_dropout": v["lora.dropout"]} if c.lora else {},
        "probability; LLaMA-Factory's 0.0"),
    Row(("lora_target",), ("lora.target_modules",), _targets, lambda v, c: _targets_w(v, c) if c.lora else {},
        "comma-separated module names; all (the default) = all-linear"),
    Row(("additional_target",), ("lora.modules_to_save",), _save,
        lambda v, c: {"additional_target": ",".join(v.get("lora.modules_to_save") or []) or None} if c.lora else {},
        "comma-separated whole modules trained beside the adapters (peft modules_to_save)"),
    Row(("double_quantization",), ("strategy.double_quant",),
        lambda v, c: {"strategy.double_quant": as_bool("double_quantization", v.get("double_quantization", True))}
        if c.method == "qlora" else {},
        lambda v, c: {"double_quantization": False if not v.get("strategy.double_quant", True) else None}
        if c.method == "qlora" else {}, "QLoRA: NF4 double quantization; LLaMA-Factory's true"),
    Row(("cutoff_len",), ("training.seq_len",),
        lambda v, c: {"training.seq_len": as_int("cutoff_len", v.get("cutoff_len", 2048), minimum=8)},
        lambda v, c: {"cutoff_len": v["training.seq_len"]}, "tokens per sequence (DPO: per side); 2048 when unset"),
    Row(("packing", "neat_packing"), ("training.packing",), _packing,
        lambda v, c: {"packing": bool(v.get("training.packing"))} if c.task != "preference" else {},
        "sequences packed to cutoff_len (neat_packing: without cross-attention); default on for stage pt only"),
    Row(("per_device_train_batch_size",), ("training.micro_batch",),
        lambda v, c: {"training.micro_batch": as_int("per_device_train_batch_size",
                                                     v.get("per_device_train_batch_size", 8))},
        lambda v, c: {"per_device_train_batch_size": v["training.micro_batch"]},
        "rows per GPU per step on both sides; a DPO row is a pair; transformers' default 8"),
    Row(("gradient_accumulation_steps",), ("training.grad_accum",),
        lambda v, c: {"training.grad_accum": as_int("gradient_accumulation_steps",
                                                    v.get("gradient_accumulation_steps", 1))},
        lambda v, c: {"gradient_accumulation_steps": v["training.grad_accum"]}, "micro-batches per optimizer step"),
    Row(("disable_gradient_checkpointing", "use_unsloth_gc"), ("strategy.gradient_checkpointing",), _checkpointing,
        lambda v, c: {"disable_gradient_checkpointing": True if not v["strategy.gradient_checkpointing"] else None},
        "inverted: LLaMA-Factory checkpoints activations unless disable_gradient_checkpointing: true"),
    Row(("flash_attn",), ("strategy.attn_implementation",), _attention,
        lambda v, c: {"flash_attn": ATTENTION_W[v["strategy.attn_implementation"]]},
        "auto (transformers' default, sdpa) / sdpa / fa2 = flash_attention_2 / disabled = eager"),
    Row(("optim",), ("strategy.optimizer",),
        lambda v, c: {"strategy.optimizer": optimizer_from("optim", v.get("optim", "adamw_torch_fused"))},
        lambda v, c: {"optim": optimizer_to(v["strategy.optimizer"])},
        "transformers OptimizerNames (default adamw_torch_fused in transformers 5; some 4.x releases default to "
        "adamw_torch = adamw_foreach)"),
    Row(("enable_liger_kernel",), ("training.fused_loss",), _fused_loss, lambda v, c: _fused_loss_w(v, c),
        "SFT/pt: Liger's fused linear cross-entropy = no T x V logits, as TRL's chunked loss ftplan plans with; "
        "without it full logits; DPO: always full fp32 logits (LLaMA-Factory's DPO trainer)", always=True,
        semantics=True),
    Row((), ("strategy.qlora_upcast",), lambda v, c: {"strategy.qlora_upcast": False} if c.method == "qlora" else {},
        _upcast_w, "LLaMA-Factory never upcasts QLoRA's non-quantized weights (checkpointing.py "
        "prepare_model_for_training)",
        semantics=True),
    Row(("learning_rate",), ("training.lr",),
        lambda v, c: {"training.lr": as_float("learning_rate", v.get("learning_rate", 5e-5), lo=1e-12, hi=1.0)},
        lambda v, c: {"learning_rate": v["training.lr"]}, "peak learning rate; transformers' 5e-5"),
    Row(("lr_scheduler_type",), ("training.lr_scheduler",),
        lambda v, c: scheduler_from("lr_scheduler_type", v["lr_scheduler_type"], c) if "lr_scheduler_type" in v
        else {"training.lr_scheduler": "linear"},
        lambda v, c: {"lr_scheduler_type": v["training.lr_scheduler"]}, "transformers SchedulerType; linear"),
    _simple("warmup_ratio", "training.warmup_ratio", lambda k, x: as_float(k, x, lo=0.0, hi=0.999), 0.0,
            note="fraction of the steps (warmup_steps is not converted)"),
    _simple("weight_decay", "training.weight_decay", lambda k, x: as_float(k, x, lo=0.0, hi=1.0), 0.0,
            note="AdamW decoupled weight decay"),
    _simple("max_grad_norm", "training.max_grad_norm", lambda k, x: as_float(k, x, lo=0.0), 1.0,
            note="clipping norm (0 = off)"),
    _simple("num_train_epochs", "training.epochs", lambda k, x: as_float(k, x, lo=1e-6), 3.0,
            note="passes over the data; transformers' 3"),
    _simple("max_steps", "training.max_steps", lambda k, x: as_int(k, x, minimum=-1), -1,
            note="optimizer steps (-1 = from the epochs)"),
    _simple("seed", "training.seed", lambda k, x: as_int(k, x, minimum=0), 42, note="random seed"),
    Row(("train_on_prompt",), ("training.completion_only_loss",),
        lambda v, c: {} if _is_pref(c) else {"training.completion_only_loss": c.task != "continued-pretraining" and
                                             not as_bool("train_on_prompt", v.get("train_on_prompt", False))},
        lambda v, c: {} if _is_pref(c) or c.task == "continued-pretraining" else {
            "train_on_prompt": True if not v.get("training.completion_only_loss", True) else None},
        "inverted: train_on_prompt false = loss on responses only; pt trains on every token and get_train_args "
        "refuses train_on_prompt there"),
    _simple("pref_beta", "training.dpo_beta", lambda k, x: as_float(k, x, lo=1e-9), 0.1, only=_is_pref,
            note="DPO beta"),
    Row(("eval_steps", "eval_strategy", "per_device_eval_batch_size"), ("evaluation.eval_steps",), _eval, _eval_w,
        "optimizer steps between evaluations (eval_strategy steps; written only with a validation split, with the "
        "training micro-batch as the evaluation batch)"),
    _simple("save_steps", "checkpointing.save_steps", lambda k, x: as_int(k, x), 500,
            note="optimizer steps between checkpoints"),
    _simple("save_total_limit", "checkpointing.save_total_limit", lambda k, x: as_int(k, x),
            note="checkpoints kept"),
    Row(("val_size",), ("data.val_split", "data.val_rows"), _val, _val_w,
        "a fraction held out, or a row count when >= 1", planned=False),
    Row(("add_tokens", "add_special_tokens"), ("model.added_tokens",), _tokens,
        lambda v, c: {"add_tokens": ",".join(v.get("model.added_tokens") or []) or None},
        "comma-separated tokens added to the tokenizer (embeddings resized by their count)"),
]

UNSUPPORTED = {
    "use_unsloth": "Unsloth's patched model (not modelled)",
    "upcast_layernorm": "norm weights in fp32 (a few MB, not modelled)",
    "upcast_lmhead_output": "fp32 copy of the lm_head output (with full logits: not modelled)",
    "shift_attn": "LongLoRA shifted attention (not modelled)",
    "mixture_of_depths": "mixture-of-depths (not modelled)",
    "rope_scaling": "RoPE scaling (no memory effect beyond the sequence length)",
    "use_reentrant_gc": "reentrant checkpointing (not modelled)",
    "torch_compile": "torch.compile (not modelled)",
    "gradient_checkpointing_kwargs": "checkpointing options (not modelled)",
    "use_rslora": "rank-stabilised scaling (no memory effect; not carried)",
    "pissa_init": "PiSSA initialisation (not modelled)",
    "loraplus_lr_ratio": "LoRA+ learning rates (no memory effect; not carried)",
    "neftune_noise_alpha": "NEFTune noise (a small temporary, not modelled)",
    "use_v1_kernels": "LLaMA-Factory kernels (not modelled)",
    "mask_history": "loss on the last turn only (no memory effect; not carried)",
    "max_samples": "rows capped: time and cost follow --tokens/--data, not the cap",
    "streaming": "streamed dataset (not modelled)",
    "moe_aux_loss_coef": "MoE router loss (not modelled)",
    "ref_model": "a separate reference model (not modelled)",
    "ref_model_quantization_bit": "a quantized reference model (not modelled)",
    "pref_ftx": "SFT term in the DPO loss (no memory effect; not carried)",
    "dpo_label_smoothing": "cDPO smoothing (no memory effect; not carried)",
    "include_effective_tokens_per_second": "an extra pass over the data (time)",
    "compute_accuracy": "token accuracy needs the logits (not modelled)",
}

REFUSED = {
    "use_galore": "GaLore's projected optimizer states are not modelled",
    "use_apollo": "APOLLO's optimizer states are not modelled",
    "use_badam": "BAdam's block-wise updates are not modelled",
    "use_muon": "the Muon optimizer is not modelled",
    "use_adam_mini": "Adam-mini's states are not modelled",
    "use_llama_pro": "LLaMA Pro block expansion is not modelled",
    "use_kt": "KTransformers is not modelled",
    "use_mca": "Megatron-Core training is not modelled",
    "train_from_scratch": "training from random weights is not modelled",
}

IGNORED = (
    "do_train", "do_eval", "do_predict", "output_dir", "overwrite_output_dir", "logging_steps", "logging_dir",
    "logging_first_step", "plot_loss", "save_only_model", "report_to", "run_name", "ddp_timeout",
    "resume_from_checkpoint", "template", "dataset", "eval_dataset", "dataset_dir", "media_dir", "tokenized_path",
    "preprocessing_num_workers", "preprocessing_batch_size", "dataloader_num_workers", "overwrite_cache",
    "warmup_steps", "save_strategy", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
    "cache_dir", "model_revision", "use_fast_tokenizer", "low_cpu_mem_usage", "default_system", "tool_format",
    "enable_thinking", "preserve_thinking", "mix_strategy", "interleave_probs", "buffer_size", "eval_num_beams",
    "ignore_pad_token_for_loss", "eval_on_each_dataset", "data_shared_file_system", "adam_beta1", "adam_beta2",
    "adam_epsilon", "lr_scheduler_kwargs", "optim_args", "disable_shuffling", "hf_hub_token", "ms_hub_token",
    "om_hub_token", "push_to_hub", "hub_model_id", "infer_backend", "infer_dtype", "print_param_status",
    "predict_with_generate", "generation_max_length", "generation_num_beams", "split_special_tokens",
    "new_special_tokens_config", "init_special_tokens", "resize_vocab", "adapter_name_or_path", "create_new_adapter",
    "export_dir", "export_size", "quantization_type", "quantization_device_map", "ddp_find_unused_parameters",
    "use_kv_cache", "local_rank", "master_addr", "master_port", "seed_data", "data_seed", "lora_dropout_ratio",
    "loraplus_lr_embedding", "pref_bco_weight", "kto_chosen_weight", "kto_rejected_weight", "simpo_gamma",
    "ld_alpha", "freeze_trainable_layers", "freeze_trainable_modules", "freeze_extra_modules",
    "freeze_vision_tower", "freeze_multi_modal_projector",
    "freeze_language_model", "image_max_pixels", "image_min_pixels", "video_max_pixels", "video_min_pixels",
    "video_fps", "video_maxlen",
)
IGNORED_PREFIXES = ("swanlab_", "ray_", "profiler_", "enable_torch_profiler", "profile_", "hub_", "wandb_",
                    "export_", "galore_", "apollo_", "badam_", "ppo_", "reward_model", "fp8_")


# ----------------------------------------------------------------------------------------------------------
# The dataset entry (export): LLaMA-Factory's dataset_info.json (data/README.md) for the plan's data layout
# ----------------------------------------------------------------------------------------------------------

# the file extensions LLaMA-Factory loads local files by (data/loader.py FILEEXT2TYPE)
FILE_TYPES = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet", "txt": "text"}


def dataset_config(plan, lay, out_dir) -> tuple[dict, dict]:
    """(config keys, dataset_info.json entry): ``dataset``/``dataset_dir`` point at the entry written beside the
    config; ``template`` is left out when the plan renders with the tokenizer's own chat template (LLaMA-Factory
    then parses it, data/template.py get_template_and_fix_tokenizer)."""
    import re

    f = lay.fields
    compressed = not re.search(r"\.(jsonl|json|csv|parquet|txt)$", lay.path, re.IGNORECASE)
    if lay.file_type not in FILE_TYPES or compressed:
        raise BadValue("data.path", f"{lay.path}: LLaMA-Factory loads local .json/.jsonl/.csv/.parquet/.txt files",
                       hint="decompress or convert it to JSON Lines")
    entry: dict = {"file_name": lay.path}
    fmt = lay.format
    if fmt in ("alpaca", "prompt_completion", "classification"):
        cols = {"alpaca": {"prompt": f.get("instruction"), "query": f.get("input"), "response": f.get("output"),
                           "system": f.get("system"), "history": f.get("history")},
                "prompt_completion": {"prompt": f.get("prompt"), "response": f.get("completion"),
                                      "system": f.get("system")},
                "classification": {"prompt": f.get("text"), "response": f.get("label")}}[fmt]
        entry["columns"] = {k: v for k, v in cols.items() if v}
    elif fmt == "chat":
        entry["formatting"] = "sharegpt"
        entry["columns"] = {k: v for k, v in {"messages": f["messages"], "system": f.get("system"),
                                               "tools": f.get("tools")}.items() if v}
        entry["tags"] = ({"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                          "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
                         if lay.chat_style == "sharegpt" else
                         {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant", "observation_tag": "tool", "system_tag": "system"})
        if lay.tool_calls:
            lay.notes.append("OpenAI tool_calls inside assistant messages have no sharegpt tag in LLaMA-Factory")
    elif fmt == "text":
        entry["columns"] = {"prompt": f.get("text", "text")}
    elif fmt == "preference":
        if lay.pref_style != "explicit":
            raise BadValue("data.format", "preference rows without a prompt column (implicit prompt) have no "
                                          "LLaMA-Factory ranking format", hint="add a prompt column")
        entry["ranking"] = True
        if lay.messages:
            entry["formatting"] = "sharegpt"
            entry["columns"] = {"messages": f["prompt"], "chosen": f["chosen"], "rejected": f["rejected"]}
            entry["tags"] = {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant", "system_tag": "system"}
        else:
            entry["columns"] = {"prompt": f["prompt"], "chosen": f["chosen"], "rejected": f["rejected"]}
    else:
        raise BadValue("data.format", f"{fmt} data has no LLaMA-Factory dataset format here")
    name = "ftplan_" + re.sub(r"[^A-Za-z0-9_]+", "_", Path(lay.path).stem).strip("_")
    cfg = {"dataset": name, "dataset_dir": str(out_dir)}
    if plan.data.chat_template:
        lay.notes.append("the plan's own chat template (data.chat_template) is not carried: LLaMA-Factory renders "
                         "with the tokenizer's template")
    elif plan.data.template == "default":
        cfg["template"] = "chatml"  # the tokenizer has no template; ftplan rendered with its ChatML default
    return cfg, {name: entry}
