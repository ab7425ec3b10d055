"""The settings issue 10 made expressible (optimizer variants, gradient accumulation, fused loss on/off,
QLoRA without the fp32 upcast, modules_to_save with added tokens): each is one plan field that the
estimator models (planner.convert.setup_from_plan) and the executor runs, checked on both sides."""

from __future__ import annotations

import json

import pytest
from executor_helpers import make_plan, plan_folder, tiny_model

from planner.convert import setup_from_plan
from planner.plan import PlanValidationError, load_plan, save_plan


def _plan(tmp_path, model_dir, method="lora", **sections):
    """executor_helpers.make_plan, with a ``model`` section override too."""
    from dataclasses import replace

    model_fields = sections.pop("model", None)
    plan = make_plan(tmp_path, method=method, model=model_dir, **sections)
    return replace(plan, model=replace(plan.model, **model_fields)) if model_fields else plan


# plan fields -> the TrainSetup fields the estimate reads (one name per concept, flag to trainer)
SETUP_FROM_PLAN = [
    ({"strategy": {"optimizer": "adamw_foreach"}}, {"optimizer": "adamw_foreach"}),
    ({"strategy": {"optimizer": "paged_adamw_32bit"}}, {"optimizer": "paged_adamw_32bit"}),
    ({"training": {"grad_accum": 4}}, {"grad_accum": 4}),
    ({"training": {"fused_loss": False}}, {"fused_loss": False}),
    ({"training": {"fused_loss": True}}, {"fused_loss": True}),
    ({"method": "qlora", "strategy": {"method": "qlora", "precision": "bf16", "qlora_upcast": False}},
     {"qlora_upcast": False}),
    ({"lora": {"adapter_dtype": "model"}}, {"adapter_dtype": "model"}),
    ({"method": "qlora", "strategy": {"method": "qlora", "precision": "bf16", "double_quant": False}},
     {"double_quant": False}),
    ({"lora": {"modules_to_save": ["embed_tokens", "lm_head"]}, "model": {"added_tokens": ["<a>", "<b>"]}},
     {"modules_to_save": ("embed_tokens", "lm_head"), "added_tokens": 2}),
]


@pytest.mark.parametrize("fields,expected", SETUP_FROM_PLAN, ids=[str(e) for _, e in SETUP_FROM_PLAN])
def test_plan_settings_reach_the_estimate(tmp_path, fields, expected):
    fields = dict(fields)
    method = fields.pop("method", "lora")
    sections = {}
    for name, values in fields.items():
        if name == "lora":
            values = {"r": 4, "alpha": 8, "dropout": 0.0, **values}
        sections[name] = values
    plan = _plan(tmp_path, tmp_path / "unused", method, **sections)
    save_plan(plan, tmp_path / "plan.yaml")
    setup = setup_from_plan(load_plan(tmp_path / "plan.yaml"))  # through the YAML round trip
    for key, value in expected.items():
        assert getattr(setup, key) == value, key


# plan fields -> the field the one-line error names
REFUSED = [
    ({"model": {"added_tokens": ["<x>"]}}, "model.added_tokens"),
    ({"lora": {"modules_to_save": ["embeddings"]}}, "lora.modules_to_save[0]"),
    ({"strategy": {"qlora_upcast": False}}, "strategy.qlora_upcast"),
    ({"strategy": {"double_quant": False}}, "strategy.double_quant"),
    ({"lora": {"adapter_dtype": "bf16"}}, "lora.adapter_dtype"),
]


@pytest.mark.parametrize("fields,field", REFUSED, ids=[f for _, f in REFUSED])
def test_impossible_settings_are_refused_with_the_field(tmp_path, fields, field):
    sections = {k: ({"r": 4, "alpha": 8, "dropout": 0.0, **v} if k == "lora" else v) for k, v in fields.items()}
    plan = _plan(tmp_path, tmp_path / "unused", **sections)
    with pytest.raises(PlanValidationError) as info:  # refused before anything is written
        save_plan(plan, tmp_path / "plan.yaml")
    assert field in str(info.value) and not (tmp_path / "plan.yaml").exists()


