"""Model spec: catalog, loaders, parameter counts (checked against transformers) and PEFT counts (against peft).

torch/transformers/peft are only imported inside the tests that compare against them, so the loader tests
still run where they are missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from model_spec_helpers import (
    TINY_CONFIGS,
    build_model,
    component_of,
    meta_model,
    peft_model_summary,
    peft_trainable,
)

from planner.errors import FtplanError
from planner.model_spec import (
    ModelSpec,
    catalog,
    catalog_names,
    default_lora_targets,
    load_model_spec,
    spec_from_config,
)

REPO = Path(__file__).resolve().parents[1]
CATALOG = catalog_names()

# The required entries (hub ids as published on the Hub).
REQUIRED = [
    "meta-llama/Llama-2-7b-hf",
    "meta-llama/Llama-2-13b-hf",
    "meta-llama/Llama-2-70b-hf",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-3B",
    "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.1-70B",
    "meta-llama/Llama-3.1-405B",
    "meta-llama/Meta-Llama-3-8B",
    "mistralai/Mistral-7B-v0.1",
    "mistralai/Mixtral-8x7B-v0.1",
    "Qwen/Qwen2.5-0.5B",
    "Qwen/Qwen2.5-1.5B",
    "Qwen/Qwen2.5-3B",
    "Qwen/Qwen2.5-7B",
    "Qwen/Qwen2.5-14B",
    "Qwen/Qwen2.5-32B",
    "Qwen/Qwen2.5-72B",
    "google/gemma-2-2b",
    "google/gemma-2-9b",
    "google/gemma-2-27b",
    "microsoft/Phi-3-mini-4k-instruct",
    "microsoft/Phi-3.5-mini-instruct",
    "HuggingFaceTB/SmolLM2-135M",
    "HuggingFaceTB/SmolLM2-360M",
    "HuggingFaceTB/SmolLM2-1.7B",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "openai-community/gpt2",
    "huggyllama/llama-65b",
]


# --------------------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------------------


def test_catalog_has_the_required_models_keyed_by_hub_id():
    assert len(CATALOG) >= 28
    missing = [m for m in REQUIRED if m not in CATALOG]
    assert not missing, missing


def test_catalog_aliases_are_unique_and_resolve_case_insensitively():
    seen: dict[str, str] = {}
    for hub_id, entry in catalog().items():
        for alias in entry["aliases"]:
            assert alias.lower() not in seen, f"alias {alias} used by {seen.get(alias.lower())} and {hub_id}"
            seen[alias.lower()] = hub_id
            assert load_model_spec(alias.upper()).model_type == entry["config"]["model_type"]
    assert load_model_spec("llama-3.1-8b").config == catalog()["meta-llama/Llama-3.1-8B"]["config"]
    assert load_model_spec("QWEN/qwen2.5-0.5b").hidden_size == 896
    assert load_model_spec("Qwen2.5-0.5B").source == "catalog"  # bare repo name


def test_catalog_loads_with_one_cached_read():
    assert catalog() is catalog()
    t0 = time.perf_counter()
    for name in CATALOG:
        load_model_spec(name).param_counts()
    assert time.perf_counter() - t0 < 0.5


def test_importing_model_spec_does_not_import_torch():
    code = (
        "import sys, planner.model_spec as m; m.load_model_spec('gpt2').param_counts();"
        "heavy = [x for x in ('torch', 'transformers', 'peft', 'huggingface_hub') if x in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --------------------------------------------------------------------------------------------------------
# Parameter counts == what transformers builds, for every catalog entry
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hub_id", CATALOG)
def test_catalog_param_counts_match_transformers_meta_model(hub_id):
    pytest.importorskip("transformers")
    model = meta_model(hub_id)
    spec = load_model_spec(hub_id)
    pc = spec.param_counts()
    # parameters() de-duplicates tied weights, like the memory the model really takes.
    assert pc.total == sum(p.numel() for p in model.parameters())
    groups: dict[str, int] = {}
    for name, p in model.named_parameters():
        groups[component_of(name)] = groups.get(component_of(name), 0) + p.numel()
    assert not [k for k in groups if k.startswith("unknown")], groups
    assert pc.embeddings == groups["embeddings"]
    assert pc.lm_head == groups.get("lm_head", 0)
    assert (pc.lm_head == 0) == spec.tie_word_embeddings
    assert pc.norms == groups["norms"]
    assert pc.attention == groups["attention"]
    assert pc.mlp == groups.get("mlp", 0) + groups.get("experts", 0)
    assert pc.experts == groups.get("experts", 0)


@pytest.mark.parametrize("hub_id", CATALOG)
def test_linear_layers_match_the_modules_of_layer_zero(hub_id):
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model = meta_model(hub_id)
    spec = load_model_spec(hub_id)
    prefix = spec.family.layer_prefix + ".0"
    layer = model.get_submodule(prefix)
    seen = 0
    for shape in spec.linear_layers():
        if shape.kind == "param":
            module = model.get_submodule(f"{prefix}.{shape.parent}")
            weight = getattr(module, shape.name)
            weight = getattr(weight, "weight", weight)  # the router is a module holding .weight
            assert weight.numel() == shape.count * shape.in_features * shape.out_features
            continue
        module = model.get_submodule(f"{prefix}.{shape.path}")
        # Subclasses count (Llama 4's router is an nn.Linear subclass): peft wraps them as Linears.
        if shape.kind == "conv1d":
            assert type(module).__name__ == "Conv1D", (shape, type(module))
            assert tuple(module.weight.shape) == (shape.in_features, shape.out_features)  # Conv1D: [in, out]
        else:
            assert isinstance(module, torch.nn.Linear), (shape, type(module))
            assert (module.in_features, module.out_features) == (shape.in_features, shape.out_features)
        assert (module.bias is not None) == shape.bias, shape
        seen += 1
    actual = sum(1 for m in layer.modules() if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")
    assert seen == actual  # no Linear/Conv1D in the layer is missing from linear_layers()


def test_known_published_totals():
    # Independent anchors: parameter counts stated in model cards and papers.
    assert load_model_spec("meta-llama/Llama-2-7b-hf").total_params == 6_738_415_616
    assert load_model_spec("gpt2").total_params == 124_439_808
    mixtral = load_model_spec("mistralai/Mixtral-8x7B-v0.1")
    assert round(mixtral.total_params / 1e9, 1) == 46.7  # "46.7B total parameters" (Mistral AI)
    assert round(mixtral.active_params / 1e9, 1) == 12.9  # "12.9B active parameters per token"
    assert round(load_model_spec("huggyllama/llama-65b").total_params / 1e9, 1) == 65.3


def test_dense_active_equals_total():
    spec = load_model_spec("Qwen/Qwen2.5-7B")
    assert spec.active_params == spec.total_params and not spec.is_moe


# --------------------------------------------------------------------------------------------------------
# PEFT counts == what peft builds (tiny models)
# --------------------------------------------------------------------------------------------------------

LORA_CASES = [
    (arch, targets)
    for arch in TINY_CONFIGS
    for targets in ["all-linear", ("q_proj", "v_proj"), ("lm_head",)]
    if not (arch in {"gpt2", "phi3"} and targets == ("q_proj", "v_proj"))
] + [
    ("gpt2", ("c_attn",)),
    ("gpt2", ("c_proj",)),
    ("gpt2", ("mlp.c_proj",)),
    ("gpt2", ("attn.c_proj", "c_fc")),
    ("phi3", ("qkv_proj", "o_proj")),
    ("phi3", ("gate_up_proj",)),
    ("mixtral", ("w1", "w3")),
    ("mixtral", ("w2", "gate")),
    ("mixtral", ("q_proj", "block_sparse_moe.w2")),
    ("qwen3_moe", ("gate_proj", "up_proj")),
    ("qwen3_moe", ("down_proj", "k_proj")),
    ("qwen3_moe", ("gate",)),
    ("llama", ("self_attn.q_proj", "mlp.down_proj")),
    ("qwen2", (r".*\.layers\.1\..*_proj",)),
]


@pytest.mark.parametrize("arch,targets", LORA_CASES, ids=lambda v: v if isinstance(v, str) else ",".join(v))
def test_lora_trainable_params_match_peft(arch, targets):
    peft = pytest.importorskip("peft")
    cfg = TINY_CONFIGS[arch]
    spec = spec_from_config(cfg, arch)
    # peft takes a lone regex as a string (re.fullmatch), lists otherwise.
    peft_targets = targets if isinstance(targets, str) else list(targets)
    if isinstance(targets, tuple) and len(targets) == 1 and "*" in targets[0]:
        peft_targets = targets[0]
    for dora in (False, True):
        config = peft.LoraConfig(r=8, target_modules=peft_targets, use_dora=dora)
        if dora and any(m.shape.kind == "param" for m in spec.lora_modules(targets, 8)):
            # MoE expert/router parameters: peft refuses DoRA there, and so do we.
            with pytest.raises(ValueError, match="dora"):
                peft_trainable(cfg, config)
            with pytest.raises(FtplanError, match="DoRA"):
                spec.lora_trainable_params(targets, 8, dora=True)
            continue
        expected, wrapped = peft_model_summary(cfg, config)
        assert spec.lora_trainable_params(targets, 8, dora=dora) == expected, (arch, targets, dora)
        ours = {m.name for m in spec.lora_modules(targets, 8) if m.shape.kind != "param"}
        assert ours == wrapped  # the same modules, by full name


def test_lora_on_moe_target_parameters_matches_peft():
    peft = pytest.importorskip("peft")
    cfg = TINY_CONFIGS["mixtral"]
    spec = spec_from_config(cfg, "mixtral")
    params = ("experts.gate_up_proj", "experts.down_proj")
    expected = peft_trainable(
        cfg, peft.LoraConfig(r=4, target_modules=["q_proj"], target_parameters=list(params))
    )
    assert spec.lora_trainable_params(("q_proj",), 4, parameters=params) == expected


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_prompt_and_prefix_tuning_params_match_peft(arch):
    peft = pytest.importorskip("peft")
    cfg = TINY_CONFIGS[arch]
    spec = spec_from_config(cfg, arch)
    assert spec.prompt_tuning_params(7) == peft_trainable(
        cfg, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=7)
    )
    for projection in (False, True):
        expected = peft_trainable(
            cfg,
            peft.PrefixTuningConfig(
                task_type="CAUSAL_LM", num_virtual_tokens=7, prefix_projection=projection
            ),
        )
        assert spec.prefix_tuning_params(7, projection=projection) == expected, projection


def test_lora_counts_scale_with_rank_and_all_linear_excludes_lm_head():
    spec = load_model_spec("meta-llama/Llama-3.1-8B")
    r8, r16 = spec.lora_trainable_params("all-linear", 8), spec.lora_trainable_params("all-linear", 16)
    assert r16 == 2 * r8
    # all-linear on Llama-3.1-8B at r=8: per layer r * sum(in + out) over q,k,v,o,gate,up,down.
    per_layer = 8 * sum(s.in_features + s.out_features for s in spec.linear_layers())
    assert r8 == 32 * per_layer
    assert all(m.name != "lm_head" for m in spec.lora_modules("all-linear", 8))
    assert spec.lora_trainable_params("q_proj,v_proj", 8) == spec.lora_trainable_params(
        ("q_proj", "v_proj"), 8
    )


def test_lora_bad_input_is_a_one_line_error():
    spec = load_model_spec("gpt2")
    with pytest.raises(FtplanError, match="match no Linear layer.*choose from.*c_attn"):
        spec.lora_trainable_params(("q_proj",), 8)
    with pytest.raises(FtplanError, match="larger than the hidden size"):
        spec.lora_trainable_params("all-linear", 1024)
    with pytest.raises(FtplanError, match="positive integer"):
        spec.lora_trainable_params("all-linear", 0)
    with pytest.raises(FtplanError, match="needs w3"):
        load_model_spec("mixtral").lora_trainable_params(("w1",), 8)


def test_default_lora_targets_follow_peft_table():
    peft_constants = pytest.importorskip("peft.utils.constants")
    table = peft_constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    for name in ("gpt2", "Qwen/Qwen2.5-0.5B", "google/gemma-2-2b", "meta-llama/Llama-3.2-1B", "mixtral"):
        spec = load_model_spec(name)
        assert list(default_lora_targets(spec)) == list(table[spec.model_type])
    # peft has no phi3 default; ours is the fused attention projection, which must exist in the model.
    phi = load_model_spec("microsoft/Phi-3-mini-4k-instruct")
    assert "phi3" not in table and default_lora_targets(phi) == ("qkv_proj",)
    assert phi.lora_trainable_params(default_lora_targets(phi), 8) > 0


# --------------------------------------------------------------------------------------------------------
# spec_from_config: key normalisation and fallbacks
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_tiny_configs_count_like_transformers(arch):
    pytest.importorskip("transformers")
    model = build_model(TINY_CONFIGS[arch], meta=True)
    spec = spec_from_config(TINY_CONFIGS[arch], arch)
    assert spec.total_params == sum(p.numel() for p in model.parameters())


def test_gpt2_keys_are_normalised():
    spec = spec_from_config(
        {"model_type": "gpt2", "n_embd": 64, "n_layer": 3, "n_head": 4, "vocab_size": 50, "n_positions": 32},
        "g",
    )
    assert (spec.hidden_size, spec.num_layers, spec.num_attention_heads) == (64, 3, 4)
    assert spec.intermediate_size == 256 and spec.max_position_embeddings == 32  # n_inner None -> 4 * n_embd
    assert spec.tie_word_embeddings and spec.norm_type == "layernorm" and spec.mlp_type == "plain"
    assert spec.hidden_act == "gelu_new" and spec.num_kv_heads == 4


def test_unknown_decoder_type_is_refused_not_guessed():
    """An architecture neither in the table nor buildable by transformers: one line naming it, no guess."""
    pytest.importorskip("transformers")
    cfg = dict(TINY_CONFIGS["llama"], model_type="my_new_decoder", architectures=["MyNewForCausalLM"])
    with pytest.raises(FtplanError, match="model_type 'my_new_decoder' is not in ftplan's architecture table") as e:
        spec_from_config(cfg, "x")
    assert "\n" not in str(e.value)


def test_multimodal_wrapper_without_a_causal_lm_class_is_refused_clearly():
    """Llava is image-text-to-text in transformers (no AutoModelForCausalLM class): the executor could not
    load it, so the plan refuses in one line instead of counting the text model alone. Wrappers that are
    causal LMs (Gemma 3, Fuyu...) are counted whole: tests/test_model_sweep.py."""
    pytest.importorskip("transformers")
    cfg = {"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
           "text_config": TINY_CONFIGS["llama"], "vision_config": {"hidden_size": 32}}  # fmt: skip
    with pytest.raises(FtplanError, match="model_type 'llava'") as info:
        spec_from_config(cfg, "v")
    assert "\n" not in str(info.value)
    cfg["vision_config"] = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "image_size": 28, "patch_size": 14}  # fmt: skip
    with pytest.raises(FtplanError, match="'llava'.*no causal-LM class"):
        spec_from_config(cfg, "v")


@pytest.mark.parametrize(
    "change,message",
    [
        ({"hidden_size": None}, "missing hidden_size"),
        ({"hidden_size": 0}, "hidden_size=0 must be a positive integer"),
        ({"num_hidden_layers": -2}, "num_hidden_layers=-2"),
        ({"vocab_size": "big"}, "vocab_size='big'"),
        ({"num_key_value_heads": 3}, "not a multiple"),
        ({"hidden_size": 66}, "not divisible"),
        ({"intermediate_size": None}, "missing intermediate_size"),
    ],
)
def test_impossible_values_are_rejected(change, message):
    cfg = dict(TINY_CONFIGS["llama"])
    for key, value in change.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    with pytest.raises(FtplanError, match=message) as err:
        spec_from_config(cfg, "m", where="some/config.json")
    assert "some/config.json" in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------------------
# Loaders: local folder, HF cache, hub (mocked), unknown, malformed
# --------------------------------------------------------------------------------------------------------


def _write_model_folder(folder: Path, config: dict, *, tokenizer: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if tokenizer:
        (folder / "tokenizer_config.json").write_text("{}")
    return folder


def test_local_folder_with_tokenizer(tmp_path):
    folder = _write_model_folder(tmp_path / "my-model", TINY_CONFIGS["qwen2"], tokenizer=True)
    spec = load_model_spec(str(folder))
    assert spec.source == "local" and spec.local_path == str(folder) and spec.tokenizer_path == str(folder)
    assert spec.model_type == "qwen2" and spec.attention_bias
    assert load_model_spec(str(folder / "config.json")).hidden_size == 64


def test_local_folder_without_tokenizer_or_config(tmp_path):
    folder = _write_model_folder(tmp_path / "m", TINY_CONFIGS["gpt2"])
    assert load_model_spec(str(folder)).tokenizer_path is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(FtplanError, match="has no config.json"):
        load_model_spec(str(tmp_path / "empty"))
    with pytest.raises(FtplanError, match="does not exist"):
        load_model_spec(str(tmp_path / "nope"))


def test_malformed_config_json_names_file_and_line(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "config.json").write_text('{\n  "model_type": "llama",\n  "hidden_size": 64,,\n}\n')
    with pytest.raises(FtplanError) as err:
        load_model_spec(str(folder))
    msg = str(err.value)
    assert f"{folder / 'config.json'}:3:" in msg and "invalid JSON" in msg
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(FtplanError, match="expected a JSON object"):
        load_model_spec(str(folder))
    (folder / "config.json").write_text(json.dumps({**TINY_CONFIGS["llama"], "hidden_size": 0}))
    with pytest.raises(FtplanError, match=r"config.json: hidden_size=0"):
        load_model_spec(str(folder))


def _fake_cache(cache: Path, hub_id: str, config: dict, *, tokenizer: bool) -> Path:
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    return _write_model_folder(repo / "snapshots" / "abc123", config, tokenizer=tokenizer)


def test_hub_id_found_in_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snap = _fake_cache(tmp_path / "hub", "someorg/tiny-phi", TINY_CONFIGS["phi3"], tokenizer=True)
    spec = load_model_spec("someorg/tiny-phi", offline=True)
    assert spec.source == "hf-cache" and spec.model_type == "phi3"
    assert spec.local_path == str(snap) and spec.tokenizer_path == str(snap)


def test_hf_home_layout_and_catalog_entry_picks_up_cached_tokenizer(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snap = _fake_cache(
        tmp_path / "hf" / "hub", "HuggingFaceTB/SmolLM2-135M", {"model_type": "llama"}, tokenizer=True
    )
    spec = load_model_spec("HuggingFaceTB/SmolLM2-135M")  # catalog wins for the architecture...
    assert spec.source == "catalog" and spec.hidden_size == 576
    assert spec.tokenizer_path == str(snap)  # ...and the cached tokenizer is found for data profiling


def test_unknown_model_suggests_close_catalog_matches(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FtplanError) as err:
        load_model_spec("meta-llama/Llama-3.1-8", offline=True)
    msg = str(err.value)
    assert "unknown model" in msg and "meta-llama/Llama-3.1-8B" in msg and "\n" not in msg
    with pytest.raises(FtplanError, match="did you mean.*Qwen/Qwen2.5-7B"):
        load_model_spec("qwen2.5-7", offline=True)


def test_online_fetch_downloads_only_config_json(tmp_path, monkeypatch):
    import types

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    calls = []
    snap = _write_model_folder(tmp_path / "dl", TINY_CONFIGS["gemma2"])

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(snap / filename)

    monkeypatch.setitem(
        sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download)
    )
    spec = load_model_spec("someorg/new-model", offline=False)
    assert calls == [("someorg/new-model", "config.json")]
    assert spec.source == "hub" and spec.model_type == "gemma2"
    calls.clear()
    with pytest.raises(FtplanError, match="unknown model"):
        load_model_spec("someorg/new-model", offline=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FtplanError, match="unknown model"):
        load_model_spec("someorg/new-model")
    assert calls == []


def test_online_errors_are_one_line(tmp_path, monkeypatch):
    import types

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))

    class GatedRepoError(Exception):
        pass

    def gated(repo_id, filename, **kwargs):
        raise GatedRepoError("401 with token hf_SECRET")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=gated))
    with pytest.raises(FtplanError, match="gated") as err:
        load_model_spec("meta-llama/Llama-9-1B", offline=False)
    assert "hf_SECRET" not in str(err.value)

    def down(repo_id, filename, **kwargs):
        raise ConnectionError("boom")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=down))
    with pytest.raises(FtplanError, match="could not fetch config.json"):
        load_model_spec("someorg/x", offline=False)


def test_modelspec_is_constructible_without_the_new_fields():
    # Other modules build ModelSpec directly; the fields added here all have defaults.
    spec = ModelSpec(
        name="t",
        model_type="llama",
        architecture="LlamaForCausalLM",
        hidden_size=64,
        intermediate_size=96,
        num_layers=2,
        num_attention_heads=4,
        num_kv_heads=2,
        head_dim=16,
        vocab_size=128,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        mlp_type="gated",
        norm_type="rmsnorm",
    )
    assert spec.total_params == spec_from_config(TINY_CONFIGS["llama"], "t").total_params


def test_folder_named_like_a_catalog_id_without_config_falls_back_to_the_catalog(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2").mkdir()  # e.g. an output folder called gpt2
    assert load_model_spec("gpt2").source == "catalog"
    _write_model_folder(tmp_path / "gpt2", TINY_CONFIGS["gpt2"])
    assert load_model_spec("gpt2").source == "local"  # a real model folder wins, as in from_pretrained


def test_custom_code_model_gets_notes():
    pytest.importorskip("transformers")
    cfg = dict(TINY_CONFIGS["llama"], model_type="fancy", auto_map={"AutoModelForCausalLM": "m.Fancy"})
    with pytest.raises(FtplanError, match="'fancy' is custom code .auto_map."):  # never counted as a guess
        spec_from_config(cfg, "fancy")
    quant = dict(TINY_CONFIGS["llama"], quantization_config={"quant_method": "awq", "bits": 4})
    assert any("pre-quantized" in n for n in spec_from_config(quant, "q").notes)
