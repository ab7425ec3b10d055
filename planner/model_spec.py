"""Model architecture facts: from the built-in catalog, a local HF folder, the HF cache or the hub.

The dataclasses below are what memory.py, cost.py, the rules and the executor read.
Implementation of the loaders and counters: see the functions at the bottom.

- ``load_model_spec(name)``: local folder -> catalog (planner/catalogs/models.json) -> HF cache -> hub
  (config.json only); ``spec_from_config(config_dict, name)`` for a config already in hand.
- ``spec.param_counts()`` / ``total_params`` / ``active_params``: equal to what transformers 5 builds,
  to the parameter (tests/test_model_spec.py checks every catalog entry on the meta device).
- ``spec.linear_layers()``: one decoder layer's Linear/Conv1D modules (and MoE parameter matrices).
- ``spec.lora_trainable_params(targets, r, dora=)``, ``spec.lora_modules(...)``,
  ``spec.prompt_tuning_params(n)``, ``spec.prefix_tuning_params(n)``: what peft 0.21 creates.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from planner.errors import FtplanError, close_matches
from planner.files import write_atomic

MlpType = Literal["gated", "plain"]  # gated: SwiGLU/GeGLU (gate, up, down); plain: fc -> act -> proj (GPT-2)
NormType = Literal["rmsnorm", "layernorm"]


@dataclass(frozen=True)
class LinearShape:
    """One linear (or GPT-2 Conv1D) layer kind inside a decoder block, as peft sees it.

    ``name`` is the module's attribute name (``q_proj``, ``c_attn``...), which is what LoRA
    ``target_modules`` match against. ``count`` is how many such modules one layer has (1, or the
    number of experts for MoE expert linears).
    """

    name: str
    in_features: int
    out_features: int
    bias: bool
    count: int = 1
    role: Literal["attn", "mlp", "expert", "router"] = "attn"
    # what torch object it is, and where it sits in a layer.
    # "linear": nn.Linear, "conv1d": transformers' Conv1D (GPT-2; LoRA treats it like a Linear), "param":
    # a bare nn.Parameter (transformers 5 fuses MoE experts into 3-D tensors and the router into a
    # parameter; peft adapts those with ParamWrapper via ``target_parameters``, to which it also remaps
    # v4 names such as w1/w2/w3/gate and 'all-linear'; see ``lora_modules``).
    kind: Literal["linear", "conv1d", "param"] = "linear"
    parent: str = ""  # path inside the decoder layer: "self_attn", "mlp", "mlp.experts", "attn"...

    @property
    def params(self) -> int:
        """Weights (+ bias) of all ``count`` copies."""
        return self.count * (self.in_features * self.out_features + (self.out_features if self.bias else 0))

    @property
    def path(self) -> str:
        """Dotted name inside a decoder layer, e.g. ``self_attn.q_proj`` or ``mlp.c_proj``."""
        return f"{self.parent}.{self.name}" if self.parent else self.name


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts by component; ``total`` equals sum(p.numel()) of the transformers model."""

    embeddings: int  # token (+ learned position) embeddings
    attention: int  # all layers, incl. biases
    mlp: int  # all layers; for MoE: experts + router
    norms: int  # all layer norms incl. the final one
    lm_head: int  # 0 when tied to the embeddings
    other: int = 0  # anything else (e.g. score head)
    experts: int = 0  # of which MoE experts (subset of mlp)

    @property
    def total(self) -> int:
        return self.embeddings + self.attention + self.mlp + self.norms + self.lm_head + self.other

    @property
    def active(self) -> int:
        """Parameters touched per token (MoE: only top-k experts), for FLOPs."""
        return self.total  # overridden by ModelSpec.active_params for MoE