def test_preference_refuses_the_unfused_loss(tmp_path):
    plan = make_plan(tmp_path, task="preference", fmt="preference", model=tmp_path / "unused",
                     training={"fused_loss": False})
    with pytest.raises(PlanValidationError, match="training.fused_loss"):
        save_plan(plan, tmp_path / "plan.yaml")


torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("models"))


def test_qlora_upcast_switch_decides_the_dtype_of_non_quantized_weights(tmp_path, model_dir):
    from executor.model import build_model
    from executor.tokenizer import build_tokenizer

    dtypes = {}
    for upcast in (True, False):
        plan = make_plan(tmp_path, method="qlora", model=model_dir,
                         strategy={"method": "qlora", "precision": "bf16", "qlora_upcast": upcast})
        model = build_model(plan, build_tokenizer(plan))
        dtypes[upcast] = {p.dtype for n, p in model.named_parameters() if "norm" in n}
    assert dtypes[True] == {torch.float32}  # peft prepare_model_for_kbit_training
    assert dtypes[False] == {torch.bfloat16}  # the load dtype, as sharded QLoRA keeps it


@pytest.mark.parametrize("fused", [False, True])
def test_lora_with_added_tokens_modules_to_save_foreach_accumulation(tmp_path, model_dir, fused):
    """One run with every new setting at once: it trains, the new tokens exist in the saved tokenizer, the
    saved adapter carries the resized embedding and head copies, and the loss went down."""
    from safetensors import safe_open

    from executor.run import run_plan

    added = ["<tool_call>", "</tool_call>"]
    plan = _plan(
        tmp_path, model_dir,
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "modules_to_save": ["embed_tokens", "lm_head"]},
        model={"added_tokens": added},
        strategy={"optimizer": "adamw_foreach"},
        training={"grad_accum": 2, "micro_batch": 2, "fused_loss": fused},
    )
    folder = plan_folder(tmp_path, plan)
    summary = run_plan(folder, log=lambda *_: None)
    assert summary.status == "completed"
    assert summary.tuned["loss"] < summary.base["loss"]
    logged = [json.loads(line) for line in (folder / "output" / "metrics.jsonl").read_text().splitlines()]
    # the unfused path is transformers' own loss: TRL's fused-head token metrics are not computed
    assert any("loss" in r for r in logged)
    assert any("mean_token_accuracy" in r for r in logged) == fused
    final = folder / "output" / "final"
    vocab = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    with safe_open(str(final / "adapter_model.safetensors"), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    saved = {k: v for k, v in shapes.items() if "lora_" not in k}
    assert saved and all(v[0] == vocab + len(added) for v in saved.values()), saved
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(final)
    assert all(len(tok(t, add_special_tokens=False).input_ids) == 1 for t in added)


@pytest.mark.parametrize("distribution,storage", [("single", "uint8"), ("ddp", "uint8"), ("fsdp", "bfloat16"),
                                                  ("zero3", "bfloat16")])
def test_sharded_qlora_stores_packed_nf4_in_the_compute_dtype(tmp_path, distribution, storage):
    """What planner.sharding assumes FSDP/ZeRO-3 gather (packed 4-bit data in bf16 storage) is what the
    executor asks bitsandbytes for; unsharded runs keep bitsandbytes' uint8 default."""
    from executor.model import quantization_config

    plan = _plan(tmp_path, tmp_path / "unused", "qlora",
                 strategy={"method": "qlora", "precision": "bf16", "distribution": distribution})
    assert str(quantization_config(plan).bnb_4bit_quant_storage).removeprefix("torch.") == storage


@pytest.mark.parametrize("adapter_dtype,expected", [("fp32", "float32"), ("model", "bfloat16")])
def test_adapter_dtype_decides_the_lora_weights_dtype(tmp_path, model_dir, adapter_dtype, expected):
    from executor.model import build_model
    from executor.tokenizer import build_tokenizer

    plan = _plan(tmp_path, model_dir, strategy={"precision": "bf16"},
                 lora={"r": 4, "alpha": 8, "dropout": 0.0, "adapter_dtype": adapter_dtype})
    model = build_model(plan, build_tokenizer(plan))
    dtypes = {str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters() if "lora_" in n}
    assert dtypes == {expected}
