"""Never guess a model's size: every causal-LM model_type transformers ships is counted exactly or refused.

For each model_type in transformers' ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` whose default config transformers
can build, ``config.json`` is written to a folder and ``load_model_spec(folder)`` (what `ftplan estimate
--model FOLDER` resolves) must give the total of transformers' own meta-device model, or refuse in one
line naming the model_type. Architectures in ftplan's family table are counted analytically (no torch);
the others through executor/meta_count.py (run in-process here instead of a subprocess, for speed).
"""

from __future__ import annotations

import json

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from executor import meta_count
from planner import model_spec
from planner.errors import FtplanError


def _model_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _meta_total(config: dict) -> int:
    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "architectures")}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **kwargs)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(autouse=True)
def _in_process(monkeypatch, tmp_path):
    """The meta-device count in this process (the CLI runs it in a subprocess), with a private cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def run(config_text, model_type, where):
        try:
            return meta_count.count_config(json.loads(config_text))
        except Exception as exc:  # noqa: BLE001 - what the subprocess reports
            return {"error": f"{type(exc).__name__}: {exc}"}

    monkeypatch.setattr(model_spec, "_run_meta_count", lambda t, m, w: _check(run(t, m, w), m, w))


def _check(out: dict, model_type: str, where: str) -> dict:
    if "total" not in out:
        raise FtplanError(f"{where}: model_type {model_type!r} ... ({out['error'][:100]})")
    return out


@pytest.mark.parametrize("model_type", _model_types())
def test_every_causal_lm_architecture_is_counted_exactly_or_refused(tmp_path, model_type):
    from transformers import CONFIG_MAPPING

    try:
        config = CONFIG_MAPPING[model_type]().to_dict()
        expected = _meta_total(config)
    except Exception as exc:  # noqa: BLE001 - transformers cannot build its own default: nothing to compare
        pytest.skip(f"transformers cannot build the default {model_type} config: {type(exc).__name__}")
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config, default=str))
    try:
        spec = model_spec.load_model_spec(str(folder))
    except FtplanError as exc:
        assert model_type in str(exc) and "\n" not in str(exc)
        return
    assert spec.total_params == expected, f"{model_type}: counted {spec.total_params:,}, built {expected:,}"


# The architectures the first build counted silently wrong (issue 10), in the default run.
@pytest.mark.parametrize(
    "model_type",
    ["deepseek_v3", "llama4_text", "gpt_oss", "qwen2_moe", "olmoe", "falcon", "gpt_neox", "starcoder2", "phi",
     "opt", "gemma3_text", "jamba"],
)  # fmt: skip
def test_known_miscounts_are_now_exact(tmp_path, model_type):
    from transformers import CONFIG_MAPPING

    config = CONFIG_MAPPING[model_type]().to_dict()
    (tmp_path / "config.json").write_text(json.dumps(config, default=str))
    spec = model_spec.load_model_spec(str(tmp_path))
    assert spec.total_params == _meta_total(config)
    pc = spec.param_counts()
    assert pc.total == pc.embeddings + pc.attention + pc.mlp + pc.norms + pc.lm_head + pc.other
    if "experts" in json.dumps(config) and config.get("num_experts_per_tok"):
        assert pc.experts > 0 and spec.active_params < spec.total_params  # MoE: active < total


def test_without_transformers_an_unknown_architecture_is_refused(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "transformers" else real(n, *a))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "jamba", "hidden_size": 64,
                                                      "num_hidden_layers": 2, "num_attention_heads": 4,
                                                      "vocab_size": 100}))  # fmt: skip
    with pytest.raises(FtplanError, match="'jamba' is not in ftplan's architecture table") as info:
        model_spec.load_model_spec(str(tmp_path))
    assert "would be a guess" in str(info.value) and "ftplan[train]" in info.value.hint


def test_counts_are_cached_per_config(tmp_path, monkeypatch):
    from transformers import CONFIG_MAPPING

    calls = []
    real = model_spec._run_meta_count
    monkeypatch.setattr(model_spec, "_run_meta_count", lambda *a: calls.append(1) or real(*a))
    (tmp_path / "config.json").write_text(json.dumps(CONFIG_MAPPING["opt"]().to_dict()))
    first = model_spec.load_model_spec(str(tmp_path)).total_params
    assert model_spec.load_model_spec(str(tmp_path)).total_params == first and len(calls) == 1
