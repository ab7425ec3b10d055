"""Every catalog entry is counted exactly, analytically, by ftplan's family table.

For each model in planner/catalogs/models.json, transformers builds the model from the entry's config on the meta
device (no memory) and ftplan's ``load_model_spec(name).param_counts()`` must equal it: the total to the
parameter (``model.parameters()`` lists tied weights once, as ftplan counts them), each component (embeddings,
attention, MLP/router, routed experts, norms, lm_head; parameter names assigned by executor/meta_count.py's
rules), and the modules of every distinct decoder layer (DeepSeek-V3's dense first layers, Llama 4 Maverick's
interleaved dense/MoE layers). The counts must come from the family table, never from the meta-device subprocess.

Expected numbers are never written down here: transformers computes them. Tiny configs exercise the layouts'
variants (no q LoRA in MLA, interleaved MoE steps, Qwen3-MoE dense layers...) and peft checks the LoRA counts.
"""

from __future__ import annotations

import functools

import pytest

# ~25 s: one meta-device build per catalog entry (69) plus peft models.
pytestmark = pytest.mark.slow

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from executor.meta_count import component_of
from planner import model_spec
from planner.model_spec import catalog, catalog_names, load_model_spec, spec_from_config

CATALOG = catalog_names()


def _build(config: dict):
    """transformers' model for a config.json dict on the meta device: the causal LM, or for a multimodal wrapper
    (a config with text_config) the image-text-to-text model that holds it."""
    transformers.logging.set_verbosity_error()
    cfg = dict(config)
    model_type = cfg.pop("model_type")
    cfg.pop("architectures", None)
    hf_config = transformers.AutoConfig.for_model(model_type, **cfg)
    auto = transformers.AutoModelForCausalLM
    if "text_config" in config and "hidden_size" not in config:
        auto = transformers.AutoModelForImageTextToText
    with torch.device("meta"):
        return auto.from_config(hf_config)


@functools.cache
def _catalog_model(hub_id: str):
    return _build(catalog()[hub_id]["config"])


