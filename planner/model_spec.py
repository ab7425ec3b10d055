"""Model architecture facts: from the built-in catalog, a local HF folder, the HF cache or the hub.

INTERFACE (shared by memory.py, cost.py, rules.py, executor): the dataclasses below are the contract.
Implementation of the loaders and counters: see the functions at the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

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

    # Implemented in this module (see below): param_counts(), linear_layers(), total_params...