@dataclass(frozen=True)
class Mla:
    """DeepSeek-V2/V3 multi-head latent attention (transformers modeling_deepseek_v3.py DeepseekV3Attention)."""

    q_lora_rank: int | None  # None: a plain q_proj instead of q_a_proj -> q_a_layernorm -> q_b_proj
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class LinearAttn:
    """Gated DeltaNet linear attention (transformers modeling_qwen3_next.py Qwen3NextGatedDeltaNet): the token
    mixer of the ``linear_attention`` layers of a hybrid model; no KV cache, a fixed-size recurrent state."""

    num_k_heads: int  # linear_num_key_heads
    num_v_heads: int  # linear_num_value_heads
    head_k_dim: int  # linear_key_head_dim
    head_v_dim: int  # linear_value_head_dim
    conv_kernel: int  # linear_conv_kernel_dim: depthwise causal Conv1d over q, k and v

    @property
    def key_dim(self) -> int:
        return self.num_k_heads * self.head_k_dim

    @property
    def value_dim(self) -> int:
        return self.num_v_heads * self.head_v_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the depthwise Conv1d (q, k and v concatenated)."""
        return 2 * self.key_dim + self.value_dim

    @property
    def state_elements(self) -> int:
        """Recurrent state of one sequence in one layer: [v_heads, head_k_dim, head_v_dim] (+ the conv window)."""
        return self.num_v_heads * self.head_k_dim * self.head_v_dim + self.conv_dim * (self.conv_kernel - 1)


Mixer = Literal["attention", "linear_attention"]  # a decoder layer's token mixer


@dataclass(frozen=True)
class ModelSpec:
    """Everything the planner needs to know about a model; no weights."""

    name: str  # hub id, catalog key or local path as the user gave it
    model_type: str  # config.json model_type: llama, mistral, qwen2, gemma2, phi3, gpt2, mixtral...
    architecture: str  # e.g. LlamaForCausalLM
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    mlp_type: MlpType
    norm_type: NormType
    hidden_act: str = "silu"
    num_experts: int = 0  # MoE: experts per layer (0 = dense)
    num_experts_per_tok: int = 0
    attention_bias: bool = False
    torch_dtype: str = "bfloat16"  # the dtype the weights are published in
    source: Literal["catalog", "local", "hf-cache", "hub"] = "catalog"
    local_path: str | None = None  # folder with config.json (and maybe weights/tokenizer)
    tokenizer_path: str | None = None  # folder with a tokenizer, when one is available locally
    config: dict = field(default_factory=dict, compare=False, repr=False)  # raw config.json
    mlp_bias: bool = False  # Llama's config.mlp_bias: bias on gate/up/down
    notes: tuple[str, ...] = field(default=(), compare=False)  # caveats worth showing the user
    # Architectures outside FAMILIES: counts from transformers' meta-device build (executor/meta_count.py)
    counted: ParamCounts | None = None
    # MoE models whose layers differ (DeepSeek-V3's first_k_dense_replace, Llama 4's interleave_moe_layer_step,
    # Qwen3-MoE's mlp_only_layers): the indices of the sparse (expert) layers; None = every layer when MoE.
    sparse_layers: tuple[int, ...] | None = None
    dense_intermediate_size: int = 0  # MLP width of the dense layers of such a MoE model
    shared_expert_intermediate_size: int = 0  # always-active shared expert MLP beside the routed ones (0: none)
    mla: Mla | None = None  # DeepSeek multi-head latent attention dimensions (None: ordinary q/k/v/o)
    # Hybrid models (Qwen3-Next): each layer's token mixer, from config.layer_types; None = softmax attention in
    # every layer. ``linear_attn`` holds the dimensions of the linear-attention layers.
    layer_mixers: tuple[Mixer, ...] | None = None
    linear_attn: LinearAttn | None = None

    # Implemented in this module (see below): param_counts(), linear_layers(), total_params...

    @property
    def family(self) -> Family:
        """The architecture layout this spec is counted with (see ``FAMILIES``)."""
        return family_for(self.model_type)

    def linear_layers(self, layer: int = 0) -> list[LinearShape]:
        """Linear/Conv1D modules (and MoE parameter matrices) of ONE decoder layer (``layer``, default the
        first), as peft sees them. Every layer is alike except in MoE models with dense layers and in hybrid
        models (linear-attention and full-attention layers): see ``layer_groups``."""
        return _layer_shapes(self, self.is_sparse_layer(layer), self.layer_mixer(layer))

    def layer_mixer(self, layer: int) -> Mixer:
        """Decoder layer ``layer``'s token mixer: "attention" (softmax attention with a KV cache) or
        "linear_attention" (Qwen3-Next's gated DeltaNet: no KV cache, see ``linear_attn``)."""
        return "attention" if self.layer_mixers is None else self.layer_mixers[layer]

    @property
    def num_attention_layers(self) -> int:
        """Layers with softmax attention (KV cache, seq x seq scores): all of them except in hybrid models."""
        if self.layer_mixers is None:
            return self.num_layers
        return sum(1 for m in self.layer_mixers if m == "attention")

    def is_sparse_layer(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` holds the routed experts (always False for dense models)."""
        if not self.num_experts:
            return False
        return self.sparse_layers is None or layer in self.sparse_layers

    def layer_groups(self) -> list[tuple[list[LinearShape], int]]:
        """(one layer's modules, how many layers look like it): one group for uniform models, a dense and a
        sparse group for DeepSeek-V3 / Llama 4 Maverick style models, a linear-attention and a full-attention
        group (each dense / sparse) for hybrid models such as Qwen3-Next. ``sum(n * sum(s.params for s in shapes))``
        is every layer's Linear/expert weights (what ``linear_layers() * num_layers`` is for uniform models)."""
        return _layer_groups(self)

    @property
    def num_sparse_layers(self) -> int:
        """Decoder layers with routed experts (0 for dense models)."""
        return sum(1 for i in range(self.num_layers) if self.is_sparse_layer(i))

    def param_counts(self) -> ParamCounts:
        """Parameters by component; ``.total`` equals ``sum(p.numel())`` of the transformers model."""
        return self.counted if self.counted is not None else _param_counts(self)

    @property
    def total_params(self) -> int:
        return self.param_counts().total

    @property
    def active_params(self) -> int:
        """Parameters touched per token: MoE layers use only ``num_experts_per_tok`` of the experts."""
        pc = self.param_counts()
        if not self.num_experts or not pc.experts:
            return pc.total
        return pc.total - pc.experts + pc.experts * self.num_experts_per_tok // self.num_experts

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def lora_trainable_params(
        self,
        targets: tuple[str, ...] | list[str] | str,
        r: int,
        *,
        dora: bool = False,
        parameters: tuple[str, ...] = (),
    ) -> int:
        """Trainable parameters peft's ``LoraConfig(target_modules=targets, r=r, use_dora=dora)`` adds."""
        return lora_trainable_params(self, targets, r, dora=dora, parameters=parameters)

    def lora_modules(
        self, targets: tuple[str, ...] | list[str] | str, r: int, *, parameters: tuple[str, ...] = ()
    ) -> list[LoraModule]:
        """Every module/parameter LoRA wraps, with its full name and rank (see ``lora_modules``)."""
        return lora_modules(self, targets, r, parameters=parameters)

    def lora_target_modules(self, targets: tuple[str, ...] | list[str] | str) -> list[tuple[str, LinearShape]]:
        """The (full module name, shape) pairs peft would wrap for ``targets``."""
        return matched_lora_modules(self, targets)

    def prompt_tuning_params(self, num_virtual_tokens: int) -> int:
        """peft ``PromptTuningConfig``: one ``nn.Embedding(num_virtual_tokens, hidden_size)``."""
        return prompt_tuning_params(self, num_virtual_tokens)

    def prefix_tuning_params(
        self, num_virtual_tokens: int, *, projection: bool = False, encoder_hidden_size: int | None = None
    ) -> int:
        """peft ``PrefixTuningConfig``: a key and a value prefix per layer (see ``prefix_tuning_params``)."""
        return prefix_tuning_params(
            self, num_virtual_tokens, projection=projection, encoder_hidden_size=encoder_hidden_size
        )

    def default_lora_targets(self) -> tuple[str, ...]:
        return default_lora_targets(self)


# ---------------------------------------------------------------------------------------------------------
# Architecture families: how each config.json model_type lays out its parameters (transformers 5.x
# modeling_<type>.py, checked module by module against meta-device models in tests/test_model_spec.py).
# ---------------------------------------------------------------------------------------------------------

Bias = Literal["config", "yes", "no"]  # "config": follow config.attention_bias / config.mlp_bias


@dataclass(frozen=True)
class Family:
    """How one config.json model_type lays out its parameters (one row of ``FAMILIES``)."""

    layout: Literal["llama", "phi3", "gpt2", "moe"]
    architecture: str  # default class when config.json has no "architectures"
    qkv_bias: Bias = "config"
    o_bias: Bias = "config"
    mlp_bias: Bias = "no"
    norms_per_layer: int = 2  # Gemma 2 adds pre/post feed-forward norms: 4
    qk_norm: bool = False  # Qwen3: RMSNorm(head_dim) on q and k in every layer
    tie_default: bool = False  # the config class default for tie_word_embeddings
    head_dim_default: int | None = None  # None: hidden_size // num_attention_heads
    act_keys: tuple[str, ...] = ("hidden_act",)
    act_default: str = "silu"
    norm_type: NormType = "rmsnorm"
    mlp_type: MlpType = "gated"
    layer_prefix: str = "model.layers"
    attn_parent: str = "self_attn"
    embed_name: str = "model.embed_tokens"
    generic: bool = False  # not a known model_type: counted as Llama-like
    moe_v4_names: str = ""  # key of _MOE_V4_TARGETS: how peft maps transformers-4 expert names
    qk_norm_width: Literal["head", "proj"] = "head"  # OLMo 2: q_norm/k_norm over the whole projection
    attn_bias_default: bool = False  # config class default of attention_bias (gpt-oss: True)
    attn_kind: Literal["mha", "mla"] = "mha"  # mla: DeepSeek latent attention (ModelSpec.mla)
    sinks: bool = False  # gpt-oss: a learned attention-sink logit per head (self_attn.sinks)
    mlp_parent: str = "mlp"  # Llama 4: "feed_forward"
    router_name: str = "gate"  # MoE router: mlp.gate (Mixtral, Qwen3-MoE, DeepSeek), mlp.router (gpt-oss, Llama 4)
    router_kind: Literal["param", "linear"] = "param"  # Llama 4's router is an nn.Linear subclass
    router_bias: bool = False  # gpt-oss router has a bias
    expert_bias: bool = False  # gpt-oss experts have gate_up_proj_bias / down_proj_bias
    shared_expert: str = ""  # always-on shared expert MLP: "shared_experts" (DeepSeek), "shared_expert" (Llama 4)
    # Which layers are sparse: "all"; "qwen" (mlp_only_layers / decoder_sparse_step); "first_k"
    # (first_k_dense_replace dense layers first); "llama4" (moe_layers or interleave_moe_layer_step).
    sparse_rule: Literal["all", "qwen", "first_k", "llama4"] = "all"
    dense_width_key: str = "intermediate_size"  # config key of the dense layers' MLP width in a MoE model
    top_k_default: int = 2  # config class default of num_experts_per_tok
    # Hybrid models (Qwen3-Next): config.layer_types picks each layer's token mixer (see ModelSpec.layer_mixers).
    hybrid: bool = False
    attn_output_gate: bool = False  # Qwen3-Next: q_proj also emits a sigmoid output gate (2 x heads x head_dim)
    shared_width_key: str = ""  # config key of the shared expert's width (Qwen3-Next: shared_expert_intermediate_size)
    shared_expert_gate: bool = False  # Qwen3-Next: mlp.shared_expert_gate, nn.Linear(hidden, 1) scales the shared one


FAMILIES: dict[str, Family] = {
    # modeling_llama.py: q/k/v/o bias = config.attention_bias, gate/up/down bias = config.mlp_bias.
    "llama": Family("llama", "LlamaForCausalLM", mlp_bias="config"),
    # modeling_mistral.py: every Linear has bias=False.
    "mistral": Family("llama", "MistralForCausalLM", qkv_bias="no", o_bias="no"),
    # modeling_qwen2.py: q/k/v bias=True, o_proj bias=False.
    "qwen2": Family("llama", "Qwen2ForCausalLM", qkv_bias="yes", o_bias="no"),
    # modeling_qwen3.py: bias = config.attention_bias (default False), q_norm/k_norm over head_dim;
    # configuration_qwen3.py: head_dim defaults to 128, not hidden/heads.
    "qwen3": Family("llama", "Qwen3ForCausalLM", qk_norm=True, head_dim_default=128),
    # configuration_gemma.py: head_dim 256, tie_word_embeddings True, hidden_activation gelu_pytorch_tanh.
    "gemma": Family(
        "llama",
        "GemmaForCausalLM",
        tie_default=True,
        head_dim_default=256,
        act_keys=("hidden_activation", "hidden_act"),
        act_default="gelu_pytorch_tanh",
    ),
    # modeling_gemma2.py: input/post_attention/pre_feedforward/post_feedforward RMSNorm per layer.
    "gemma2": Family(
        "llama",
        "Gemma2ForCausalLM",
        norms_per_layer=4,
        tie_default=True,
        head_dim_default=256,
        act_keys=("hidden_activation", "hidden_act"),
        act_default="gelu_pytorch_tanh",
    ),
    # modeling_phi3.py: fused qkv_proj and gate_up_proj, no biases.
    "phi3": Family("phi3", "Phi3ForCausalLM", qkv_bias="no", o_bias="no"),
    # modeling_mixtral.py (transformers 5): router mlp.gate.weight [E, H]; experts fused into
    # mlp.experts.gate_up_proj [E, 2I, H] and mlp.experts.down_proj [E, H, I] (nn.Parameter, not Linear).
    "mixtral": Family("moe", "MixtralForCausalLM", qkv_bias="no", o_bias="no", moe_v4_names="mixtral"),
    # modeling_qwen3_moe.py: Qwen3 attention (q_norm/k_norm) + the same fused experts, each of width
    # moe_intermediate_size; all layers sparse when decoder_sparse_step == 1 and mlp_only_layers == [].
    # configuration_qwen3_moe.py (5.23): head_dim defaults to hidden_size // num_attention_heads (Qwen3's
    # dense config defaults to 128; published Qwen3-MoE checkpoints state head_dim explicitly).
    # Dense layers: modeling_qwen3_moe.py Qwen3MoeDecoderLayer uses Qwen3MoeMLP(intermediate_size) for layers in
    # mlp_only_layers or where (layer_idx + 1) % decoder_sparse_step != 0.
    "qwen3_moe": Family("moe", "Qwen3MoeForCausalLM", qk_norm=True, moe_v4_names="qwen2_moe", sparse_rule="qwen"),
    # configuration_gemma3.py Gemma3TextConfig: head_dim 256, tie True, gelu_pytorch_tanh; modeling_gemma3.py:
    # Gemma 2's four norms per layer plus Qwen3-style q_norm/k_norm over head_dim.
    "gemma3_text": Family(
        "llama",
        "Gemma3ForCausalLM",
        norms_per_layer=4,
        qk_norm=True,
        tie_default=True,
        head_dim_default=256,
        act_keys=("hidden_activation", "hidden_act"),
        act_default="gelu_pytorch_tanh",
    ),
    # modeling_olmo2.py: q/k/v/o bias = attention_bias, q_norm RMSNorm(heads * head_dim), k_norm
    # RMSNorm(kv_heads * head_dim); post_attention and post_feedforward norms (no input norm); untied.
    "olmo2": Family("llama", "Olmo2ForCausalLM", qk_norm=True, qk_norm_width="proj"),
    # modeling_smollm3.py: Llama's layer (attention_bias, mlp_bias); configuration_smollm3.py ties embeddings.
    "smollm3": Family("llama", "SmolLM3ForCausalLM", mlp_bias="config", tie_default=True),
    # modeling_granite.py: Llama's layer; the *_multiplier config keys scale activations, no parameters.
    "granite": Family("llama", "GraniteForCausalLM", mlp_bias="config"),
    # modeling_gpt_oss.py: q/k/v/o bias = attention_bias (config default True), sinks [heads] per layer; router
    # mlp.router (weight [E, H] + bias [E]); experts gate_up_proj [E, H, 2I] + bias [E, 2I], down_proj [E, I, H]
    # + bias [E, H]; every layer sparse. configuration_gpt_oss.py: head_dim 64, 4 experts per token.
    "gpt_oss": Family(
        "moe",
        "GptOssForCausalLM",
        attn_bias_default=True,
        head_dim_default=64,
        sinks=True,
        router_name="router",
        router_bias=True,
        expert_bias=True,
        top_k_default=4,
    ),
    # modeling_deepseek_v3.py: MLA attention (q_a_proj, q_a_layernorm, q_b_proj, kv_a_proj_with_mqa,
    # kv_a_layernorm, kv_b_proj, o_proj); layers < first_k_dense_replace have DeepseekV3MLP(intermediate_size),
    # the others mlp.gate (weight [E, H]; e_score_correction_bias is a buffer), fused experts of width
    # moe_intermediate_size and mlp.shared_experts MLP(moe_intermediate_size * n_shared_experts). The MTP
    # layer (num_nextn_predict_layers) is not built by transformers. peft maps it like qwen2_moe
    # (transformers/conversion_mapping.py _MODEL_TO_CONVERSION_PATTERN).
    "deepseek_v3": Family(
        "moe",
        "DeepseekV3ForCausalLM",
        attn_kind="mla",
        shared_expert="shared_experts",
        sparse_rule="first_k",
        top_k_default=8,
        moe_v4_names="qwen2_moe",
    ),
    # modeling_llama4.py (text model): q/k/v/o bias = attention_bias, qk_norm is a parameterless L2 norm; MoE
    # layers (config.moe_layers) have feed_forward.router (nn.Linear H -> E, no bias), experts gate_up_proj
    # [E, H, 2I], down_proj [E, I, H] and feed_forward.shared_expert MLP(intermediate_size); the other layers
    # an MLP of intermediate_size_mlp. configuration_llama4.py: head_dim 128, 1 expert per token.
    "llama4_text": Family(
        "moe",
        "Llama4ForCausalLM",
        head_dim_default=128,
        mlp_parent="feed_forward",
        router_name="router",
        router_kind="linear",
        shared_expert="shared_expert",
        sparse_rule="llama4",
        dense_width_key="intermediate_size_mlp",
        top_k_default=1,
    ),
    # modeling_qwen3_next.py: config.layer_types (default: every full_attention_interval-th layer full attention)
    # picks each layer's mixer. linear_attention layers: linear_attn (Qwen3NextGatedDeltaNet) in_proj_qkvz
    # [H -> 2*key_dim + 2*value_dim], in_proj_ba [H -> 2*v_heads], out_proj [value_dim -> H], all bias-free Linears,
    # plus a depthwise conv1d [conv_dim, 1, kernel], dt_bias [v_heads], A_log [v_heads] and a gated RMSNorm
    # (head_v_dim). full_attention layers: Qwen3's attention with q_proj doubled (output gate), q_norm/k_norm.
    # MLP as Qwen3-MoE (mlp.gate router parameter, fused experts of moe_intermediate_size, mlp_only_layers /
    # decoder_sparse_step) plus mlp.shared_expert MLP(shared_expert_intermediate_size) and mlp.shared_expert_gate
    # nn.Linear(H, 1). configuration_qwen3_next.py: head_dim 256, 10 of 512 experts; peft maps it like qwen2_moe.
    "qwen3_next": Family(
        "moe",
        "Qwen3NextForCausalLM",
        qk_norm=True,
        head_dim_default=256,
        moe_v4_names="qwen2_moe",
        sparse_rule="qwen",
        shared_expert="shared_expert",
        shared_width_key="shared_expert_intermediate_size",
        shared_expert_gate=True,
        attn_output_gate=True,
        hybrid=True,
        top_k_default=10,
    ),
    # modeling_gpt2.py: Conv1D c_attn/c_proj/c_fc/c_proj with biases, LayerNorm with bias, learned wpe.
    "gpt2": Family(
        "gpt2",
        "GPT2LMHeadModel",
        qkv_bias="yes",
        o_bias="yes",
        mlp_bias="yes",
        tie_default=True,
        act_keys=("activation_function",),
        act_default="gelu_new",
        norm_type="layernorm",
        mlp_type="plain",
        layer_prefix="transformer.h",
        attn_parent="attn",
        embed_name="transformer.wte",
    ),
}
_GENERIC = Family("llama", "LlamaForCausalLM", mlp_bias="config", generic=True)


def family_for(model_type: str) -> Family:
    """The layout for a config.json ``model_type``; unknown types get the Llama-like generic layout."""
    return FAMILIES.get(model_type, _GENERIC)


def _bias(rule: Bias, flag: bool) -> bool:
    return flag if rule == "config" else rule == "yes"


def _attention_shapes(spec: ModelSpec) -> list[LinearShape]:
    fam = spec.family
    h, hd, att = spec.hidden_size, spec.head_dim, fam.attn_parent
    q_out, kv_out = spec.num_attention_heads * hd, spec.num_kv_heads * hd
    gate = 2 if fam.attn_output_gate else 1  # Qwen3-Next: q_proj emits the query and its output gate
    qkv_b, o_b = _bias(fam.qkv_bias, spec.attention_bias), _bias(fam.o_bias, spec.attention_bias)
    if fam.attn_kind == "mla" and spec.mla is not None:
        # DeepseekV3Attention: q_a/kv_a/o bias = attention_bias, q_b/kv_b never biased.
        m, heads, b = spec.mla, spec.num_attention_heads, spec.attention_bias
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            q = [
                LinearShape("q_a_proj", h, m.q_lora_rank, b, parent=att),
                LinearShape("q_b_proj", m.q_lora_rank, heads * qk, False, parent=att),
            ]
        else:
            q = [LinearShape("q_proj", h, heads * qk, False, parent=att)]
        return q + [
            LinearShape("kv_a_proj_with_mqa", h, m.kv_lora_rank + m.qk_rope_head_dim, b, parent=att),
            LinearShape("kv_b_proj", m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim), False, parent=att),
            LinearShape("o_proj", heads * m.v_head_dim, h, b, parent=att),
        ]
    if fam.layout == "phi3":
        return [
            LinearShape("qkv_proj", h, q_out + 2 * kv_out, qkv_b, parent=att),
            LinearShape("o_proj", q_out, h, o_b, parent=att),
        ]
    return [
        LinearShape("q_proj", h, gate * q_out, qkv_b, parent=att),
        LinearShape("k_proj", h, kv_out, qkv_b, parent=att),
        LinearShape("v_proj", h, kv_out, qkv_b, parent=att),
        LinearShape("o_proj", q_out, h, o_b, parent=att),
    ]


def _gated_mlp(h: int, inter: int, bias: bool, parent: str) -> list[LinearShape]:
    return [
        LinearShape("gate_proj", h, inter, bias, role="mlp", parent=parent),
        LinearShape("up_proj", h, inter, bias, role="mlp", parent=parent),
        LinearShape("down_proj", inter, h, bias, role="mlp", parent=parent),
    ]


def _linear_attention_shapes(spec: ModelSpec) -> list[LinearShape]:
    """Qwen3NextGatedDeltaNet's Linears (the conv1d, dt_bias, A_log and norm are counted in ``_mixer_extras``)."""
    la, h = spec.linear_attn, spec.hidden_size
    assert la is not None
    return [
        LinearShape("in_proj_qkvz", h, 2 * la.key_dim + 2 * la.value_dim, False, parent="linear_attn"),
        LinearShape("in_proj_ba", h, 2 * la.num_v_heads, False, parent="linear_attn"),
        LinearShape("out_proj", la.value_dim, h, False, parent="linear_attn"),
    ]


def _mixer_extras(spec: ModelSpec, mixer: Mixer) -> int:
    """Token-mixer parameters that are no Linear (ParamCounts.attention, as executor/meta_count.py files them):
    Qwen3-Next's depthwise conv1d weight [conv_dim, 1, kernel] (no bias), dt_bias and A_log [v_heads]."""
    if mixer != "linear_attention" or spec.linear_attn is None:
        return 0
    la = spec.linear_attn
    return la.conv_dim * la.conv_kernel + 2 * la.num_v_heads


def _layer_shapes(spec: ModelSpec, sparse: bool, mixer: Mixer = "attention") -> list[LinearShape]:
    """One decoder layer's modules: a sparse (routed-expert) layer or a dense one, with its token mixer."""
    fam = spec.family
    h, inter = spec.hidden_size, spec.intermediate_size
    mlp_b = _bias(fam.mlp_bias, spec.mlp_bias)
    if fam.layout == "gpt2":
        return [
            LinearShape("c_attn", h, 3 * h, True, kind="conv1d", parent="attn"),
            LinearShape("c_proj", h, h, True, kind="conv1d", parent="attn"),
            LinearShape("c_fc", h, inter, True, role="mlp", kind="conv1d", parent="mlp"),
            LinearShape("c_proj", inter, h, True, role="mlp", kind="conv1d", parent="mlp"),
        ]
    attn = _linear_attention_shapes(spec) if mixer == "linear_attention" else _attention_shapes(spec)
    if fam.layout == "phi3":
        return attn + [
            LinearShape("gate_up_proj", h, 2 * inter, mlp_b, role="mlp", parent="mlp"),
            LinearShape("down_proj", inter, h, mlp_b, role="mlp", parent="mlp"),
        ]
    mp = fam.mlp_parent
    if fam.layout == "moe" and not sparse:  # a dense layer of a MoE model
        return attn + _gated_mlp(h, spec.dense_intermediate_size or inter, mlp_b, mp)
    if fam.layout == "moe":
        e, eb = spec.num_experts, fam.expert_bias
        shapes = attn + [
            LinearShape(fam.router_name, h, e, fam.router_bias, role="router", kind=fam.router_kind, parent=mp),
            LinearShape("gate_up_proj", h, 2 * inter, eb, count=e, role="expert", kind="param", parent=f"{mp}.experts"),
            LinearShape("down_proj", inter, h, eb, count=e, role="expert", kind="param", parent=f"{mp}.experts"),
        ]
        if spec.shared_expert_intermediate_size and fam.shared_expert:
            shapes += _gated_mlp(h, spec.shared_expert_intermediate_size, False, f"{mp}.{fam.shared_expert}")
        if fam.shared_expert_gate:
            shapes.append(LinearShape("shared_expert_gate", h, 1, False, role="mlp", parent=mp))
        return shapes
    return attn + _gated_mlp(h, inter, mlp_b, mp)


def _layer_kind_counts(spec: ModelSpec) -> dict[tuple[bool, Mixer], int]:
    """(sparse, mixer) -> how many decoder layers are of that kind, sparse kinds first, then in layer order."""
    kinds: dict[tuple[bool, Mixer], int] = {}
    for i in range(spec.num_layers):
        key = (spec.is_sparse_layer(i), spec.layer_mixer(i))
        kinds[key] = kinds.get(key, 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: not kv[0][0]))


def _layer_groups(spec: ModelSpec) -> list[tuple[list[LinearShape], int]]:
    return [(_layer_shapes(spec, sparse, mixer), n) for (sparse, mixer), n in _layer_kind_counts(spec).items()]


def _layer_norms(spec: ModelSpec, mixer: Mixer = "attention") -> int:
    """Norm weights of one decoder layer (the same in dense and sparse layers; hybrid models' differ by mixer)."""
    fam, h = spec.family, spec.hidden_size
    norm_size = 2 * h if spec.norm_type == "layernorm" else h  # LayerNorm: weight + bias; RMSNorm: weight
    norms = fam.norms_per_layer * norm_size
    if mixer == "linear_attention" and spec.linear_attn is not None:
        return norms + spec.linear_attn.head_v_dim  # Qwen3NextRMSNormGated(head_v_dim), no q/k norms
    if fam.qk_norm and fam.qk_norm_width == "proj":  # OLMo 2
        norms += (spec.num_attention_heads + spec.num_kv_heads) * spec.head_dim
    elif fam.qk_norm:
        norms += 2 * spec.head_dim
    if spec.mla is not None:  # q_a_layernorm (with q_lora_rank) and kv_a_layernorm
        norms += (spec.mla.q_lora_rank or 0) + spec.mla.kv_lora_rank
    return norms


def _param_counts(spec: ModelSpec) -> ParamCounts:
    fam, h, n_layers = spec.family, spec.hidden_size, spec.num_layers
    attention = mlp = experts = 0
    norm_size = 2 * h if spec.norm_type == "layernorm" else h
    norms = norm_size  # the final norm
    for (sparse, mixer), n in _layer_kind_counts(spec).items():
        layer = _layer_shapes(spec, sparse, mixer)
        attention += n * (sum(s.params for s in layer if s.role == "attn") + _mixer_extras(spec, mixer))
        mlp += n * sum(s.params for s in layer if s.role != "attn")
        experts += n * sum(s.params for s in layer if s.role == "expert")
        norms += n * _layer_norms(spec, mixer)
    if fam.sinks:
        attention += n_layers * spec.num_attention_heads
    embeddings = spec.vocab_size * h
    if fam.layout == "gpt2":
        embeddings += spec.max_position_embeddings * h  # learned absolute positions (wpe)
    lm_head = 0 if spec.tie_word_embeddings else spec.vocab_size * h  # lm_head has no bias in all families
    return ParamCounts(
        embeddings=embeddings, attention=attention, mlp=mlp, norms=norms, lm_head=lm_head, experts=experts
    )


# ---------------------------------------------------------------------------------------------------------
# PEFT parameter counts
# ---------------------------------------------------------------------------------------------------------

# Default LoRA targets by model_type: peft/utils/constants.py
# TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING (peft 0.21); used when LoraConfig has no target_modules.
DEFAULT_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "qwen3_moe": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    # peft 0.21 has no phi3 entry (get_peft_model then demands explicit target_modules); qkv_proj is the
    # fused equivalent of the q_proj/v_proj default, so the executor must pass it explicitly.
    "phi3": ("qkv_proj",),
    "gpt2": ("c_attn",),
}
ALL_LINEAR = "all-linear"  # peft INCLUDE_LINEAR_LAYERS_SHORTHAND


def default_lora_targets(spec: ModelSpec) -> tuple[str, ...]:
    """peft's default ``target_modules`` for this model_type (q_proj/v_proj style for unknown types)."""
    return DEFAULT_LORA_TARGETS.get(spec.model_type, ("q_proj", "v_proj"))


def _normalise_targets(targets: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = tuple(t.strip() for t in targets.split(",")) if "," in targets else (targets,)
    out = tuple(t.strip() for t in targets if t and t.strip())
    if not out:
        raise FtplanError("LoRA target modules are empty", hint="use all-linear or names like q_proj,v_proj")
    return out


def _is_regex(target: str) -> bool:
    return any(c in target for c in "*+?[]()|^$\\")


def _module_candidates(spec: ModelSpec) -> list[tuple[str, LinearShape]]:
    """Every Linear/Conv1D module of the model by full name (decoder layers, then the output layer)."""
    fam, kinds = spec.family, _layer_kinds(spec, param=False)
    names = [(f"{fam.layer_prefix}.{i}.{s.path}", s) for i in range(spec.num_layers) for s in kinds[_kind(spec, i)]]
    lm_head = LinearShape("lm_head", spec.hidden_size, spec.vocab_size, False, role="mlp")
    return names + [("lm_head", lm_head)]


def _peft_match(name: str, targets: tuple[str, ...]) -> bool:
    """peft ``check_target_module_exists``: exact name or '.'-suffix match, or a regex fullmatch."""
    if len(targets) == 1 and _is_regex(targets[0]):
        return re.fullmatch(targets[0], name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


# transformers 5 fused Mixtral's experts and turned its router into a parameter; peft 0.21 keeps v4-style
# target names working by mapping them onto target_parameters (peft/utils/transformers_weight_conversion.py
# _MOE_TARGET_MODULE_MAPPING / _MOE_FUSED_TARGETS): w1 + w3 -> experts.gate_up_proj at rank 2r (both are
# required), w2 -> experts.down_proj, gate -> the router's gate.weight. 'all-linear' includes all of them.
_MOE_V4_TARGETS: dict[str, dict[str, str]] = {
    "mixtral": {"gate": "gate", "w1": "gate_up_proj", "w3": "gate_up_proj", "w2": "down_proj"},
    "qwen2_moe": {
        "gate": "gate",
        "gate_proj": "gate_up_proj",
        "up_proj": "gate_up_proj",
        "down_proj": "down_proj",
    },
}
_MOE_FUSED: dict[str, dict[str, tuple[str, ...]]] = {
    "mixtral": {"gate_up_proj": ("w1", "w3")},
    "qwen2_moe": {"gate_up_proj": ("gate_proj", "up_proj")},
}


@dataclass(frozen=True)
class LoraModule:
    """One module (or MoE parameter) peft wraps with LoRA, with the rank it gets there."""

    name: str  # full name in the transformers model, e.g. model.layers.3.self_attn.q_proj
    shape: LinearShape
    r: int

    @property
    def params(self) -> int:
        # lora_A [r*count, in] + lora_B [out, r*count] (peft tuners/lora/layer.py update_layer, ParamWrapper)
        return self.r * self.shape.count * (self.shape.in_features + self.shape.out_features)


def _moe_targets(spec: ModelSpec, targets: tuple[str, ...], all_linear: bool) -> tuple[set[str], tuple[str, ...]]:
    """Split targets into MoE parameter names (per the v4->v5 mapping) and the remaining module targets."""
    mapping = _MOE_V4_TARGETS.get(spec.family.moe_v4_names if spec.num_experts else "", {})
    if not mapping:
        return set(), targets
    if all_linear:
        return set(mapping.values()), targets
    params: set[str] = set()
    old_hits: set[str] = set()
    rest: list[str] = []
    for t in targets:
        old = next((o for o in mapping if t == o or t.endswith("." + o)), None)
        if old is None:
            rest.append(t)
        else:
            params.add(mapping[old])
            old_hits.add(old)
    for fused, parts in _MOE_FUSED.get(spec.family.moe_v4_names, {}).items():
        present = old_hits & set(parts)
        if present and present != set(parts):
            raise FtplanError(
                f"LoRA target {','.join(sorted(present))} of {spec.name} needs {','.join(sorted(set(parts) - present))}"
                f" too: transformers 5 fuses them into experts.{fused}",
                hint=f"target {' and '.join(parts)} together",
            )
    return params, tuple(rest)


def lora_modules(
    spec: ModelSpec,
    targets: tuple[str, ...] | list[str] | str,
    r: int,
    *,
    parameters: tuple[str, ...] = (),
) -> list[LoraModule]:
    """Everything ``get_peft_model(model, LoraConfig(r=r, target_modules=targets, target_parameters=parameters))``
    wraps. 'all-linear' = every Linear/Conv1D except the output layer (peft tuners_utils.py
    _maybe_include_all_linear_layers excludes model.get_output_embeddings()); list entries match a module's full
    name exactly or as a '.'-suffix, a lone regex must fullmatch it (peft check_target_module_exists)."""
    _check_rank(spec, r)
    targets = _normalise_targets(targets) if targets else ()
    all_linear = len(targets) == 1 and targets[0].lower() == ALL_LINEAR
    if not all_linear and ALL_LINEAR in (t.lower() for t in targets):
        raise FtplanError("'all-linear' cannot be combined with other target modules", hint="use it alone")
    moe_params, targets = _moe_targets(spec, targets, all_linear)
    candidates = _module_candidates(spec)
    if all_linear:
        # peft resolves 'all-linear' to leaf names plus the v4 expert names, then moves every name of the v4
        # mapping to target_parameters (transformers_weight_conversion.py _resolve_string_target_modules): the
        # dense layers' and shared experts' gate_proj/up_proj/down_proj Linears (DeepSeek-V3) stay unwrapped.
        remapped = set(_MOE_V4_TARGETS.get(spec.family.moe_v4_names, {})) if spec.num_experts else set()
        hits = [(n, s) for n, s in candidates if n != "lm_head" and s.name not in remapped]
    else:
        hits = [(n, s) for n, s in candidates if targets and _peft_match(n, targets)]
    out = [LoraModule(n, s, r) for n, s in hits]
    fused = _MOE_FUSED.get(spec.family.moe_v4_names, {})
    moe_names = _MOE_V4_TARGETS.get(spec.family.moe_v4_names, {}) if spec.num_experts else {}
    for name, s in _param_candidates(spec):
        if s.name in moe_params:
            out.append(LoraModule(name, s, r * len(fused.get(s.name, ("",)))))
        elif parameters and any(name.endswith("." + p) for p in parameters):
            out.append(LoraModule(name, s, r))
    if not out:
        names = sorted({s.name for _, s in candidates} | {s.path for _, s in candidates} | set(moe_names))
        raise FtplanError(
            f"LoRA targets {','.join(targets + tuple(parameters))} match no Linear layer of {spec.name} "
            f"({spec.model_type})",
            hint=f"choose from all-linear, {', '.join(names)}",
        )
    return out


def _param_candidates(spec: ModelSpec) -> list[tuple[str, LinearShape]]:
    fam, kinds = spec.family, _layer_kinds(spec, param=True)
    return [(f"{fam.layer_prefix}.{i}.{s.path}", s) for i in range(spec.num_layers) for s in kinds[_kind(spec, i)]]


def _kind(spec: ModelSpec, layer: int) -> tuple[bool, Mixer]:
    return spec.is_sparse_layer(layer), spec.layer_mixer(layer)


def _layer_kinds(spec: ModelSpec, *, param: bool) -> dict[tuple[bool, Mixer], list[LinearShape]]:
    """Each layer kind's (sparse?, mixer) module shapes, parameters only or modules only."""
    return {
        key: [s for s in _layer_shapes(spec, *key) if (s.kind == "param") == param] for key in _layer_kind_counts(spec)
    }


def matched_lora_modules(spec: ModelSpec, targets: tuple[str, ...] | list[str] | str) -> list[tuple[str, LinearShape]]:
    """(full name, shape) of what LoRA wraps for ``targets`` (rank-independent view of ``lora_modules``)."""
    return [(m.name, m.shape) for m in lora_modules(spec, targets, 1)]


def _check_rank(spec: ModelSpec, r: int) -> None:
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise FtplanError(f"LoRA rank r={r!r} must be a positive integer", hint="typical values: 8, 16, 64")
    if r > spec.hidden_size:
        raise FtplanError(
            f"LoRA rank r={r} is larger than the hidden size {spec.hidden_size} of {spec.name}",
            hint="a rank above the layer width adds parameters without adding capacity; use r <= 256",
        )


def lora_trainable_params(
    spec: ModelSpec,
    targets: tuple[str, ...] | list[str] | str,
    r: int,
    *,
    dora: bool = False,
    parameters: tuple[str, ...] = (),
) -> int:
    """Trainable parameters of ``get_peft_model(model, LoraConfig(target_modules=targets, r=r, use_dora=dora,
    target_parameters=parameters))`` with bias='none' (peft 0.21, transformers 5).

    Per wrapped Linear/Conv1D: lora_A [r, in] + lora_B [out, r]; DoRA adds ``lora_magnitude_vector`` [out]
    (peft tuners/lora/dora.py). Per wrapped MoE parameter (``ParamWrapper``): lora_A [r*E, in] + lora_B [out, r*E];
    peft refuses DoRA there.
    """
    mods = lora_modules(spec, targets, r, parameters=parameters)
    if dora and any(m.shape.kind == "param" for m in mods):
        raise FtplanError(
            f"DoRA cannot adapt the MoE expert/router parameters of {spec.name} (peft: ParamWrapper does not "
            "work with use_dora=True)",
            hint="use plain LoRA, or target the attention projections only (q_proj,k_proj,v_proj,o_proj)",
        )
    total = sum(m.params for m in mods)
    if dora:
        total += sum(m.shape.count * m.shape.out_features for m in mods)
    return total


def prompt_tuning_params(spec: ModelSpec, num_virtual_tokens: int) -> int:
    """peft tuners/prompt_tuning/model.py PromptEmbedding: Embedding(num_virtual_tokens * 1 submodule
    (causal LM), token_dim = hidden_size)."""
    _check_positive("num_virtual_tokens", num_virtual_tokens)
    return num_virtual_tokens * spec.hidden_size


def prefix_token_dim(spec: ModelSpec) -> int:
    """peft utils/other.py _prepare_prompt_learning_config: with num_key_value_heads in the config (GQA,
    #1901) token_dim = head_dim * num_kv_heads, else hidden_size (GPT-2)."""
    if spec.family.layout == "gpt2":
        return spec.hidden_size
    return spec.head_dim * spec.num_kv_heads


def prefix_tuning_params(
    spec: ModelSpec,
    num_virtual_tokens: int,
    *,
    projection: bool = False,
    encoder_hidden_size: int | None = None,
) -> int:
    """peft tuners/prefix_tuning/model.py PrefixEncoder.

    Without projection: Embedding(num_virtual_tokens, num_layers * 2 * token_dim).
    With projection: Embedding(num_virtual_tokens, token_dim) + Linear(token_dim, enc) + Tanh +
    Linear(enc, num_layers * 2 * token_dim), enc = encoder_hidden_size (default token_dim).
    """
    _check_positive("num_virtual_tokens", num_virtual_tokens)
    token_dim = prefix_token_dim(spec)
    out = spec.num_layers * 2 * token_dim
    if not projection:
        return num_virtual_tokens * out
    enc = encoder_hidden_size or token_dim
    return num_virtual_tokens * token_dim + (token_dim * enc + enc) + (enc * out + out)


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise FtplanError(f"{name}={value!r} must be a positive integer")


# ---------------------------------------------------------------------------------------------------------
# config.json -> ModelSpec
# ---------------------------------------------------------------------------------------------------------

# Alternative key names, first match wins (GPT-2 style configs use n_embd/n_layer/n_head/n_inner/n_positions).
_KEYS: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads"),
    "num_kv_heads": ("num_key_value_heads", "num_kv_heads", "multi_query_group_num"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"),
    "max_position_embeddings": ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"),
    "num_experts": ("num_local_experts", "num_experts", "n_routed_experts"),
}
_CONFIG_DEFAULTS = {"max_position_embeddings": 2048}  # when a config.json states no context length


def _get(config: dict, field_name: str):
    for key in _KEYS[field_name]:
        if config.get(key) is not None:
            return key, config[key]
    return None, None


def _int_field(config: dict, field_name: str, where: str, *, required: bool = True, default=None) -> int | None:
    key, value = _get(config, field_name)
    if key is None:
        if required and default is None:
            raise FtplanError(
                f"{where}: missing {_KEYS[field_name][0]}",
                hint=f"config.json must set {' or '.join(_KEYS[field_name])}",
            )
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FtplanError(f"{where}: {key}={value!r} must be a positive integer")
    return value


def spec_from_config(
    config: dict,
    name: str,
    source: Literal["catalog", "local", "hf-cache", "hub"] = "local",
    local_path: str | None = None,
    *,
    where: str | None = None,
    tokenizer_path: str | None = None,
) -> ModelSpec:
    """Normalise a config.json dict (any supported model_type) into a ModelSpec.

    ``where`` names the config in error messages (a file path or "catalog entry X"); it defaults to
    ``name``. Raises FtplanError naming the field for missing or impossible values.
    """
    where = where or name
    if not isinstance(config, dict):
        raise FtplanError(f"{where}: config.json must be a JSON object, got {type(config).__name__}")
    notes: list[str] = []
    wrapper = None
    if "hidden_size" not in config and isinstance(config.get("text_config"), dict):
        # Multimodal wrappers (Llava, Gemma 3, Mistral 3...): the layers are the language model's, but what
        # AutoModelForCausalLM loads (and trains) includes the vision tower: counted from the whole model.
        wrapper = config
        config = {**config["text_config"], "architectures": config.get("architectures")}
    quant = config.get("quantization_config")
    if isinstance(quant, dict):
        method = quant.get("quant_method", "unknown")
        notes.append(f"config.json ships pre-quantized weights ({method}); parameters counted unquantized")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        model_type = _guess_model_type(config)
        notes.append(f"config.json has no model_type; treated as {model_type}")
    fam = family_for(model_type)
    counted = None
    if wrapper is not None:
        counted = meta_device_counts(wrapper, str(wrapper.get("model_type")), where)
        notes.append(
            "multimodal config: parameter counts include the vision tower (transformers' meta-device build); "
            "activation memory is the text model's"
        )
    elif fam.generic:
        counted = meta_device_counts(config, model_type, where)
        notes.append(
            f"model_type {model_type!r} is outside ftplan's family table: parameter counts come from "
            "transformers' meta-device build (exact); activation memory is estimated as for a Llama-style layer"
        )
    hidden = _int_field(config, "hidden_size", where)
    layers = _int_field(config, "num_layers", where)
    heads = _int_field(config, "num_attention_heads", where)
    vocab = config.get("vocab_size")
    if vocab is None:
        raise FtplanError(f"{where}: missing vocab_size", hint="config.json must set vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab <= 0:
        raise FtplanError(f"{where}: vocab_size={vocab!r} must be a positive integer")
    kv = _int_field(config, "num_kv_heads", where, default=heads)
    if heads % kv:
        raise FtplanError(f"{where}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}")
    head_dim = config.get("head_dim")
    if head_dim is None:
        head_dim = fam.head_dim_default or hidden // heads
        if fam.head_dim_default is None and hidden % heads:
            raise FtplanError(
                f"{where}: hidden_size={hidden} is not divisible by num_attention_heads={heads}",
                hint="set head_dim in config.json",
            )
    elif isinstance(head_dim, bool) or not isinstance(head_dim, int) or head_dim <= 0:
        raise FtplanError(f"{where}: head_dim={head_dim!r} must be a positive integer")
    inter_default = 4 * hidden if fam.layout == "gpt2" else None  # modeling_gpt2.py: n_inner or 4 * n_embd
    inter = _int_field(config, "intermediate_size", where, default=inter_default)
    max_pos = _int_field(config, "max_position_embeddings", where, default=_CONFIG_DEFAULTS["max_position_embeddings"])
    experts = _int_field(config, "num_experts", where, required=False, default=0) or 0
    top_k = config.get("num_experts_per_tok") or (fam.top_k_default if experts else 0)
    if fam.layout == "moe" and not experts:
        raise FtplanError(f"{where}: {model_type} config without num_local_experts / num_experts")
    moe = _moe_layout(config, fam, layers, inter, where) if fam.layout == "moe" else {}
    if fam.layout == "moe" and config.get("moe_intermediate_size"):
        # The expert width (intermediate_size is then the dense layers' width, see _moe_layout).
        inter = _int_field({"intermediate_size": config["moe_intermediate_size"]}, "intermediate_size", where)
    mla = _mla(config) if fam.attn_kind == "mla" else None
    mixers, linear_attn = _hybrid_layout(config, layers, where) if fam.hybrid else (None, None)
    if mla is not None:
        head_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim  # the q/k head width (v: mla.v_head_dim)
    if experts and fam.layout != "moe" and counted is None:
        notes.append(f"{model_type} MoE layout not modelled exactly; experts ignored in counts")
        experts, top_k = 0, 0
    if experts and not 0 < top_k <= experts:
        raise FtplanError(f"{where}: num_experts_per_tok={top_k} must be between 1 and {experts}")
    tie = config.get("tie_word_embeddings")
    tie = fam.tie_default if tie is None else bool(tie)
    archs = config.get("architectures") or [fam.architecture if not fam.generic else "unknown"]
    return ModelSpec(
        name=name,
        model_type=model_type,
        architecture=str(archs[0]),
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        tie_word_embeddings=tie,
        mlp_type=fam.mlp_type,
        norm_type=fam.norm_type,
        hidden_act=_activation(config, fam),
        num_experts=experts,
        num_experts_per_tok=top_k if experts else 0,
        attention_bias=_bias(fam.qkv_bias, bool(config.get("attention_bias", fam.attn_bias_default))),
        torch_dtype=str(config.get("torch_dtype") or config.get("dtype") or "float32"),
        source=source,
        local_path=local_path,
        tokenizer_path=tokenizer_path,
        config=config,
        mlp_bias=_bias(fam.mlp_bias, bool(config.get("mlp_bias", False))),
        notes=tuple(notes),
        counted=counted,
        mla=mla,
        layer_mixers=mixers,
        linear_attn=linear_attn,
        **moe,
    )


def _hybrid_layout(config: dict, layers: int, where: str) -> tuple[tuple[Mixer, ...] | None, LinearAttn]:
    """Qwen3-Next's per-layer mixers (config.layer_types, else every full_attention_interval-th layer full
    attention: Qwen3NextConfig.__post_init__) and its gated-DeltaNet dimensions, with the config class defaults."""
    types = config.get("layer_types")
    if types is None:
        interval = config.get("full_attention_interval") or 4
        types = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(layers)]
    if not isinstance(types, list) or len(types) != layers:
        raise FtplanError(f"{where}: layer_types must list one entry per layer ({layers})")
    unknown = sorted({t for t in types if t not in ("linear_attention", "full_attention")}, key=str)
    if unknown:
        raise FtplanError(f"{where}: layer_types {unknown} are neither linear_attention nor full_attention")
    mixers: tuple[Mixer, ...] = tuple("linear_attention" if t == "linear_attention" else "attention" for t in types)

    def dim(key: str, default: int) -> int:
        value = config.get(key)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise FtplanError(f"{where}: {key}={value!r} must be a positive integer")
        return value

    linear = LinearAttn(
        num_k_heads=dim("linear_num_key_heads", 16),
        num_v_heads=dim("linear_num_value_heads", 32),
        head_k_dim=dim("linear_key_head_dim", 128),
        head_v_dim=dim("linear_value_head_dim", 128),
        conv_kernel=dim("linear_conv_kernel_dim", 4),
    )
    return mixers, linear


def _moe_layout(config: dict, fam: Family, layers: int, inter: int | None, where: str) -> dict:
    """ModelSpec's sparse_layers / dense_intermediate_size / shared_expert_intermediate_size for a MoE family,
    with the config classes' defaults (transformers 5 configuration_<type>.py) for keys a config.json omits."""
    if fam.sparse_rule == "qwen":  # Qwen3MoeDecoderLayer
        only, step = config.get("mlp_only_layers") or [], config.get("decoder_sparse_step") or 1
        sparse = [i for i in range(layers) if i not in only and (i + 1) % step == 0]
    elif fam.sparse_rule == "first_k":  # DeepseekV3DecoderLayer: layer_idx >= first_k_dense_replace
        first_k = config.get("first_k_dense_replace")
        sparse = list(range(3 if first_k is None else first_k, layers))  # DeepseekV3Config default 3
    elif fam.sparse_rule == "llama4":  # Llama4TextConfig.__post_init__
        step = config.get("interleave_moe_layer_step") or 1
        sparse = config.get("moe_layers")
        sparse = list(range(step - 1, layers, step)) if sparse is None else [i for i in sparse if 0 <= i < layers]
    else:
        sparse = list(range(layers))
    out: dict = {"sparse_layers": None if len(sparse) == layers else tuple(sparse)}
    if len(sparse) < layers:
        dense = config.get(fam.dense_width_key)
        if dense is None and fam.dense_width_key == "intermediate_size_mlp":
            dense = 16384  # Llama4TextConfig default
        out["dense_intermediate_size"] = _int_field({"intermediate_size": dense}, "intermediate_size", where)
    if fam.shared_expert == "shared_experts":  # DeepseekV3MoE: MLP(moe_intermediate_size * n_shared_experts)
        n_shared = config.get("n_shared_experts", 1)
        width = config.get("moe_intermediate_size") or 2048  # DeepseekV3Config default
        out["shared_expert_intermediate_size"] = (n_shared or 0) * width
    elif fam.shared_width_key:  # Qwen3NextSparseMoeBlock: MLP(shared_expert_intermediate_size); 0 = none built
        width = config.get(fam.shared_width_key)
        out["shared_expert_intermediate_size"] = 512 if width is None else width  # Qwen3NextConfig default
    elif fam.shared_expert:  # Llama4TextMoe: shared_expert = Llama4TextMLP(config), the expert width
        out["shared_expert_intermediate_size"] = inter or 0
    return out


def _mla(config: dict) -> Mla:
    """DeepSeek latent-attention dimensions with DeepseekV3Config's defaults."""

    def get(key: str, default: int | None) -> int | None:
        return config[key] if key in config else default

    return Mla(
        q_lora_rank=get("q_lora_rank", 1536),
        kv_lora_rank=get("kv_lora_rank", 512),
        qk_nope_head_dim=get("qk_nope_head_dim", 128),
        qk_rope_head_dim=get("qk_rope_head_dim", 64),
        v_head_dim=get("v_head_dim", 128),
    )


# ---------------------------------------------------------------------------------------------------------
# Architectures outside the table: never guessed. transformers (the training extra) builds the model on the
# meta device in a subprocess (executor/meta_count.py; the planning process stays free of torch) and the
# counts are cached per config and transformers version; without transformers the estimate refuses.
# ---------------------------------------------------------------------------------------------------------

META_COUNT_TIMEOUT_S = 300


def _count_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "ftplan" / "param_counts"


def meta_device_counts(config: dict, model_type: str, where: str) -> ParamCounts:
    """Exact counts by component for an architecture outside FAMILIES, or a one-line refusal."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
        raise FtplanError(
            f"{where}: model_type {model_type!r} is not in ftplan's architecture table, and counting it "
            "exactly needs transformers (not installed); its size would be a guess",
            hint="pip install 'ftplan[train]' (counts it from a meta-device build), or use a catalog model",
        )
    version = importlib.metadata.version("transformers")
    text = json.dumps(config, sort_keys=True, default=str)
    key = hashlib.sha256(f"{version}\n{text}".encode()).hexdigest()[:32]
    cached = _count_cache_dir() / f"{key}.json"
    try:
        counts = json.loads(cached.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        try:
            counts = _run_meta_count(text, model_type, where)
        except FtplanError:
            if not config.get("auto_map"):
                raise
            raise FtplanError(
                f"{where}: model_type {model_type!r} is custom code (auto_map) that neither ftplan's architecture "
                "table nor transformers knows; its size would be a guess",
                hint="use a model transformers supports natively, or one from the catalog (`ftplan models`)",
            ) from None
        try:
            write_atomic(cached, json.dumps(counts))
        except OSError:  # a read-only home: count again next time
            pass
    return ParamCounts(
        embeddings=counts["embeddings"], attention=counts["attention"], mlp=counts["mlp"] + counts["experts"],
        norms=counts["norms"], lm_head=counts["lm_head"], other=counts["other"], experts=counts["experts"],
    )  # fmt: skip


def _run_meta_count(config_text: str, model_type: str, where: str) -> dict:
    import subprocess
    import sys

    try:
        proc = subprocess.run(
            [sys.executable, "-m", "executor.meta_count"], input=config_text, capture_output=True, text=True,
            timeout=META_COUNT_TIMEOUT_S, check=False,
        )  # fmt: skip
        out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        out = {"error": str(exc)}
    if "total" not in out:
        why = out.get("error") or (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise FtplanError(
            f"{where}: model_type {model_type!r} is not in ftplan's architecture table and transformers "
            f"could not build it to count its parameters ({why})",
            hint="check config.json, or upgrade transformers if the architecture is newer than it",
        )
    return out


def _activation(config: dict, fam: Family) -> str:
    for key in fam.act_keys:
        if config.get(key):
            return str(config[key])
    return fam.act_default


def _guess_model_type(config: dict) -> str:
    arch = (config.get("architectures") or [""])[0].lower()
    for model_type in FAMILIES:
        if arch.startswith(model_type):
            return model_type
    return "gpt2" if "n_embd" in config else "llama"


# ---------------------------------------------------------------------------------------------------------
# The built-in catalog (planner/catalogs/models.json)
# ---------------------------------------------------------------------------------------------------------

CATALOG_PATH = Path(__file__).parent / "catalogs" / "models.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@functools.lru_cache(maxsize=1)
def catalog() -> dict[str, dict]:
    """Hub id -> catalog entry ({"aliases", "source", "config"}); one json.load per process."""
    with open(CATALOG_PATH, encoding="utf-8") as f:
        return json.load(f)["models"]


@functools.lru_cache(maxsize=1)
def _catalog_index() -> dict[str, str]:
    """Lower-cased hub id, alias and bare repo name (after the '/') -> hub id."""
    index: dict[str, str] = {}
    for hub_id, entry in catalog().items():
        index[hub_id.lower()] = hub_id
        for alias in entry.get("aliases", ()):
            index.setdefault(alias.lower(), hub_id)
    for hub_id, entry in catalog().items():
        for name in (hub_id, *entry.get("aliases", ())):
            index.setdefault(name.rsplit("/", 1)[-1].lower(), hub_id)
    return index


def catalog_names() -> list[str]:
    """Catalog hub ids, in file order."""
    return list(catalog())


def catalog_lookup(name: str) -> str | None:
    """The catalog hub id for a hub id, alias or bare repo name (case-insensitive), or None."""
    return _catalog_index().get(name.strip().lower())


def catalog_spec(name: str) -> ModelSpec:
    hub_id = catalog_lookup(name)
    if hub_id is None:
        raise FtplanError(f"{name!r} is not in the built-in model catalog")
    spec = _catalog_spec(hub_id, name)
    # A tokenizer already in the HF cache makes data profiling exact; looked up each time (the cache may change).
    tok = _cached_snapshot(hub_id, want_config=False)
    return replace(spec, tokenizer_path=str(tok)) if tok is not None else spec


@functools.lru_cache(maxsize=256)
def _catalog_spec(hub_id: str, name: str) -> ModelSpec:
    return spec_from_config(catalog()[hub_id]["config"], name, "catalog", where=f"catalog entry {hub_id}")


# ---------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------


def read_config_json(path: Path) -> dict:
    """Parse a config.json; FtplanError names the file and the line of a JSON error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise FtplanError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise FtplanError(f"{path}: not a UTF-8 text file", hint="config.json must be JSON") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise FtplanError(
            f"{path}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})", hint="fix or re-download config.json"
        ) from None
    if not isinstance(config, dict):
        raise FtplanError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in TOKENIZER_FILES)


def spec_from_folder(folder: Path, name: str, source: Literal["local", "hf-cache"] = "local") -> ModelSpec:
    """A model folder with config.json (tokenizer files beside it are recorded as tokenizer_path)."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FtplanError(
            f"{folder} has no config.json",
            hint="point --model at a Hugging Face model folder or use a hub id",
        )
    config = read_config_json(cfg_path)
    return spec_from_config(
        config,
        name,
        source,
        str(folder),
        where=str(cfg_path),
        tokenizer_path=str(folder) if _has_tokenizer(folder) else None,
    )


def hf_hub_cache_dir() -> Path:
    """huggingface_hub's cache location: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub
    (huggingface_hub/constants.py; HF_HOME itself defaults to $XDG_CACHE_HOME/huggingface)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):  # legacy name, still honoured by huggingface_hub
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _looks_like_hub_id(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+", name) is not None


def _cached_snapshot(hub_id: str, *, want_config: bool = True) -> Path | None:
    """The snapshot folder of ``hub_id`` in the HF cache (refs/main first, else the newest one that has
    config.json, or a tokenizer when ``want_config`` is False), or None."""
    if not _looks_like_hub_id(hub_id):
        return None
    repo = hf_hub_cache_dir() / ("models--" + hub_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    wanted = (lambda p: (p / "config.json").is_file()) if want_config else _has_tokenizer
    try:
        ref = (repo / "refs" / "main").read_text().strip()
    except OSError:
        ref = ""
    if ref and wanted(snapshots / ref):
        return snapshots / ref
    found = [p for p in snapshots.iterdir() if p.is_dir() and wanted(p)]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return offline
    # huggingface_hub/constants.py: HF_HUB_OFFLINE (and transformers' TRANSFORMERS_OFFLINE) truthy values.
    return any(
        os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _fetch_config(hub_id: str) -> ModelSpec | None:
    """Download only config.json (into the HF cache) with huggingface_hub; None when it is not installed.

    Tokens come from huggingface_hub's own lookup (HF_TOKEN or the saved login) and are never printed.
    """
    try:
        from huggingface_hub import hf_hub_download  # lazy: the planner must not need it to import
    except ImportError:
        return None
    try:
        path = Path(hf_hub_download(hub_id, "config.json"))
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises many types; each is reported in one line
        kind = type(e).__name__
        if kind in {"GatedRepoError"}:
            raise FtplanError(
                f"{hub_id} is gated on the Hugging Face Hub",
                hint="accept its licence on huggingface.co and log in with `hf auth login`, or use a local folder",
            ) from None
        if kind in {"RepositoryNotFoundError", "EntryNotFoundError", "RevisionNotFoundError"}:
            return None
        raise FtplanError(
            f"could not fetch config.json for {hub_id} from the Hugging Face Hub ({kind})",
            hint="check the network, or pass a local model folder, or set HF_HUB_OFFLINE=1 to stay offline",
        ) from None
    return spec_from_folder(path.parent, hub_id, "hub")


def load_model_spec(name: str, *, trust_remote_code: bool = False, offline: bool | None = None) -> ModelSpec:
    """Resolve ``--model``: (a) a local folder with config.json, (b) a catalog hub id or alias,
    (c) a hub id in the local HF cache, (d) online, config.json only (unless offline / HF_HUB_OFFLINE).

    Only config.json is read, never model code, so ``trust_remote_code`` changes nothing here; it is
    accepted so callers can pass the user's flag through (custom-code models get a note saying the
    executor will need it). Raises FtplanError with close catalog matches when nothing resolves.
    """
    if not isinstance(name, str) or not name.strip():
        raise FtplanError("--model is empty", hint="give a hub id like Qwen/Qwen2.5-0.5B or a local folder")
    name = name.strip()
    path = Path(name).expanduser()
    # A folder wins over a hub id of the same name, as in transformers' from_pretrained; a folder without
    # config.json that is also a catalog/hub name (e.g. ./gpt2 holding data) falls through to the id.
    if path.is_dir() and ((path / "config.json").is_file() or catalog_lookup(name) is None):
        return spec_from_folder(path, name, "local")
    if path.is_file() and path.name == "config.json":
        return spec_from_folder(path.parent, name, "local")
    if name.startswith((".", "/", "~")) or (os.sep in name and name.count("/") > 1):
        raise FtplanError(f"model folder {name} does not exist", hint="check the path")
    hub_id = catalog_lookup(name)
    if hub_id is not None:
        return catalog_spec(name)
    snapshot = _cached_snapshot(name)
    if snapshot is not None:
        return spec_from_folder(snapshot, name, "hf-cache")
    if _looks_like_hub_id(name) and not _offline(offline):
        spec = _fetch_config(name)
        if spec is not None:
            return spec
    raise _unknown_model(name, offline=_offline(offline))


def _unknown_model(name: str, *, offline: bool) -> FtplanError:
    index = _catalog_index()
    matches = close_matches(name, list(catalog()))
    if not matches:
        matches = list(dict.fromkeys(index[m.lower()] for m in close_matches(name, list(index))))
    where = "not a local folder, not in the catalog, not in the HF cache"
    where += "" if offline or not _looks_like_hub_id(name) else ", not found on the Hub"
    hint = (
        f"did you mean {', '.join(matches)}?"
        if matches
        else "pass a local model folder, a hub id (online or in the HF cache), or a catalog id such as "
        "Qwen/Qwen2.5-0.5B (list: planner/catalogs/models.json)"
    )
    return FtplanError(f"unknown model {name!r} ({where})", hint=hint)