@pytest.fixture(autouse=True)
def _no_meta_subprocess(monkeypatch, tmp_path):
    """Catalog entries are counted by the family table: the meta-device subprocess must not run."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def refuse(*args):
        raise AssertionError(f"meta-device subprocess called for {args[1]!r}: not counted by the family table")

    monkeypatch.setattr(model_spec, "_run_meta_count", refuse)


def _components(model) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, p in model.named_parameters():  # tied weights are listed once
        out[component_of(name)] = out.get(component_of(name), 0) + p.numel()
    return out


def _assert_counts_match(spec, model) -> None:
    pc = spec.param_counts()
    built = sum(p.numel() for p in model.parameters())
    assert pc.total == built, f"{spec.name}: counted {pc.total:,}, transformers builds {built:,}"
    groups = _components(model)
    assert not groups.get("other"), (spec.name, groups)
    assert pc.embeddings == groups.get("embeddings", 0)
    assert pc.lm_head == groups.get("lm_head", 0)
    assert pc.norms == groups.get("norms", 0)
    assert pc.attention == groups.get("attention", 0)
    assert pc.experts == groups.get("experts", 0)
    assert pc.mlp == groups.get("mlp", 0) + groups.get("experts", 0)  # ParamCounts.mlp includes the experts


def _assert_layers_match(spec, model) -> None:
    """linear_layers(i) lists layer i's nn.Linear modules (subclasses included, as peft sees them) and its MoE
    parameter matrices, for the first layer of every kind (dense / sparse, attention / linear attention)."""
    firsts = {(spec.is_sparse_layer(i), spec.layer_mixer(i)): i for i in reversed(range(spec.num_layers))}
    assert sum(n for _, n in spec.layer_groups()) == spec.num_layers
    for i in firsts.values():
        prefix = f"{spec.family.layer_prefix}.{i}"
        layer = model.get_submodule(prefix)
        seen = set()
        for shape in spec.linear_layers(i):
            if shape.kind == "param":
                weight = getattr(model.get_submodule(f"{prefix}.{shape.parent}"), shape.name)
                weight = getattr(weight, "weight", weight)  # a router module holding .weight
                assert weight.numel() == shape.count * shape.in_features * shape.out_features, (i, shape)
                continue
            module = model.get_submodule(f"{prefix}.{shape.path}")
            if shape.kind == "conv1d":
                assert tuple(module.weight.shape) == (shape.in_features, shape.out_features)
            else:
                assert isinstance(module, torch.nn.Linear), (i, shape, type(module))
                assert (module.in_features, module.out_features) == (shape.in_features, shape.out_features)
            assert (module.bias is not None) == shape.bias, (i, shape)
            seen.add(shape.path)
        linear = {n for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"}
        assert seen == linear, f"layer {i}: counted {sorted(seen)}, built {sorted(linear)}"


@pytest.mark.parametrize("hub_id", CATALOG)
def test_catalog_entry_counts_equal_the_meta_device_model(hub_id):
    spec = load_model_spec(hub_id)
    assert spec.counted is None and not spec.family.generic, f"{hub_id}: not counted by the family table"
    model = _catalog_model(hub_id)
    _assert_counts_match(spec, model)
    _assert_layers_match(spec, model)
    if spec.is_moe:  # the router picks num_experts_per_tok of num_experts in every sparse layer
        assert spec.param_counts().experts > 0 and spec.active_params < spec.total_params
    else:
        assert spec.active_params == spec.total_params


def test_catalog_entries_are_well_formed():
    for hub_id, entry in catalog().items():
        assert set(entry) <= {"aliases", "source", "config", "note"}, hub_id
        assert entry["source"].startswith("https://huggingface.co/") and entry["source"].endswith("/config.json")
        assert entry["config"]["model_type"] in model_spec.FAMILIES, hub_id
        assert load_model_spec(hub_id).source == "catalog"
        for alias in entry["aliases"]:
            assert model_spec.catalog_lookup(alias) == hub_id, alias


def test_published_totals_of_the_new_models():
    """Independent anchors from the model cards (rounded as published), on top of transformers' exact counts."""

    def billions(name: str, active: bool = False) -> float:
        spec = load_model_spec(name)
        return (spec.active_params if active else spec.total_params) / 1e9

    assert round(billions("deepseek-v3")) == 671  # "671B total parameters, 37B activated"
    assert round(billions("deepseek-v3", active=True)) == 38  # 37.5B: the card rounds down
    assert round(billions("qwen3-235b-a22b")) == 235 and round(billions("qwen3-235b-a22b", active=True)) == 22
    assert round(billions("qwen3-coder-30b-a3b"), 1) == 30.5 and round(billions("qwen3-coder-30b-a3b", True), 1) == 3.4
    assert round(billions("gpt-oss-20b"), 1) == 20.9  # "21B parameters, 3.6B active" (20.91B total)
    assert round(billions("gpt-oss-120b"), 1) == 116.8  # "117B parameters, 5.1B active" (116.83B total)
    # OpenAI's active counts leave out the input embedding table, which ftplan counts (it is read, not multiplied).
    oss = load_model_spec("gpt-oss-20b")
    assert round((oss.active_params - oss.param_counts().embeddings) / 1e9, 2) == 3.61
    assert round(billions("mistral-small-24b"), 1) == 23.6
    assert round(billions("phi-4"), 1) == 14.7
    assert round(billions("olmo-2-7b"), 1) == 7.3
    # Llama 4 entries are the text models: the cards' totals include the vision encoder (0.87B).
    assert abs(109 - billions("llama-4-scout")) < 1.5 and round(billions("llama-4-scout", active=True)) == 17
    assert abs(400 - billions("llama-4-maverick")) < 1.5 and round(billions("llama-4-maverick", active=True)) == 17
    # "80B total parameters and only 3B activated" (the card's active count leaves out embeddings and lm_head).
    nxt = load_model_spec("qwen3-next")
    assert round(billions("qwen3-next")) == 80
    assert round((nxt.active_params - nxt.param_counts().embeddings - nxt.param_counts().lm_head) / 1e9) == 3
    assert nxt.num_attention_layers == 12 and nxt.layer_mixer(0) == "linear_attention"


# ---------------------------------------------------------------------------------------------------------
# Layout variants on tiny configs: exact against transformers, without the subprocess
# ---------------------------------------------------------------------------------------------------------

_TINY = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 128, "max_position_embeddings": 64}  # fmt: skip
_DEEPSEEK = dict(_TINY, model_type="deepseek_v3", intermediate_size=96, moe_intermediate_size=32,
                 n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1, q_lora_rank=48,
                 kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
                 first_k_dense_replace=1)  # fmt: skip
_LLAMA4 = dict(_TINY, model_type="llama4_text", head_dim=16, intermediate_size=32, intermediate_size_mlp=96,
               num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2)  # fmt: skip
_GPT_OSS = dict(_TINY, model_type="gpt_oss", head_dim=16, intermediate_size=32, num_local_experts=4,
                num_experts_per_tok=2)  # fmt: skip
_QWEN3_MOE = dict(_TINY, model_type="qwen3_moe", head_dim=16, intermediate_size=96, moe_intermediate_size=32,
                  num_experts=4, num_experts_per_tok=2)  # fmt: skip
_QWEN3_NEXT = dict(_TINY, model_type="qwen3_next", head_dim=16, intermediate_size=96, moe_intermediate_size=32,
                   shared_expert_intermediate_size=24, num_experts=4, num_experts_per_tok=2, linear_num_key_heads=2,
                   linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=12,
                   linear_conv_kernel_dim=3)  # fmt: skip
