"""Helpers for tests/test_model_spec.py: tiny architecture configs and transformers/peft builders.

torch, transformers and peft are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import functools

# Small dimensions with GQA (4 query heads, 2 kv heads) so peft's GQA paths are exercised.
_BASE = {
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 64,
}

# One tiny config per supported model_type (plus variants that flip the bias / tying code paths).
TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(model_type="llama", **_BASE),
    "llama-bias-tied": dict(
        model_type="llama", attention_bias=True, mlp_bias=True, tie_word_embeddings=True, **_BASE
    ),
    "mistral": dict(model_type="mistral", **_BASE),
    "qwen2": dict(model_type="qwen2", **_BASE),
    "qwen3": dict(model_type="qwen3", head_dim=24, **_BASE),
    "gemma": dict(model_type="gemma", head_dim=32, **_BASE),
    "gemma2": dict(model_type="gemma2", head_dim=32, **_BASE),
    "phi3": dict(model_type="phi3", pad_token_id=0, bos_token_id=1, eos_token_id=2, **_BASE),
    "mixtral": dict(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2, **_BASE),
    "qwen3_moe": dict(
        model_type="qwen3_moe",
        head_dim=16,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=48,
        **_BASE,
    ),
    # Hybrid: layers 0-2 gated DeltaNet (linear_attn), layer 3 full attention; MoE with a shared expert.
    "qwen3_next": dict(
        model_type="qwen3_next",
        **dict(_BASE, num_hidden_layers=4),
        head_dim=16,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=48,
        shared_expert_intermediate_size=40,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=8,
        linear_value_head_dim=12,
    ),
    "gpt2": {
        "model_type": "gpt2",
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 4,
        "vocab_size": 128,
        "n_positions": 64,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
}


def quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()


def build_model(config: dict, *, meta: bool = False):
    """``AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))``, on the meta device if asked."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    quiet_transformers()
    hf_config = AutoConfig.for_model(**config)
    if meta:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(hf_config)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(hf_config)


@functools.cache
def meta_model(hub_id: str):
    """The transformers model for a catalog entry on the meta device (no memory), built once per test run."""
    from planner.model_spec import catalog

    return build_model(dict(catalog()[hub_id]["config"]), meta=True)


def peft_trainable(config: dict, peft_config) -> int:
    """Trainable parameters after ``get_peft_model`` on a freshly built tiny model."""
    return peft_model_summary(config, peft_config)[0]


def peft_model_summary(config: dict, peft_config) -> tuple[int, set[str]]:
    """(trainable parameters, names of the nn.Linear/Conv1D modules peft wrapped) for a tiny model."""
    import warnings

    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(build_model(config), peft_config)
    wrapped = {
        name.removeprefix("base_model.model.")
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and type(module.get_base_layer()).__name__ in {"Linear", "Conv1D"}
    }
    return model.get_nb_trainable_parameters()[0], wrapped


def component_of(param_name: str) -> str:
    """Which ParamCounts field a transformers parameter name belongs to (independent of planner code)."""
    leaf = param_name.rsplit(".", 2)
    if param_name.startswith("lm_head."):
        return "lm_head"
    if any(k in param_name for k in ("embed_tokens", ".wte.", ".wpe.")):
        return "embeddings"
    if "norm" in param_name or ".ln_" in param_name:
        return "norms"
    if ".experts." in param_name:
        return "experts"
    if ".mlp." in param_name or ".feed_forward." in param_name:  # Llama 4 names its MLP / MoE block feed_forward
        return "mlp"
    # Qwen3-Next's gated-DeltaNet layers (linear_attn: projections, conv1d, A_log, dt_bias) are attention too.
    if any(k in param_name for k in (".self_attn.", ".attn.", ".linear_attn.")):
        return "attention"
    return f"unknown:{leaf}"
