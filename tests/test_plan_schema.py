"""plan.yaml schema: round trip, validation (all problems at once, with field paths), --set overrides."""

from __future__ import annotations

import os

import pytest
import yaml

from planner.errors import FtplanError
from planner.plan import (
    SCHEMA_VERSION,
    DataSection,
    Decision,
    Fallback,
    ModelSection,
    Plan,
    PlanValidationError,
    apply_overrides,
    dump_plan,
    load_plan,
    plan_from_dict,
    plan_to_dict,
    save_plan,
    validate_plan,
)


def _plan() -> Plan:
    return Plan(
        model=ModelSection("Qwen/Qwen2.5-0.5B", architecture="Qwen2ForCausalLM", total_params=494_032_768),
        data=DataSection("/data/train.jsonl", sha256="ab" * 32, rows=100, valid_rows=98),
        decisions=[
            Decision("training.lr", 2e-4, "LoRA range", "seeds/001"),
            Decision("lora.target_modules", ["all-linear"], "all linear", "QLoRA"),
        ],
        fallbacks=[Fallback({"training.micro_batch": 1, "training.grad_accum": 8}, "halve")],
        warnings=["tiny dataset"],
        versions={"ftplan": "0.1.0"},
    )


def _write(tmp_path, data) -> str:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def test_save_load_round_trip(tmp_path):
    plan = _plan()
    path = save_plan(plan, tmp_path)
    assert path == tmp_path / "plan.yaml"
    assert load_plan(tmp_path) == plan  # a folder or the file itself
    assert load_plan(path) == plan
    text = path.read_text()
    assert text.startswith("# ftplan plan (schema version 1)")
    assert list(yaml.safe_load(text))[:3] == ["model", "data", "task"]  # schema order, not sorted


def test_a_renamed_key_loads_under_its_new_name_with_a_note(tmp_path):
    """plan.yaml files written before memory went GiB in and out carry hardware.memory_gb (decimal GB):
    they load, the value read as GiB, a note says so, and saving writes the new key only."""
    data = plan_to_dict(_plan())
    data["hardware"].pop("memory_gib")
    data["hardware"]["memory_gb"] = 25.76  # an RTX 4090's 23.99 GiB, as schema 1 stored it
    plan = load_plan(_write(tmp_path, data))
    assert plan.hardware.memory_gib == 23.99
    assert any("'hardware.memory_gb' is deprecated" in w and "memory_gib: 23.99" in w for w in plan.warnings)
    saved = yaml.safe_load(save_plan(plan, tmp_path / "again").read_text())
    assert saved["hardware"]["memory_gib"] == 23.99 and "memory_gb" not in saved["hardware"]
    data["hardware"]["memory_gb"] = "lots"
    with pytest.raises(PlanValidationError, match="hardware.memory_gib"):
        load_plan(_write(tmp_path, data))


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    save_plan(_plan(), tmp_path)
    save_plan(_plan(), tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["plan.yaml"]


def test_save_refuses_an_invalid_plan_and_keeps_the_old_file(tmp_path):
    good = _plan()
    save_plan(good, tmp_path)
    bad = _plan()
    bad.training.lr = -1.0
    with pytest.raises(FtplanError, match=r"training\.lr: must be > 0, got -1"):
        save_plan(bad, tmp_path)
    assert load_plan(tmp_path) == good


def test_all_problems_reported_together_with_paths(tmp_path):
    data = plan_to_dict(_plan())
    data["training"]["lr"] = -1
    data["strategy"]["method"] = "fulll"
    data["training"]["lrr"] = 3
    data["lora"]["r"] = "sixteen"
    data["evaluation"]["metric"] = "bleu"
    del data["model"]["name_or_path"]
    with pytest.raises(PlanValidationError) as err:
        load_plan(_write(tmp_path, data))
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "plan.yaml") + ": ")
    assert "training.lr: must be > 0, got -1" in msg
    assert "strategy.method: unknown 'fulll' (did you mean 'full'?)" in msg
    assert "training.lrr: unknown key (did you mean 'lr'?)" in msg
    assert "lora.r: must be an integer, got 'sixteen'" in msg
    assert "evaluation.metric: unknown 'bleu'" in msg
    assert "model.name_or_path: required" in msg
    assert len(err.value.errors) == 6
    assert "\n" not in msg  # one line for the CLI


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("training.micro_batch", 0, "training.micro_batch: must be >= 1, got 0"),
        ("training.warmup_ratio", 1.5, "training.warmup_ratio: must be < 1, got 1.5"),
        ("lora.dropout", -0.1, "lora.dropout: must be >= 0, got -0.1"),
        ("data.val_split", 0.9, "data.val_split: must be <= 0.5, got 0.9"),
        ("training.packing", "yes", "training.packing: must be true/false, got 'yes'"),
        ("training.seq_len", 1024.5, "training.seq_len: must be an integer, got 1024.5"),
        ("lora.target_modules", "q_proj", "lora.target_modules: must be a list of a string, got 'q_proj'"),
        ("training.max_steps", 0, "training.max_steps: must be -1 (use epochs) or >= 1, got 0"),
        ("strategy.offload_params", True, "strategy.offload_params: needs distribution zero3 or fsdp"),
        ("training", [1, 2], "training: must be a mapping, got [1, 2]"),
    ],
)
def test_single_problems(tmp_path, path, value, expected):
    data = plan_to_dict(_plan())
    section, _, key = path.rpartition(".")
    (data[section] if section else data)[key] = value
    with pytest.raises(PlanValidationError) as err:
        load_plan(_write(tmp_path, data))
    assert expected in str(err.value)


