"""axolotl <-> plan.yaml: one mapping table, read by ``read_config`` and written by ``export_config``.

Keys, defaults and semantics are axolotl 0.19.0's (``pip install axolotl==0.19.0``): its pydantic schema
(src/axolotl/utils/schemas/config.py, training.py, peft.py, datasets.py, fsdp.py), its model loader
(src/axolotl/loaders/model.py: ``prepare_model_for_kbit_training`` unless FSDP/ZeRO-3 QLoRA), the Liger plugin
(src/axolotl/integrations/liger/args.py) and docs/config-reference.qmd, docs/multi-gpu.qmd, docs/rlhf.qmd.

Units: ``micro_batch_size`` is per GPU and counts rows; for DPO a row is a preference pair (TRL's DPOTrainer
runs chosen and rejected, two sequences per pair), the same unit as ftplan's ``training.micro_batch``
(docs/design.md, "One vocabulary"). ``sequence_len`` is tokens per sequence (for DPO per side), as
``training.seq_len``.
"""

from __future__ import annotations

from planner.interop.common import (
    BadValue,
    Ctx,
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

NAME = "axolotl"
LIGER_PLUGIN = "axolotl.integrations.liger.LigerPlugin"
CCE_PLUGIN = "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin"
LAUNCH = "accelerate launch --num_processes {n} -m axolotl.cli.train {config}"

# peft LoraConfig defaults, used when an adapter config leaves r/alpha out (axolotl passes None through).
PEFT_R, PEFT_ALPHA = 8, 8
# peft's default targets for Llama-style models (peft/utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_...)
PEFT_DEFAULT_TARGETS = ["q_proj", "v_proj"]


def _model(v, c):
    if "base_model" not in v:
        raise BadValue("base_model", "required (the model to fine-tune)")
    out = {"model.name_or_path": as_str("base_model", v["base_model"])}
    if "trust_remote_code" in v:
        out["model.trust_remote_code"] = as_bool("trust_remote_code", v["trust_remote_code"])
    return out


def _model_w(v, c):
    return {"base_model": v["model.name_or_path"], "trust_remote_code": v.get("model.trust_remote_code") or None}


PREFERENCE_RL = ("dpo", "ipo")


def _task(v, c):
    rl = v.get("rl")
    if rl is not None:
        rl = str(getattr(rl, "value", rl))
        if rl not in PREFERENCE_RL:
            raise BadValue("rl", f"'{rl}' is not modelled (ftplan estimates DPO-style preference training: "
                                 f"{', '.join(PREFERENCE_RL)})")
        return {"task": "preference"}
    types = [d.get("type") for d in (v.get("datasets") or []) if isinstance(d, dict)]
    if v.get("pretraining_dataset") or (types and all(t in ("completion", "pretrain") for t in types)):
        return {"task": "continued-pretraining"}
    return {"task": "sft"}


def _task_w(v, c):
    # sft and chat are both axolotl's SFT trainer (the datasets entry carries the layout); preference is rl: dpo
    return {"rl": "dpo"} if v["task"] == "preference" else {}


def _method(v, c):
    adapter = v.get("adapter")
    four, eight = (as_bool(k, v[k]) if k in v else False for k in ("load_in_4bit", "load_in_8bit"))
    dora = as_bool("peft_use_dora", v["peft_use_dora"]) if "peft_use_dora" in v else False
    if on(v.get("gptq")):
        raise BadValue("gptq", "training on a GPTQ-quantized checkpoint is not modelled")
    if adapter in (None, ""):
        if four or eight:
            raise BadValue("load_in_4bit" if four else "load_in_8bit", "needs an adapter (axolotl refuses 4/8-bit "
                           "loading for full fine-tuning)", hint="set adapter: lora or qlora")
        return {"strategy.method": "full"}
    if adapter not in ("lora", "qlora"):
        raise BadValue("adapter", f"'{adapter}' is not modelled (lora, qlora, or none for full fine-tuning)")
    for k in LORA_KERNELS:
        if k in v and on(v[k]):
            c.unsupported[k] = UNSUPPORTED[k]
    if not any(k in v for k in LORA_KERNELS):
        c.unsupported["lora_*_kernel"] = ("unset: axolotl 0.19 auto-enables its fused LoRA kernels (\"Auto-enabling "
                                          "LoRA kernel optimizations\"), not modelled; set them false to train as "
                                          "planned")
    if adapter == "qlora" or four:
        if dora:
            c.unsupported["peft_use_dora"] = "DoRA on a 4-bit base (QDoRA): its magnitude vectors are not " \
                                             "estimated (estimated as QLoRA)"
        return {"strategy.method": "qlora", "lora.use_dora": dora}
    if eight:
        c.unsupported["load_in_8bit"] = ("8-bit (LLM.int8) base weights are not modelled: estimated as "
                                         "16-bit LoRA (int8 weights take half the bytes)")
    return {"strategy.method": "dora" if dora else "lora"}


# axolotl's fused LoRA autograd kernels: unset, axolotl 0.19 turns them on by itself (seen by
# benchmarks/interop_check.py); ftplan plans and runs peft's own LoRA layers, so an export turns them off.
LORA_KERNELS = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")


def _method_w(v, c):
    m = v["strategy.method"]
    if m == "full":
        return {}
    off = dict.fromkeys(LORA_KERNELS, False)
    if m in ("lora", "dora"):
        return {"adapter": "lora", "peft_use_dora": True if m == "dora" else None, **off}
    if m == "qlora":
        return {"adapter": "qlora", "load_in_4bit": True, "peft_use_dora": True if v.get("lora.use_dora") else None,
                **off}
    raise BadValue("strategy.method", f"axolotl has no '{m}' (it trains full, LoRA, DoRA and QLoRA)")


def _lora_only(fn):
    def wrapped(v, c):
        return fn(v, c) if c.lora else {}

    return wrapped


@_lora_only
def _r(v, c):
    if "lora_r" not in v:
        c.notes.append(f"lora_r not set: peft's default r={PEFT_R}")
    return {"lora.r": as_int("lora_r", v.get("lora_r", PEFT_R))}


@_lora_only
def _alpha(v, c):
    return {"lora.alpha": as_int("lora_alpha", v.get("lora_alpha", PEFT_ALPHA))}


@_lora_only
def _dropout(v, c):
    return {"lora.dropout": as_float("lora_dropout", v.get("lora_dropout", 0.0), lo=0.0, hi=0.999)}


@_lora_only
def _targets(v, c):
    if "lora_target_linear" in v and as_bool("lora_target_linear", v["lora_target_linear"]):
        return {"lora.target_modules": ["all-linear"]}
    if "lora_target_modules" in v:
        names = as_names("lora_target_modules", v["lora_target_modules"])
        if names == ["all-linear"] or names == ["all_linear"]:
            return {"lora.target_modules": ["all-linear"]}
        return {"lora.target_modules": names or PEFT_DEFAULT_TARGETS}
    c.notes.append("no lora_target_modules/lora_target_linear: peft's default targets "
                   f"({', '.join(PEFT_DEFAULT_TARGETS)} for Llama-style models)")
    return {"lora.target_modules": list(PEFT_DEFAULT_TARGETS)}


def _targets_w(v, c):
    t = v["lora.target_modules"]
    return {"lora_target_linear": True} if t == ["all-linear"] else {"lora_target_modules": list(t)}


@_lora_only
def _save(v, c):
    names = as_names("lora_modules_to_save", v.get("lora_modules_to_save", []))
    for n in names:
        if n not in SAVE_MODULES:
            raise BadValue("lora_modules_to_save", f"'{n}' is not a module ftplan models",
                           hint=f"one of: {', '.join(SAVE_MODULES)}")
    return {"lora.modules_to_save": names}


@_lora_only
def _adapter_dtype(v, c):
    up = as_bool("peft_autocast_adapter_dtype", v.get("peft_autocast_adapter_dtype", True))
    return {"lora.adapter_dtype": "fp32" if up else "model"}


def _double_quant(v, c):
    if c.method != "qlora":
        return {}
    kw = v.get("bnb_config_kwargs") or {}
    if not isinstance(kw, dict):
        raise BadValue("bnb_config_kwargs", "must be a mapping")
    for k, val in kw.items():
        if k not in ("bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage") and on(val):
            c.unsupported[f"bnb_config_kwargs.{k}"] = "bitsandbytes option not modelled (estimated as NF4)"
    # axolotl's default BitsAndBytesConfig: NF4 with double quantization (loaders/model.py)
    return {"strategy.double_quant": as_bool("bnb_config_kwargs.bnb_4bit_use_double_quant",
                                             kw.get("bnb_4bit_use_double_quant", True))}


def _double_quant_w(v, c):
    return {} if v.get("strategy.double_quant", True) else {"bnb_config_kwargs": {"bnb_4bit_use_double_quant": False}}


def _precision(v, c):
    if on(v.get("fp8")):
        raise BadValue("fp8", "FP8 training is not modelled")
    bf16 = v.get("bf16", "auto")
    if bf16 == "full":
        bf16 = True
    if bf16 != "auto":
        bf16 = as_bool("bf16", bf16)
    fp16 = as_bool("fp16", v["fp16"]) if "fp16" in v else False
    if on(v.get("bfloat16")) or bf16 is True or (bf16 == "auto" and c.bf16_ok and not fp16):
        prec = "bf16"
    elif fp16 or on(v.get("float16")):
        prec = "fp16"
    else:
        prec = "fp32"
    # axolotl loads the model in bf16/fp16 and trains it as loaded: pure 16-bit unless DeepSpeed or FSDP keep fp32
    # master weights (normalize_config: torch_dtype from bf16/fp16)
    mixed = mixed_for(c.method, prec, c.get("strategy.distribution", "single"), tool_upcasts=False)
    return {"strategy.precision": prec, "strategy.mixed_precision": mixed}


def _precision_w(v, c):
    prec = v["strategy.precision"]
    if v.get("strategy.mixed_precision") and not mixed_for(c.method, prec, c.get("strategy.distribution"),
                                                          tool_upcasts=False):
        c.notes.append("axolotl trains a single-process full fine-tuning in the loaded dtype: the plan's fp32 master "
                       "weights (strategy.mixed_precision) become pure 16-bit weights and optimizer states")
    return {"bf16": prec == "bf16", "fp16": True if prec == "fp16" else None}


ATTENTION = {"sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash_attention_2",
             "flash_attention_3": "flash_attention_2"}


def _attention(v, c):
    impl = v.get("attn_implementation")
    legacy = [(k, name) for k, name in (("flash_attention", "flash_attention_2"), ("sdp_attention", "sdpa"),
                                        ("eager_attention", "eager")) if on(v.get(k))]
    for k in ("xformers_attention", "flex_attention", "sage_attention", "s2_attention"):
        if on(v.get(k)):
            c.unsupported[k] = "attention kernel not modelled (estimated as sdpa)"
            return {"strategy.attn_implementation": "sdpa"}
    if impl is None and legacy:
        impl = legacy[0][1]
    if impl is None:
        return {"strategy.attn_implementation": "sdpa"}  # transformers' default
    impl = as_str("attn_implementation", impl)
    if impl not in ATTENTION:
        c.unsupported["attn_implementation"] = f"{impl}: attention kernel not modelled (estimated as sdpa)"
        return {"strategy.attn_implementation": "sdpa"}
    if impl == "flash_attention_3":
        c.notes.append("attn_implementation flash_attention_3: estimated as flash_attention_2 (same memory "
                       "pattern: no materialised attention scores)")
    return {"strategy.attn_implementation": ATTENTION[impl]}


def _checkpointing(v, c):
    gc = v.get("gradient_checkpointing", False)
    if gc in ("offload", "offload_disk"):
        c.unsupported["gradient_checkpointing"] = f"{gc}: checkpointed activations moved off the GPU are not " \
                                                  "modelled (estimated as plain checkpointing)"
        return {"strategy.gradient_checkpointing": True}
    for k in ("activation_offloading", "layer_offloading"):
        if on(v.get(k)):
            c.unsupported[k] = "activations/layers offloaded to the CPU are not modelled (estimated on the GPU)"
    return {"strategy.gradient_checkpointing": as_bool("gradient_checkpointing", gc)}


def _distribution(v, c):
    ds, fsdp, cfg = v.get("deepspeed"), v.get("fsdp"), v.get("fsdp_config")
    version = v.get("fsdp_version") or (cfg.get("fsdp_version") if isinstance(cfg, dict) else None)
    if on(ds) and (on(fsdp) or on(cfg)):
        raise BadValue("deepspeed", "DeepSpeed and FSDP are alternatives; the config sets both")
    if on(ds):
        return deepspeed_settings("deepspeed", ds, c)
    if on(fsdp) or on(cfg):
        if cfg is not None and not isinstance(cfg, dict):
            raise BadValue("fsdp_config", "must be a mapping")
        cfg = cfg or {}
        opts = [str(o).lower() for o in (fsdp if isinstance(fsdp, list) else str(fsdp or "").split())]
        strategy = str(cfg.get("fsdp_sharding_strategy", "")).upper()
        reshard = cfg.get("reshard_after_forward", True)
        full = not (strategy in ("SHARD_GRAD_OP", "NO_SHARD", "_HYBRID_SHARD_ZERO2") or "shard_grad_op" in opts
                    or reshard is False)
        offload = any(on(cfg.get(k)) for k in ("offload_params", "fsdp_offload_params")) or "offload" in opts
        ckpt = cfg.get("activation_checkpointing", cfg.get("fsdp_activation_checkpointing"))
        if version not in (None, 2, "2"):
            c.notes.append("FSDP1 (fsdp_version 1): estimated with ftplan's FSDP2 model (same sharded states)")
        return fsdp_settings("fsdp_config", full, offload, c,
                             checkpointing=True if on(ckpt) else None)
    return no_sharding(c)


def _distribution_w(v, c):
    d = v["strategy.distribution"]
    if d.startswith("zero"):
        return {"deepspeed": deepspeed_dict(c)}
    if d == "fsdp":
        return {"fsdp_version": 2,
                "fsdp_config": {"offload_params": bool(v.get("strategy.offload_params")),
                                "reshard_after_forward": True, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
                                "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": True}}
    return {}


def _fused_loss(v, c):
    """ftplan's SFT/DPO estimates assume a loss that never holds the T x V logits (TRL's chunked LM head);
    axolotl gets one from Liger's fused linear cross-entropy (SFT) or TRL's Liger DPO loss
    (``dpo_use_liger_kernel``, core/trainers/dpo/__init__.py); without it the logits are materialised."""
    plugins = v.get("plugins") or []
    if not isinstance(plugins, list):
        raise BadValue("plugins", "must be a list of plugin class paths")
    if c.task == "preference":
        return {"training.fused_loss": bool(on(v.get("dpo_use_liger_kernel")))}
    liger = LIGER_PLUGIN in plugins and on(v.get("liger_fused_linear_cross_entropy"))
    cce = CCE_PLUGIN in plugins and on(v.get("cut_cross_entropy"))
    if cce:
        c.notes.append("Cut Cross-Entropy plugin: estimated as ftplan's chunked loss (no full-vocabulary logits)")
    return {"training.fused_loss": bool(liger or cce)}


def _fused_loss_w(v, c):
    if not v.get("training.fused_loss", True):
        return {}
    if c.task == "preference":
        return {"dpo_use_liger_kernel": True}
    return {"plugins": [LIGER_PLUGIN], "liger_fused_linear_cross_entropy": True}


def _qlora_upcast(v, c):
    # axolotl runs peft's prepare_model_for_kbit_training (fp32 upcast of the non-quantized weights, its patch
    # keeps embed_tokens/lm_head in 16-bit) except for FSDP/ZeRO-3 QLoRA: ftplan's rule (precision.qlora_upcast_for)
    # decides the same cases, so the row leaves strategy.qlora_upcast to it.
    return {}


def _simple(tool: str, plan: str, conv, default=None, *, only=None, note: str = "", **kw) -> Row:
    """A one-key row: ``conv(key, value)`` reads, the plan value is written back as is."""

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


def _is_pref(c: Ctx) -> bool:
    return c.task == "preference"


def _scheduler(v, c):
    return scheduler_from("lr_scheduler", v["lr_scheduler"], c) if "lr_scheduler" in v else \
        {"training.lr_scheduler": "cosine"}


def _max_steps(v, c):
    return {"training.max_steps": as_int("max_steps", v["max_steps"]) if "max_steps" in v else -1}


def _max_steps_w(v, c):
    return {"max_steps": v["training.max_steps"] if v.get("training.max_steps", -1) > 0 else None}


def _train_on_inputs(v, c):
    if _is_pref(c):
        return {}  # DPO trains on the responses by construction
    return {"training.completion_only_loss": not as_bool("train_on_inputs", v.get("train_on_inputs", False))}


def _beta(v, c):
    if not _is_pref(c):
        return {}
    key = "rl_beta" if "rl_beta" in v else "dpo_beta"
    return {"training.dpo_beta": as_float(key, v.get(key, 0.1), lo=1e-9)}  # TRL DPOConfig.beta default 0.1


def _eval_steps(v, c):
    if "eval_steps" not in v:
        return {}
    value = v["eval_steps"]
    if isinstance(value, float) and value < 1:
        c.notes.append(f"eval_steps {value:g} is a fraction of the run's steps (not carried: the plan counts steps)")
        return {}
    return {"evaluation.eval_steps": as_int("eval_steps", value)}


def _save_steps(v, c):
    if "save_steps" not in v:
        return {}
    value = v["save_steps"]
    if isinstance(value, float) and value < 1:
        c.notes.append(f"save_steps {value:g} is a fraction of the run's steps (not carried: the plan counts steps)")
        return {}
    return {"checkpointing.save_steps": as_int("save_steps", value)}


def _val(v, c):
    if "val_set_size" not in v:
        return {"data.val_split": 0.0}
    return {"data.val_split": as_float("val_set_size", v["val_set_size"], lo=0.0, hi=1.0)}


def _val_w(v, c):
    return {"val_set_size": float(v.get("data.val_split", 0.0))}


def _tokens(v, c):
    return {"model.added_tokens": as_names("tokens", v.get("tokens", []))}


def _template(v, c):
    name = v.get("chat_template")
    if name == "jinja" or (name is None and "chat_template_jinja" in v):
        return {"data.chat_template": as_str("chat_template_jinja", v.get("chat_template_jinja"))}
    if name not in (None, "tokenizer_default"):
        c.notes.append(f"chat_template {name}: axolotl's named template is not carried (the plan renders with the "
                       "tokenizer's own template, or data.chat_template)")
    return {"data.chat_template": None}


def _template_w(v, c):
    text = v.get("data.chat_template")
    if text:
        return {"chat_template": "jinja", "chat_template_jinja": text}
    # data.template 'default': the tokenizer has none and ftplan rendered with ChatML
    return {"chat_template": "chatml" if c.get("data.template") == "default" else "tokenizer_default"}


def _dedup(v, c):
    return {"data.drop_duplicates": as_bool("dataset_exact_deduplication", v.get("dataset_exact_deduplication",
                                                                                  False))}


def _lora_when(c: Ctx) -> bool:
    return c.lora


ROWS: list[Row] = [
    Row(("base_model", "trust_remote_code"), ("model.name_or_path", "model.trust_remote_code"), _model, _model_w,
        "hub id or local folder; trust_remote_code off unless set", always=True),
    Row(("rl", "datasets", "pretraining_dataset"), ("task",), _task, _task_w,
        "rl: dpo/ipo -> preference; completion/pretraining datasets -> continued-pretraining; else SFT (ftplan's "
        "sft and chat are both axolotl's SFT trainer; the datasets entry carries the layout)", always=True),
    Row(("adapter", "load_in_4bit", "load_in_8bit", "peft_use_dora", "gptq", *LORA_KERNELS),
        ("strategy.method", "lora.use_dora"),
        _method, _method_w, "no adapter = full; lora; lora + peft_use_dora = dora; qlora (or lora + load_in_4bit) = "
        "qlora (NF4); load_in_8bit is estimated as 16-bit LoRA", always=True),
    Row(("deepspeed", "fsdp", "fsdp_config", "fsdp_version"),
        ("strategy.distribution", "strategy.offload_optimizer", "strategy.offload_params"),
        _distribution, _distribution_w,
        "DeepSpeed JSON (path or object): zero_optimization.stage and offload devices; FSDP full shard (FSDP2 "
        "config or FSDP1 list) with offload_params = params, grads and optimizer on the CPU; neither = DDP over "
        "--gpus processes", always=True),
    Row(("bf16", "fp16", "bfloat16", "float16", "float32", "fp8"), ("strategy.precision", "strategy.mixed_precision"),
        _precision, _precision_w,
        "bf16 (auto = if the GPU has it) / fp16 / fp32 load and compute dtype; full fine-tuning keeps fp32 master "
        "weights only under DeepSpeed or FSDP", always=True),
    Row(("lora_r",), ("lora.r",), _r, lambda v, c: {"lora_r": v["lora.r"]} if c.lora else {},
        "adapter rank (peft r); peft's 8 when unset"),
    Row(("lora_alpha",), ("lora.alpha",), _alpha, lambda v, c: {"lora_alpha": v["lora.alpha"]} if c.lora else {},
        "peft lora_alpha (scale alpha/r); peft's 8 when unset"),
    Row(("lora_dropout",), ("lora.dropout",), _dropout,
        lambda v, c: {"lora_dropout": v["lora.dropout"]} if c.lora else {}, "probability; axolotl's 0.0 when unset"),
    Row(("lora_target_modules", "lora_target_linear"), ("lora.target_modules",), _targets,
        lambda v, c: _targets_w(v, c) if c.lora else {},
        "module names, or lora_target_linear: true = all-linear; unset = peft's default targets"),
    Row(("lora_modules_to_save",), ("lora.modules_to_save",), _save,
        lambda v, c: {"lora_modules_to_save": v.get("lora.modules_to_save") or None} if c.lora else {},
        "whole modules trained beside the adapters (peft modules_to_save)"),
    Row(("peft_autocast_adapter_dtype",), ("lora.adapter_dtype",), _adapter_dtype,
        lambda v, c: {"peft_autocast_adapter_dtype": False if v.get("lora.adapter_dtype") == "model" else None}
        if c.lora else {}, "true (peft's default) = fp32 adapters; false = the model's 16-bit dtype"),
    Row(("bnb_config_kwargs",), ("strategy.double_quant",), _double_quant,
        lambda v, c: _double_quant_w(v, c) if c.method == "qlora" else {},
        "QLoRA: bnb_4bit_use_double_quant (axolotl's default true)"),
    Row(("sequence_len",), ("training.seq_len",), lambda v, c: {
        "training.seq_len": as_int("sequence_len", v.get("sequence_len", 512), minimum=8)},
        lambda v, c: {"sequence_len": v["training.seq_len"]}, "tokens per sequence (DPO: per side); axolotl's 512 "
        "when unset"),
    Row(("sample_packing",), ("training.packing",), lambda v, c: {
        "training.packing": as_bool("sample_packing", v.get("sample_packing", False))},
        lambda v, c: {"sample_packing": bool(v.get("training.packing")) if c.task != "preference" else None},
        "multipack: sequences packed to sequence_len without padding"),
    Row(("micro_batch_size",), ("training.micro_batch",), lambda v, c: {
        "training.micro_batch": as_int("micro_batch_size", v.get("micro_batch_size", 1))},
        lambda v, c: {"micro_batch_size": v["training.micro_batch"]},
        "rows per GPU per step on both sides; a DPO row is a pair (two sequences through the model)"),
    Row(("gradient_accumulation_steps",), ("training.grad_accum",), lambda v, c: {
        "training.grad_accum": as_int("gradient_accumulation_steps", v.get("gradient_accumulation_steps", 1))},
        lambda v, c: {"gradient_accumulation_steps": v["training.grad_accum"]}, "micro-batches per optimizer step"),
    Row(("gradient_checkpointing", "activation_offloading", "layer_offloading"), ("strategy.gradient_checkpointing",),
        _checkpointing, lambda v, c: {"gradient_checkpointing": bool(v.get("strategy.gradient_checkpointing"))},
        "recompute activations in backward; 'offload' variants estimated as plain checkpointing"),
    Row(("attn_implementation", "flash_attention", "sdp_attention", "eager_attention", "xformers_attention",
         "flex_attention", "sage_attention", "s2_attention"), ("strategy.attn_implementation",), _attention,
        lambda v, c: {"attn_implementation": v["strategy.attn_implementation"]},
        "sdpa (transformers' default) / flash_attention_2 / eager; other kernels estimated as sdpa"),
    Row(("optimizer",), ("strategy.optimizer",),
        lambda v, c: {"strategy.optimizer": optimizer_from("optimizer", v.get("optimizer", "adamw_torch_fused"))},
        lambda v, c: {"optimizer": optimizer_to(v["strategy.optimizer"])},
        "transformers OptimizerNames: adamw_torch_fused (axolotl's default) = adamw, adamw_torch = adamw_foreach, "
        "adamw_bnb_8bit/adamw_8bit, paged_adamw_8bit/32bit, sgd, adafactor"),
    Row(("plugins", "liger_fused_linear_cross_entropy", "cut_cross_entropy", "dpo_use_liger_kernel"),
        ("training.fused_loss",), _fused_loss, lambda v, c: _fused_loss_w(v, c),
        "SFT: the Liger plugin with liger_fused_linear_cross_entropy (or Cut Cross-Entropy) = no T x V logits, as "
        "TRL's chunked loss that ftplan plans with; DPO: dpo_use_liger_kernel (TRL's Liger DPO loss); without = "
        "full-vocabulary logits", always=True, semantics=True),
    Row((), ("strategy.qlora_upcast",), _qlora_upcast, lambda v, c: {},
        "axolotl upcasts QLoRA's non-quantized weights to fp32 (prepare_model_for_kbit_training) except for "
        "FSDP/ZeRO-3 QLoRA, as ftplan's rule does", semantics=True),
    Row(("learning_rate",), ("training.lr",), lambda v, c: {
        "training.lr": as_float("learning_rate", v["learning_rate"], lo=1e-12, hi=1.0)} if "learning_rate" in v
        else {}, lambda v, c: {"learning_rate": v["training.lr"]}, "peak learning rate"),
    Row(("lr_scheduler",), ("training.lr_scheduler",), _scheduler,
        lambda v, c: {"lr_scheduler": v["training.lr_scheduler"]}, "transformers SchedulerType; axolotl's cosine"),
    _simple("warmup_ratio", "training.warmup_ratio", lambda k, x: as_float(k, x, lo=0.0, hi=0.999),
            note="fraction of the steps (warmup_steps is not converted: the plan counts a ratio)"),
    Row(("weight_decay",), ("training.weight_decay",), lambda v, c: {
        "training.weight_decay": as_float("weight_decay", v.get("weight_decay", 0.0), lo=0.0, hi=1.0)},
        lambda v, c: {"weight_decay": v["training.weight_decay"]}, "AdamW decoupled weight decay; axolotl's 0.0"),
    Row(("max_grad_norm",), ("training.max_grad_norm",), lambda v, c: {
        "training.max_grad_norm": as_float("max_grad_norm", v.get("max_grad_norm", 1.0), lo=0.0)},
        lambda v, c: {"max_grad_norm": v["training.max_grad_norm"]}, "clipping norm (0 = off); transformers' 1.0"),
    Row(("num_epochs",), ("training.epochs",), lambda v, c: {
        "training.epochs": as_float("num_epochs", v.get("num_epochs", 1.0), lo=1e-6)},
        lambda v, c: {"num_epochs": v["training.epochs"]}, "passes over the data; axolotl's 1"),
    Row(("max_steps",), ("training.max_steps",), _max_steps, _max_steps_w,
        "optimizer steps; set, it ends the run before the epochs (-1 in plan.yaml = unset)"),
    _simple("seed", "training.seed", lambda k, x: as_int(k, x, minimum=0), note="random seed"),
    Row(("train_on_inputs",), ("training.completion_only_loss",), _train_on_inputs,
        lambda v, c: {} if _is_pref(c) else {"train_on_inputs": not v.get("training.completion_only_loss", True)},
        "inverted: train_on_inputs false = loss on responses only"),
    Row(("rl_beta", "dpo_beta"), ("training.dpo_beta",), _beta,
        lambda v, c: {"rl_beta": v["training.dpo_beta"]} if _is_pref(c) else {}, "DPO beta; TRL's 0.1"),
    Row(("eval_steps",), ("evaluation.eval_steps",), _eval_steps,
        lambda v, c: {"eval_steps": v["evaluation.eval_steps"] if c.get("data.val_split", 0) > 0 else None},
        "optimizer steps between evaluations (written only with a validation split)"),
    _simple("early_stopping_patience", "evaluation.early_stopping_patience", lambda k, x: as_int(k, x),
            note="evaluations without improvement before stopping"),
    Row(("save_steps",), ("checkpointing.save_steps",), _save_steps,
        lambda v, c: {"save_steps": v["checkpointing.save_steps"]}, "optimizer steps between checkpoints"),
    _simple("save_total_limit", "checkpointing.save_total_limit", lambda k, x: as_int(k, x),
            note="checkpoints kept"),
    Row(("val_set_size",), ("data.val_split",), _val, _val_w, "fraction held out for validation", planned=False),
    Row(("dataset_exact_deduplication",), ("data.drop_duplicates",), _dedup,
        lambda v, c: {"dataset_exact_deduplication": bool(v.get("data.drop_duplicates"))},
        "exact duplicate rows dropped",
        planned=False),
    Row(("tokens",), ("model.added_tokens",), _tokens,
        lambda v, c: {"tokens": list(v.get("model.added_tokens") or []) or None},
        "tokens added to the tokenizer (embeddings resized by their count)"),
    Row(("chat_template", "chat_template_jinja"), ("data.chat_template",), _template, _template_w,
        "tokenizer_default = the tokenizer's template; jinja + chat_template_jinja = data.chat_template; chatml when "
        "ftplan rendered with its ChatML default", planned=False),
]

# Keys whose effect on memory or time ftplan does not model: listed in unsupported_keys when set.
UNSUPPORTED = {
    "liger_rms_norm": "Liger kernel (saves some activation memory, not modelled)",
    "liger_rms_norm_gated": "Liger kernel (not modelled)",
    "liger_glu_activation": "Liger kernel (saves MLP activation memory, not modelled)",
    "liger_swiglu": "Liger kernel (saves MLP activation memory, not modelled)",
    "liger_rope": "Liger kernel (not modelled)",
    "liger_layer_norm": "Liger kernel (not modelled)",
    "liger_cross_entropy": "Liger cross-entropy on materialised logits (not modelled)",
    "liger_use_token_scaling": "Liger option (not modelled)",
    "lora_mlp_kernel": "axolotl LoRA kernels (fused autograd functions; activation savings not modelled)",
    "lora_qkv_kernel": "axolotl LoRA kernels (not modelled)",
    "lora_o_kernel": "axolotl LoRA kernels (not modelled)",
    "lora_embedding_kernel": "axolotl LoRA kernels (not modelled)",
    "unsloth_cross_entropy_loss": "Unsloth kernel (not modelled)",
    "unsloth_lora_mlp": "Unsloth kernel (not modelled)",
    "unsloth_lora_qkv": "Unsloth kernel (not modelled)",
    "unsloth_lora_o": "Unsloth kernel (not modelled)",
    "unsloth_rms_norm": "Unsloth kernel (not modelled)",
    "unsloth_rope": "Unsloth kernel (not modelled)",
    "chunked_cross_entropy": "chunked loss over materialised logits (not modelled)",
    "tiled_mlp": "tiled MLP activations (not modelled)",
    "flash_attn_cross_entropy": "flash-attn cross-entropy kernel (not modelled)",
    "flash_attn_fuse_mlp": "fused MLP (not modelled)",
    "flash_attn_fuse_qkv": "fused QKV (not modelled)",
    "flash_attn_rms_norm": "flash-attn RMSNorm (not modelled)",
    "torch_compile": "torch.compile (changes activation memory and speed; not modelled)",
    "sequence_parallel_degree": "sequence parallelism splits each sequence over GPUs (not modelled)",
    "context_parallel_size": "context parallelism (not modelled)",
    "tensor_parallel_size": "tensor parallelism (not modelled)",
    "dp_shard_size": "N-D parallelism layout (not modelled)",
    "dp_replicate_size": "N-D parallelism layout (not modelled)",
    "selective_checkpointing": "selective checkpointing (not modelled)",
    "dynamic_checkpoint": "dynamic checkpointing (not modelled)",
    "embeddings_skip_upcast": "embeddings kept in 16-bit (not modelled)",
    "fp32_norms": "norms kept in fp32 (not modelled)",
    "quantize_moe_experts": "quantized MoE experts (not modelled)",
    "experts_implementation": "MoE experts kernel (not modelled)",
    "neftune_noise_alpha": "NEFTune noise (a small temporary, not modelled)",
    "peft_layers_to_transform": "adapters on some layers only (estimated on all)",
    "peft_layers_pattern": "adapters on some layers only (estimated on all)",
    "lora_target_parameters": "adapters on parameters (MoE experts; not modelled)",
    "peft_layer_replication": "replicated layers (not modelled)",
    "loraplus_lr_ratio": "LoRA+ learning rates (no effect on memory; not carried)",
    "relora": "ReLoRA restarts (not modelled)",
    "lisa_n_layers": "LISA layer sampling (not modelled)",
    "pad_to_sequence_len": "pads every batch to sequence_len (the estimate is already at sequence_len)",
    "batch_flattening": "padding-free batches (the estimate assumes padded batches when not packing)",
    "eval_batch_size": "evaluation batch (not modelled: ftplan evaluates with the training micro-batch)",
    "eval_sequence_len": "evaluation length (not modelled)",
    "dpo_padding_free": "padding-free DPO batches (not modelled)",
    "precompute_ref_log_probs": "reference log-probs computed before training (not modelled)",
    "deepcompile": "DeepSpeed compile (not modelled)",
    "max_memory": "per-GPU memory cap for loading (not modelled)",
    "gpu_memory_limit": "per-GPU memory cap for loading (not modelled)",
    "device_map": "model placement (not modelled)",
    "use_kernels": "hub kernels (not modelled)",
    "gradient_checkpointing_kwargs": "checkpointing options (reentrant or not; not modelled)",
    "lora_on_cpu": "LoRA loading on the CPU (not modelled)",
    "ple_cpu_offload": "per-layer embeddings on the CPU (not modelled)",
    "batch_size": "total batch: axolotl derives the accumulation from it (read gradient_accumulation_steps)",
    "model_quantization_config": "pre-quantized checkpoint (not modelled)",
    "peft": "PEFT backend options (estimated as bitsandbytes)",
}

# Keys that can't be estimated at all: one line, exit 2.
REFUSED = {
    "unfrozen_parameters": "partial fine-tuning of selected parameters is not modelled",
    "qat": "quantization-aware training is not modelled",
    "reward_model": "reward-model training is not modelled",
    "process_reward_model": "reward-model training is not modelled",
    "use_onebitllms": "1.58-bit training is not modelled",
    "diffusion": "diffusion LM training is not modelled",
}

# Keys without effect on memory or time (listed as ignored, never dropped silently).
IGNORED = (
    "base_model_config", "model_type", "tokenizer_type", "tokenizer_config", "tokenizer_use_fast", "tokenizer_legacy",
    "tokenizer_use_mistral_common", "processor_type", "revision_of_model", "special_tokens", "added_tokens_overrides",
    "output_dir", "dataset_prepared_path", "logging_steps", "resume_from_checkpoint", "auto_resume_from_checkpoints",
    "strict", "tf32", "evals_per_epoch", "saves_per_epoch", "warmup_steps", "eval_sample_packing",
    "loss_watchdog_threshold", "loss_watchdog_patience", "save_first_step", "save_safetensors", "save_only_model",
    "save_strategy", "eval_strategy", "evaluation_strategy", "lora_model_dir", "lora_fan_in_fan_out",
    "dataset_processes", "dataset_num_proc", "shuffle_merged_datasets", "shuffle_before_merging_datasets",
    "test_datasets", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_prefetch_factor",
    "dataloader_drop_last", "ddp_timeout", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "ddp_find_unused_parameters",
    "group_by_length", "default_system_message", "eot_tokens", "chat_template_kwargs", "merge_lora", "merge_method",
    "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "max_prompt_len", "min_sample_len",
    "excess_length_strategy", "sample_packing_eff_est", "sample_packing_group_size", "sample_packing_bin_size",
    "sample_packing_sequentially", "multipack_real_batches", "curriculum_sampling", "cosine_min_lr_ratio",
    "cosine_constant_lr_ratio", "lr_div_factor", "lr_quadratic_warmup", "lr_scheduler_kwargs", "adam_beta1",
    "adam_beta2", "adam_beta3", "adam_epsilon", "adam_epsilon2", "optim_args", "embedding_lr", "embedding_lr_scale",
    "loraplus_lr_embedding", "peft_use_rslora", "peft_init_lora_weights", "low_cpu_mem_usage", "is_preprocess",
    "include_tokens_per_second", "include_tkps", "profiler_steps", "use_tensorboard", "gc_steps",
    "torch_empty_cache_steps", "gc_collect_steps", "debug", "world_size", "local_rank", "ddp",
    "fsdp_final_state_dict_type", "dpo_use_weighting", "dpo_label_smoothing", "dpo_loss_type", "dpo_loss_weights",
    "rpo_alpha", "dpo_use_logits_to_keep", "mean_resizing_embeddings", "resize_token_embeddings_to_32x",
    "shrink_embeddings", "fix_untrained_tokens", "hf_use_auth_token", "push_dataset_to_hub", "remove_unused_columns",
    "skip_prepare_dataset", "num_dataset_shards_to_save", "dataset_shard_num", "dataset_shard_idx",
    "dataset_keep_in_memory", "trl", "vllm", "tokenizer_save_jinja_files",
)
IGNORED_PREFIXES = ("wandb_", "mlflow_", "comet_", "hub_", "gradio_", "ray_", "swanlab_", "trackio_", "use_wandb",
                    "use_mlflow", "use_comet", "use_swanlab", "generation_", "eval_causal_lm", "do_bench", "bench_",
                    "do_causal_lm", "profiler_", "eval_max_new", "eval_table")


# ----------------------------------------------------------------------------------------------------------
# The dataset entry (export): axolotl's dataset types and field mapping for the plan's data layout
# ----------------------------------------------------------------------------------------------------------

# ftplan file type -> axolotl ds_type (Hugging Face datasets' builder: json reads JSON Lines and JSON arrays)
DS_TYPES = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet", "txt": "text"}


def _user_prompt(instruction: str, output: str, system: str | None = None) -> dict:
    """axolotl's user-defined prompt type (datasets.py UserDefinedPrompterType): the prompt field as is, the
    output trained on; the text is not wrapped in the chat template."""
    out = {"field_instruction": instruction, "field_output": output, "format": "{instruction}",
           "no_input_format": "{instruction}"}
    if system:
        out["field_system"] = system
    return out


def dataset_config(plan, lay, out_dir) -> tuple[dict, None]:
    """``datasets: [...]`` for the plan's data file (docs/dataset-formats/*.qmd, prompt_strategies/)."""
    f = lay.fields
    if lay.file_type not in DS_TYPES:
        raise BadValue("data.path", f"{lay.path}: axolotl cannot load {lay.file_type} files",
                       hint="convert it to JSON Lines")
    entry: dict = {"path": lay.path, "ds_type": DS_TYPES[lay.file_type], "split": "train"}
    fmt = lay.format
    if fmt == "alpaca":
        if (f.get("instruction"), f.get("input", "input"), f.get("output")) == ("instruction", "input", "output") \
                and "system" not in f:
            entry["type"] = "alpaca"
        else:
            extra = {"field_input": f["input"], "format": "{instruction}\n{input}"} if "input" in f else {}
            entry["type"] = {**_user_prompt(f["instruction"], f["output"], f.get("system")), **extra}
        lay.notes.append("axolotl's alpaca types render the Alpaca prompt, not the tokenizer's chat template ftplan "
                         "trains alpaca rows with" + ("; the history column is not read" if "history" in f else ""))
    elif fmt == "chat":
        entry["type"] = "chat_template"
        entry["field_messages"] = f["messages"]
        entry["message_property_mappings"] = ({"role": "from", "content": "value"} if lay.chat_style == "sharegpt"
                                              else {"role": "role", "content": "content"})
        if "tools" in f:
            entry["field_tools"] = f["tools"]
        if "system" in f:
            lay.notes.append(f"the '{f['system']}' column beside the messages is not read by axolotl's chat_template "
                             "type (put the system turn in the messages)")
    elif fmt == "prompt_completion":
        entry["type"] = _user_prompt(f["prompt"], f["completion"], f.get("system"))
        lay.notes.append("prompt/completion rows are trained as plain text (no chat template), as axolotl's "
                         "user-defined prompt type does")
    elif fmt == "text":
        entry["type"] = "completion"
        entry["field"] = f.get("text", "text")
    elif fmt == "classification":
        entry["type"] = _user_prompt(f["text"], f["label"])
        lay.notes.append("classification rows become prompt (text) -> label generation, as ftplan's generate mode")
    elif fmt == "preference":
        if lay.pref_style == "explicit":
            entry.update({"type": "chat_template.default", "field_messages": f["prompt"],
                          "field_chosen": f["chosen"], "field_rejected": f["rejected"]})
        else:
            entry.update({"type": "chat_template.argilla_chat", "field_chosen": f["chosen"],
                          "field_rejected": f["rejected"]})
    else:
        raise BadValue("data.format", f"{fmt} data has no axolotl dataset type here")
    return {"datasets": [entry]}, None
