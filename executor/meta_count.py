"""Parameter counts by component from transformers' own model, built on the meta device (no weights).

The planner counts the families of its table analytically (planner/model_spec.py, instant, no torch).
For any other architecture it must not guess: it runs this module in a subprocess (so the planning
process stays free of torch) when the training extra is installed, and caches the answer per config:

    echo '{"model_type": "deepseek_v3", ...}' | python -m executor.meta_count

prints ``{"embeddings": ..., "attention": ..., "mlp": ..., "experts": ..., "norms": ..., "lm_head": ...,
"other": ..., "total": ...}``. Components are assigned from parameter names (first rule that matches):
lm head, embeddings, norms, MoE experts, attention (incl. MLA projections), MLP (incl. routers), other
(Mamba/linear-attention mixers and anything else), so ``total`` is exactly ``sum(p.numel())``.
"""

from __future__ import annotations

import json
import re
import sys

from planner.errors import first_line

# name pattern -> component, in order (the first match wins); names are transformers' module paths.
COMPONENT_RULES: tuple[tuple[str, re.Pattern], ...] = (
    ("lm_head", re.compile(r"(^|\.)(lm_head|embed_out|output)\.")),
    ("embeddings", re.compile(r"(embed|wte\.|wpe\.|word_embeddings|position_embeddings)")),
    ("norms", re.compile(r"(norm|(^|\.)ln_|\.ln\d*\.|layernorm|layer_norm)", re.I)),
    ("experts", re.compile(r"\.experts\.|\.experts$|(^|\.)experts_")),
    ("attention", re.compile(r"(attn|attention|\.(q|k|v|o|qkv|kv)_(a_|b_)?proj|\.c_attn|query_key_value)")),
    ("mlp", re.compile(r"(mlp|feed_forward|ffn|\.fc\d|\.gate\.|router|shared_expert|dense_h_to_4h|dense_4h_to_h)")),
)
COMPONENTS = ("embeddings", "attention", "mlp", "experts", "norms", "lm_head", "other")


def component_of(name: str) -> str:
    for component, pattern in COMPONENT_RULES:
        if pattern.search(name):
            return component
    return "other"


def count_config(config: dict) -> dict[str, int]:
    """Counts by component of ``AutoModelForCausalLM.from_config`` for this config.json dict."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    cfg.pop("architectures", None)
    hf_config = AutoConfig.for_model(model_type, **cfg)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(hf_config)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise ValueError(f"transformers has no causal-LM class for {model_type!r} (not trainable as one)") from None
        raise
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, p in model.named_parameters():  # shared (tied) parameters are listed once
        counts[component_of(name)] += p.numel()
    counts["total"] = sum(counts[c] for c in COMPONENTS)
    return counts


def main() -> int:
    config = json.loads(sys.stdin.read())
    try:
        counts = count_config(config)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the planner as one line
        print(json.dumps({"error": first_line(exc, with_type=True)}))
        return 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