def test_lora_methods_need_a_lora_section():
    data = plan_to_dict(_plan())
    data["lora"] = None
    with pytest.raises(PlanValidationError, match="lora: required when strategy.method is 'lora'"):
        plan_from_dict(data)
    data["strategy"]["method"] = "full"
    assert plan_from_dict(data).lora is None


def test_yaml11_exponent_floats_are_numbers(tmp_path):
    # PyYAML reads `1e-5` (no dot) as a string; users write it that way.
    text = dump_plan(_plan()).replace("lr: 0.0002", "lr: 1e-5")
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    assert load_plan(path).training.lr == 1e-5


def test_defaults_fill_missing_optional_sections(tmp_path):
    plan = load_plan(_write(tmp_path, {"model": {"name_or_path": "m"}, "data": {"path": "d.jsonl"}}))
    assert plan.training.seq_len == 2048 and plan.lora.r == 16 and plan.schema_version == SCHEMA_VERSION


def test_other_schema_version_is_refused(tmp_path):
    data = plan_to_dict(_plan())
    data["schema_version"] = 2
    with pytest.raises(FtplanError, match="schema_version: this ftplan reads version 1, got 2"):
        load_plan(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the plan file is empty"),
        ("model: [unclosed", "not valid YAML"),
        ("- a list\n- not a mapping\n", "plan: must be a mapping"),
    ],
)
def test_unreadable_plans(tmp_path, text, expected):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(FtplanError, match=expected):
        load_plan(path)


def test_missing_plan_file(tmp_path):
    with pytest.raises(FtplanError, match="no such plan file"):
        load_plan(tmp_path / "nope")


def test_validate_plan_on_objects():
    plan = _plan()
    assert validate_plan(plan) == []
    plan.training.grad_accum = 0
    plan.strategy.precision = "fp8"
    errs = validate_plan(plan)
    assert "training.grad_accum: must be >= 1, got 0" in errs
    assert any(e.startswith("strategy.precision: unknown 'fp8'") for e in errs)


# ---------------------------------------------------------------------------------------- --set


def test_overrides_are_typed_by_the_schema():
    plan = apply_overrides(
        _plan(),
        [
            "training.lr=3e-4",
            "training.micro_batch=4",
            "training.packing=true",
            "lora.target_modules=q_proj,v_proj",
            "model.revision=1234",
            "evaluation.early_stopping_patience=null",
            "training.epochs=2",
        ],
    )
    assert plan.training.lr == 3e-4 and plan.training.micro_batch == 4 and plan.training.packing is True
    assert plan.lora.target_modules == ["q_proj", "v_proj"]
    assert plan.model.revision == "1234"  # a string field keeps the text, even when it looks like a number
    assert plan.evaluation.early_stopping_patience is None
    assert plan.training.epochs == 2.0 and isinstance(plan.training.epochs, float)
    assert _plan().training.lr == 2e-4  # the input is not mutated


def test_overrides_accept_a_mapping_and_yaml_lists():
    plan = apply_overrides(
        _plan(), {"lora.target_modules": "[q_proj, k_proj]", "strategy.method": "full", "lora": "null"}
    )
    assert plan.lora is None and plan.strategy.method == "full"


def test_override_into_a_null_section_starts_from_defaults():
    plan = apply_overrides(_plan(), {"strategy.method": "full", "lora": "null"})
    plan = apply_overrides(plan, {"strategy.method": "lora", "lora.r": "8"})
    assert plan.lora.r == 8 and plan.lora.alpha == 32


def test_bad_overrides_are_reported_together():
    with pytest.raises(FtplanError) as err:
        apply_overrides(_plan(), ["training.lrr=1", "lora=3", "training.micro_batch=many"])
    msg = str(err.value)
    assert msg.startswith("--set: ")
    assert "training.lrr: unknown key 'lrr' in training (did you mean 'training.lr'?)" in msg
    assert "lora: is a section" in msg
    with pytest.raises(FtplanError, match="training.micro_batch: must be an integer, got 'many'"):
        apply_overrides(_plan(), ["training.micro_batch=many"])
    with pytest.raises(FtplanError, match=r"strategy\.distribution: unknown 'zero9'"):
        apply_overrides(_plan(), ["strategy.distribution=zero9"])
    with pytest.raises(FtplanError, match="expected key=value"):
        apply_overrides(_plan(), ["training.lr"])
    with pytest.raises(FtplanError, match="'task' is not a section"):
        apply_overrides(_plan(), ["task.x=1"])