TINY_VARIANTS = {
    "deepseek_v3": _DEEPSEEK,
    "deepseek_v3-no-q-lora-2-shared": dict(_DEEPSEEK, q_lora_rank=None, n_shared_experts=2, attention_bias=True),
    "deepseek_v3-all-dense": dict(_DEEPSEEK, first_k_dense_replace=4),
    "llama4_text-interleaved": _LLAMA4,
    "llama4_text-moe-layers": dict(_LLAMA4, moe_layers=[0, 3], attention_bias=True),
    "llama4_text-all-moe": dict(_LLAMA4, interleave_moe_layer_step=1),
    "gpt_oss": _GPT_OSS,
    "gpt_oss-no-bias": dict(_GPT_OSS, attention_bias=False),
    "qwen3_moe-mlp-only-layers": dict(_QWEN3_MOE, mlp_only_layers=[0, 2]),
    "qwen3_moe-sparse-step-2": dict(_QWEN3_MOE, decoder_sparse_step=2),
    "qwen3_next": _QWEN3_NEXT,
    "qwen3_next-layer-types-dense-layers": dict(
        _QWEN3_NEXT,
        layer_types=["full_attention", "linear_attention", "full_attention", "linear_attention"],
        mlp_only_layers=[0, 1],
        attention_bias=True,
    ),
    "qwen3_next-interval-2-sparse-step-2": dict(_QWEN3_NEXT, full_attention_interval=2, decoder_sparse_step=2),
    "gemma3_text": dict(_TINY, model_type="gemma3_text", head_dim=16, intermediate_size=96),
    "olmo2": dict(_TINY, model_type="olmo2", intermediate_size=96),
    "smollm3-untied": dict(
        _TINY, model_type="smollm3", intermediate_size=96, tie_word_embeddings=False, pad_token_id=0
    ),
    "granite-biases": dict(_TINY, model_type="granite", intermediate_size=96, attention_bias=True, mlp_bias=True),
}


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_layout_variants_count_like_transformers(variant):
    config = TINY_VARIANTS[variant]
    spec = spec_from_config(config, variant)
    assert spec.counted is None
    model = _build(config)
    _assert_counts_match(spec, model)
    _assert_layers_match(spec, model)


# Llama 4's published text configs (the catalog's meta-llama/Llama-4-Scout-17B-16E and Llama-4-Maverick-17B-128E
# entries), reduced to the keys that shape parameters, as a check independent of the catalog's copy.
_LLAMA4_TEXT = {"model_type": "llama4_text", "hidden_size": 5120, "intermediate_size": 8192,
                "intermediate_size_mlp": 16384, "num_hidden_layers": 48, "num_attention_heads": 40,
                "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 202048, "num_experts_per_tok": 1,
                "use_qk_norm": True, "attention_bias": False, "tie_word_embeddings": False}  # fmt: skip


@pytest.mark.parametrize(
    "config,total_b",
    [
        (dict(_LLAMA4_TEXT, num_local_experts=16, interleave_moe_layer_step=1), 109),  # "109B total, 17B active"
        (dict(_LLAMA4_TEXT, num_local_experts=128, interleave_moe_layer_step=2, use_qk_norm=False), 400),  # "400B"
    ],
    ids=["scout", "maverick"],
)
def test_llama4_text_models_count_like_transformers(config, total_b):
    spec = spec_from_config(config, "llama4")
    model = _build(config)
    _assert_counts_match(spec, model)
    _assert_layers_match(spec, model)
    # The cards' totals include the vision encoder (under 1.5B), which the text model has not.
    assert abs(total_b - spec.total_params / 1e9) < 1.5
    assert round(spec.active_params / 1e9) == 17


# ---------------------------------------------------------------------------------------------------------
# LoRA on the new layouts == what peft builds
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    ["deepseek_v3", "llama4_text-interleaved", "gpt_oss", "gemma3_text", "olmo2", "qwen3_next",
     "qwen3_next-layer-types-dense-layers"],
)  # fmt: skip
@pytest.mark.parametrize("targets", ["all-linear", ("q_proj", "v_proj", "o_proj")], ids=["all-linear", "qvo"])
def test_lora_counts_on_new_layouts_match_peft(variant, targets):
    peft = pytest.importorskip("peft")
    config = TINY_VARIANTS[variant]
    spec = spec_from_config(config, variant)
    if variant == "deepseek_v3" and targets != "all-linear":
        targets = ("q_b_proj", "kv_b_proj", "o_proj")  # MLA has no q_proj / v_proj
    transformers.logging.set_verbosity_error()
    cfg = {k: v for k, v in config.items() if k != "model_type"}
    model = transformers.AutoModelForCausalLM.from_config(
        transformers.AutoConfig.for_model(config["model_type"], **cfg)
    )
    lora = peft.LoraConfig(r=4, target_modules=targets if isinstance(targets, str) else list(targets))
    expected = peft.get_peft_model(model, lora).get_nb_trainable_parameters()[0]
    assert spec.lora_trainable_params(targets, 4) == expected
