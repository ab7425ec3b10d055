"""axolotl and LLaMA-Factory configs (issue 12): ``estimate --config``, ``plan --config`` with its review,
``export --to``, the mapping tables both ways, and the round trip exported config -> estimate = the plan's.

Fixtures are written here in each tool's documented keys (axolotl docs/config-reference.qmd, LLaMA-Factory
examples/ and hparams/); the published configs in ../shared/peer-data/configs feed an optional test that skips
when that folder is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ftplan.cli import main
from planner.interop import axolotl, estimate_config, llama_factory, read_config
from planner.interop.common import Ctx, flatten
from planner.interop.export import data_layout, outside_rows
from planner.plan import load_plan, plan_to_dict, world_size

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
MODEL = "Qwen/Qwen2.5-0.5B"  # catalog: plans offline
PEER = ROOT.parent / "shared" / "peer-data" / "configs"
MODULES = {"axolotl": axolotl, "llama-factory": llama_factory}


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


AXOLOTL_LORA = {
    "base_model": MODEL,
    "adapter": "lora",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.0,
    "lora_target_linear": True,
    "sequence_len": 1024,
    "sample_packing": True,  # packed: no attention mask, as `estimate --method` assumes
    "micro_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "gradient_checkpointing": True,
    "optimizer": "adamw_torch_fused",
    "learning_rate": 2e-4,
    "bf16": True,
    "plugins": ["axolotl.integrations.liger.LigerPlugin"],
    "liger_fused_linear_cross_entropy": True,
    "datasets": [{"path": "tatsu-lab/alpaca", "type": "alpaca"}],
    "wandb_project": "demo",
    "lora_mlp_kernel": True,
}

LLAMA_FACTORY_QLORA = {
    "model_name_or_path": MODEL,
    "stage": "sft",
    "do_train": True,
    "finetuning_type": "lora",
    "quantization_bit": 4,
    "lora_rank": 8,
    "lora_target": "all",
    "dataset": "alpaca_en_demo",
    "template": "qwen",
    "cutoff_len": 2048,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 8,
    "learning_rate": 1.0e-4,
    "bf16": True,
    "output_dir": "saves/qwen/qlora",
    "report_to": "none",
}


# ----------------------------------------------------------------------------------------------------------
# estimate --config
# ----------------------------------------------------------------------------------------------------------


def test_estimate_config_json_is_the_method_json_plus_the_mapping(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "lora.yml", AXOLOTL_LORA)
    code, out, err = cli(capsys, "estimate", "--config", str(cfg), "--gpu", "A100-80GB", "--json")
    assert code == 0, err
    data = json.loads(out)
    _, ref_out, _ = cli(capsys, "estimate", "--model", MODEL, "--method", "lora", "--gpu", "A100-80GB", "--json")
    assert set(json.loads(ref_out)) | {"config", "mapped", "unsupported_keys", "ignored_keys"} == set(data)
    # the same setup through the flags gives the same bytes: the mapping reaches the one estimator
    _, flags_out, _ = cli(capsys, "estimate", "--model", MODEL, "--method", "lora", "--lora-r", "16",
                          "--lora-dropout", "0", "--seq-len", "1024", "--micro-batch", "2", "--grad-accum", "4",
                          "--grad-ckpt", "--optimizer", "adamw", "--precision", "bf16", "--gpu", "A100-80GB", "--json")
    assert data["per_gpu_bytes"] == json.loads(flags_out)["per_gpu_bytes"]
    mapped = {k: e["plan"] for e in data["mapped"] for k in e["keys"]}
    assert mapped["micro_batch_size"] == {"training.micro_batch": 2}
    assert mapped["lora_target_linear"] == {"lora.target_modules": ["all-linear"]}
    assert mapped["plugins"] == {"training.fused_loss": True}
    assert "lora_mlp_kernel" in data["unsupported_keys"]
    assert "wandb_project" in data["ignored_keys"]
    assert data["config"]["format"] == "axolotl"


def test_estimate_config_without_fused_loss_models_full_logits(tmp_path, capsys):
    fused = write_yaml(tmp_path / "fused.yml", AXOLOTL_LORA)
    plain = write_yaml(tmp_path / "plain.yml", {k: v for k, v in AXOLOTL_LORA.items()
                                                if k not in ("plugins", "liger_fused_linear_cross_entropy")})
    totals = {}
    for name, path in (("fused", fused), ("plain", plain)):
        code, out, err = cli(capsys, "estimate", "--config", str(path), "--gpu", "A100-80GB", "--json")
        assert code == 0, err
        totals[name] = json.loads(out)["per_gpu_bytes"]["peak_allocated"]
    _, ref, _ = cli(capsys, "estimate", "--model", MODEL, "--method", "lora", "--lora-r", "16", "--lora-dropout", "0",
                    "--seq-len", "1024", "--micro-batch", "2", "--grad-accum", "4", "--grad-ckpt", "--optimizer",
                    "adamw", "--precision", "bf16", "--no-fused-loss", "--gpu", "A100-80GB", "--json")
    assert totals["plain"] == json.loads(ref)["per_gpu_bytes"]["peak_allocated"] > totals["fused"]


def test_llama_factory_defaults_checkpointing_on_and_qlora_not_upcast(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "qlora.yaml", LLAMA_FACTORY_QLORA)
    ci = read_config(cfg)
    assert ci.format == "llama-factory"
    assert ci.overrides["strategy.method"] == "qlora"
    assert ci.defaults["strategy.gradient_checkpointing"] is True  # unless disable_gradient_checkpointing
    assert ci.defaults["lora.alpha"] == 16  # lora_rank * 2
    assert ci.semantics == {"training.fused_loss": False, "strategy.qlora_upcast": False}
    code, out, err = cli(capsys, "estimate", "--config", str(cfg), "--gpu", "RTX-4090", "--json")
    assert code == 0, err
    setup = json.loads(out)["setup"]
    assert setup["gradient_checkpointing"] is True and setup["qlora_upcast"] is False
    assert setup["optimizer"] == "adamw" and setup["lora_alpha"] == 16


def test_table_lists_mapped_and_unmodelled_keys(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "lora.yml", AXOLOTL_LORA)
    code, out, _ = cli(capsys, "estimate", "--config", str(cfg), "--gpu", "RTX-4090")
    assert code == 0
    assert "micro_batch_size: 2 -> training.micro_batch=2" in out
    assert "not modelled lora_mlp_kernel" in out
    assert "ignored (no effect on memory or time): wandb_project" in out


@pytest.mark.parametrize("fmt, key, value, expected", [
    ("axolotl", "adapter", "llama-adapter", "adapter: 'llama-adapter' is not modelled"),
    ("axolotl", "learning_rate", "fast", "learning_rate: must be a number, got 'fast'"),
    ("axolotl", "optimizer", "adamw_torch_4bit", "optimizer: 'adamw_torch_4bit' is not an optimizer ftplan models"),
    ("axolotl", "micro_batch_size", 0, "micro_batch_size: must be at least 1"),
    ("axolotl", "unfrozen_parameters", ["^lm_head.weight$"], "unfrozen_parameters: partial fine-tuning"),
    ("llama-factory", "finetuning_type", "freeze", "finetuning_type: 'freeze' is not modelled"),
    ("llama-factory", "optim", "lion_8bit", "optim: 'lion_8bit' is not an optimizer ftplan models"),
    ("llama-factory", "stage", "kto", "stage: 'kto' is not modelled"),
    ("llama-factory", "deepspeed", "no/such/config.json", "deepspeed: no/such/config.json: file not found"),
])
def test_bad_values_are_one_line_naming_file_and_key(tmp_path, capsys, fmt, key, value, expected):
    base = AXOLOTL_LORA if fmt == "axolotl" else LLAMA_FACTORY_QLORA
    cfg = write_yaml(tmp_path / "bad.yml", {**base, key: value})
    code, out, err = cli(capsys, "estimate", "--config", str(cfg), "--gpu", "RTX-4090", "--json")
    assert code == 2 and out == ""
    assert err.startswith(f"ftplan: error: {cfg}: {expected}"), err
    assert "Traceback" not in err


def test_config_and_setup_flags_do_not_mix(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "lora.yml", AXOLOTL_LORA)
    code, _, err = cli(capsys, "estimate", "--config", str(cfg), "--method", "full")
    assert code == 2 and "--method cannot be combined" in err
    code, _, err = cli(capsys, "estimate", "--config", str(tmp_path / "missing.yml"))
    assert code == 2 and "no such file" in err
    ambiguous = write_yaml(tmp_path / "neither.yml", {"foo": 1})
    code, _, err = cli(capsys, "estimate", "--config", str(ambiguous))
    assert code == 2 and "--config-format" in err


def test_deepspeed_json_is_read_from_the_config_folder(tmp_path, capsys):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "z3.json").write_text(json.dumps({
        "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}},
        "bf16": {"enabled": "auto"}}))
    cfg = write_yaml(tmp_path / "full.yml", {**{k: v for k, v in AXOLOTL_LORA.items() if not k.startswith("lora")},
                                             "adapter": None, "deepspeed": "ds/z3.json"})
    ci = read_config(cfg, gpus=4)
    assert ci.overrides["strategy.method"] == "full"
    assert ci.overrides["strategy.distribution"] == "zero3"
    assert ci.overrides["strategy.offload_optimizer"] and ci.overrides["strategy.offload_params"]
    assert ci.overrides["strategy.mixed_precision"] is True  # DeepSpeed's bf16 optimizer keeps fp32 partitions
    assert any("z3.json" in n for n in ci.notes)
    # not there: the ZeRO stage from the file's name, said in a note and in unsupported_keys
    cfg2 = write_yaml(tmp_path / "full2.yml", {**yaml.safe_load(cfg.read_text()), "deepspeed": "gone/zero2.json"})
    ci2 = read_config(cfg2, gpus=4)
    assert ci2.overrides["strategy.distribution"] == "zero2" and "deepspeed" in ci2.unsupported_keys


def test_fsdp_settings_and_their_process_count(tmp_path):
    fsdp = {**AXOLOTL_LORA, "fsdp_version": 2, "fsdp_config": {"offload_params": True, "reshard_after_forward": True}}
    cfg = write_yaml(tmp_path / "fsdp.yml", fsdp)
    ci = read_config(cfg, gpus=8)
    assert (ci.overrides["strategy.distribution"], ci.overrides["strategy.offload_params"]) == ("fsdp", True)
    with pytest.raises(Exception, match="pass --gpus N"):
        read_config(cfg)  # FSDP over one process
    cfg = write_yaml(tmp_path / "grad_op.yml", {**fsdp, "fsdp_config": {"reshard_after_forward": False}})
    with pytest.raises(Exception, match="only FULL_SHARD"):
        read_config(cfg, gpus=8)
    acc = write_yaml(tmp_path / "accelerate.yaml", {"distributed_type": "FSDP", "num_processes": 2,
                                                    "fsdp_config": {"fsdp_sharding_strategy": "FULL_SHARD",
                                                                    "fsdp_offload_params": False}})
    ci = read_config(write_yaml(tmp_path / "lf.yaml", LLAMA_FACTORY_QLORA), accelerate_config=acc)
    assert (ci.gpus, ci.overrides["strategy.distribution"]) == (2, "fsdp")


def test_preference_micro_batch_counts_pairs_on_both_sides(tmp_path, capsys):
    dpo = {**AXOLOTL_LORA, "rl": "dpo", "dpo_use_liger_kernel": True, "micro_batch_size": 3}
    cfg = write_yaml(tmp_path / "dpo.yml", dpo)
    ci = read_config(cfg)
    assert ci.task == "preference" and ci.overrides["training.micro_batch"] == 3
    code, out, _ = cli(capsys, "estimate", "--config", str(cfg), "--gpu", "A100-80GB", "--json")
    setup = json.loads(out)["setup"]
    assert code == 0 and setup["micro_batch"] == 3 and setup["sequences_per_row"] == 2


# ----------------------------------------------------------------------------------------------------------
# plans made with ftplan, exported (module fixture: four plans, both formats)
# ----------------------------------------------------------------------------------------------------------

PLANS = {
    "lora": ("alpaca.jsonl", "sft", ["--gpu", "RTX-4090", "--set", "strategy.method=lora"]),
    "qlora": ("chat.jsonl", "chat", ["--gpu", "RTX-4090", "--set", "strategy.method=qlora",
                                     "--set", "strategy.double_quant=false"]),
    "zero3": ("text.jsonl", "continued-pretraining", ["--gpu", "A100-80GB", "--gpus", "4", "--set",
                                                      "strategy.method=full", "--set", "strategy.distribution=zero3"]),
    "dpo": ("preference.jsonl", "preference", ["--gpu", "RTX-4090"]),
}


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop-plans")
    out = {}
    for name, (data, task, extra) in PLANS.items():
        folder = root / name
        assert main(["plan", "--model", MODEL, "--data", str(DATA / data), "--task", task, "--out", str(folder),
                     *extra]) == 0
        for to in ("axolotl", "llama-factory"):
            assert main(["export", str(folder), "--to", to]) == 0
        out[name] = folder
    return out


def test_every_plan_decision_has_a_row_or_a_stated_place(plans):
    for to, mod in MODULES.items():
        covered = {k for row in mod.ROWS for k in row.plan} | set(outside_rows(to))
        for folder in plans.values():
            missing = {d.field for d in load_plan(folder).decisions} - covered
            assert not missing, f"{to}: decisions without a row: {missing}"


def _norm(key, value):
    if key == "task" and value == "chat":
        return "sft"  # both tools train ftplan's sft and chat with one SFT trainer
    return list(value) if isinstance(value, tuple) else value


def test_every_row_round_trips_plan_to_config_to_plan(plans):
    for name, folder in plans.items():
        plan = load_plan(folder)
        flat = flatten(plan_to_dict(plan))
        for to, mod in MODULES.items():
            for row in mod.ROWS:
                wctx = Ctx(values={**flat, "__plan__": plan}, gpus=world_size(plan))
                written = {k: v for k, v in row.write({k: flat[k] for k in row.plan if k in flat}, wctx).items()
                           if v is not None}
                if "datasets" in row.tool:  # the task of an SFT-trainer plan is carried by its dataset type
                    written.update(mod.dataset_config(plan, data_layout(plan), folder)[0])
                rctx = Ctx(values=dict(flat), gpus=world_size(plan), bf16_ok=plan.hardware.bf16)
                back = row.read(written, rctx)
                for key, value in back.items():
                    if key not in row.plan or (key == "data.val_split" and flat.get("data.val_rows")):
                        continue
                    same = _norm(key, value) == _norm(key, flat.get(key))
                    # a row that cannot carry a value says so in a note of the export (the tool runs differently)
                    assert same or wctx.notes, f"{name} -> {to}: {row.tool} read back {key}={value!r}, " \
                                               f"plan has {flat.get(key)!r}"


def test_export_writes_both_formats_with_dataset_mapping(plans):
    folder = plans["qlora"]
    ax = yaml.safe_load((folder / "axolotl.yaml").read_text())
    assert ax["adapter"] == "qlora" and ax["load_in_4bit"] is True
    assert ax["bnb_config_kwargs"] == {"bnb_4bit_use_double_quant": False}
    assert ax["plugins"] == ["axolotl.integrations.liger.LigerPlugin"] and ax["liger_fused_linear_cross_entropy"]
    # axolotl 0.19 auto-enables its fused LoRA kernels when unset (the interop check saw it): off, as planned
    assert all(ax[k] is False for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel"))
    from planner.interop import read_config

    assert "lora_*_kernel" not in read_config(folder / "axolotl.yaml").unsupported_keys
    del ax["lora_mlp_kernel"], ax["lora_qkv_kernel"], ax["lora_o_kernel"], ax["lora_embedding_kernel"]
    unset = folder.parent / "unset-kernels.yaml"
    unset.write_text(yaml.safe_dump(ax))
    assert "auto-enables" in read_config(unset).unsupported_keys["lora_*_kernel"]
    (entry,) = ax["datasets"]
    assert entry["type"] == "chat_template" and entry["field_messages"] == "messages"
    assert entry["path"] == str(DATA / "chat.jsonl")
    header = (folder / "axolotl.yaml").read_text().split("\n\n")[0]
    plan = load_plan(folder)
    assert f"estimate: {plan.estimate.total / 1024**3:.1f} GiB per GPU ({plan.estimate.verdict})" in header
    assert "launch: accelerate launch --num_processes 1 -m axolotl.cli.train" in header
    lf = yaml.safe_load((folder / "llama_factory.yaml").read_text())
    assert (lf["finetuning_type"], lf["quantization_bit"], lf["double_quantization"]) == ("lora", 4, False)
    assert lf["enable_liger_kernel"] is True and lf["do_train"] is True
    info = json.loads((folder / "dataset_info.json").read_text())
    assert lf["dataset"] in info and lf["dataset_dir"] == str(folder.resolve())
    assert info[lf["dataset"]]["formatting"] == "sharegpt" and info[lf["dataset"]]["columns"]["messages"] == "messages"
    # ZeRO-3: the DeepSpeed JSON is written beside the config, from the plan's own deepspeed settings
    z3 = yaml.safe_load((plans["zero3"] / "axolotl.yaml").read_text())
    ds = json.loads(Path(z3["deepspeed"]).read_text())
    assert ds["zero_optimization"]["stage"] == 3 and "adapter" not in z3
    pref = yaml.safe_load((plans["dpo"] / "axolotl.yaml").read_text())
    assert pref["rl"] == "dpo" and pref["dpo_use_liger_kernel"] is True
    assert pref["datasets"][0]["type"] == "chat_template.default"


def test_export_keeps_other_datasets_of_an_existing_dataset_info(plans, tmp_path, capsys):
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "mine.json"}}))
    code, out, err = cli(capsys, "export", str(plans["lora"]), "--to", "llama-factory",
                         "--out", str(tmp_path / "cfg.yaml"))
    assert code == 0, err
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert "mine" in info and len(info) == 2
    assert f"wrote {tmp_path / 'cfg.yaml'}" in out


@pytest.mark.parametrize("name", sorted(PLANS))
@pytest.mark.parametrize("to", ["axolotl", "llama-factory"])
def test_round_trip_estimate_of_exported_config(plans, capsys, name, to):
    """``estimate --config`` of an exported config = the plan's own estimate, unless the trainer runs the plan
    differently; then the header says what it needs instead, and that is what estimate --config answers."""
    folder = plans[name]
    plan = load_plan(folder)
    path = folder / f"{to.replace('-', '_')}.yaml"
    code, out, err = cli(capsys, "estimate", "--config", str(path), "--gpu", plan.hardware.gpu, "--gpus",
                         str(world_size(plan)), "--json")
    assert code == 0, err
    total = json.loads(out)["per_gpu_bytes"]["total"]
    header = path.read_text().split("\n\n")[0]
    differs = (to, name) in (("llama-factory", "qlora"), ("llama-factory", "dpo"))
    if not differs:
        assert total == plan.estimate.total
        assert "as planned" in header
    else:  # LLaMA-Factory: no fp32 upcast of QLoRA's frozen weights; full fp32 logits for DPO
        assert total != plan.estimate.total
        assert f"{total / 1024**3:.1f} GiB per GPU" in header and "note: LLaMA-Factory" in header


def test_export_refuses_what_the_trainer_cannot_run(tmp_path, capsys):
    folder = tmp_path / "prompt"
    assert main(["plan", "--model", MODEL, "--data", str(DATA / "alpaca.jsonl"), "--task", "sft", "--gpu",
                 "RTX-4090", "--set", "strategy.method=prompt", "--out", str(folder)]) == 0
    capsys.readouterr()
    code, _, err = cli(capsys, "export", str(folder), "--to", "axolotl")
    assert code == 2 and "axolotl has no prompt tuning" in err
    assert not (folder / "axolotl.yaml").exists()


# ----------------------------------------------------------------------------------------------------------
# plan --config: the config wins, REPORT.md reviews it
# ----------------------------------------------------------------------------------------------------------


def test_plan_config_pins_the_settings_and_reports_the_review(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "big.yml", {**{k: v for k, v in AXOLOTL_LORA.items()
                                               if k not in ("plugins", "liger_fused_linear_cross_entropy")},
                                            "micro_batch_size": 8, "sequence_len": 4096, "learning_rate": 2e-3,
                                            "gradient_checkpointing": False})
    out = tmp_path / "plan"
    code, stdout, err = cli(capsys, "plan", "--config", str(cfg), "--data", str(DATA / "alpaca.jsonl"), "--gpu",
                            "RTX-4090", "--out", str(out))
    assert code == 0, err
    plan = load_plan(out)
    assert (plan.training.micro_batch, plan.training.seq_len, plan.training.lr) == (8, 4096, 2e-3)
    assert (plan.strategy.method, plan.lora.r, plan.task, plan.model.name_or_path) == ("lora", 16, "sft", MODEL)
    report = (out / "REPORT.md").read_text()
    review = report.split("## Review of your config")[1].split("\n## ")[0]
    ci = read_config(cfg, bf16_ok=True)
    from planner.hardware import resolve_hardware
    from planner.model_spec import load_model_spec

    est = estimate_config(ci, load_model_spec(MODEL), resolve_hardware(gpu="RTX-4090"), tokens=1000)
    assert est.verdict == "exceeds" and est.max_micro_batch < 8
    need, free = est.memory.total / 1024**3, (est.memory.total + est.headroom_bytes) / 1024**3
    assert (f"as written for axolotl, micro-batch 8 at 4096 tokens needs {need:.1f} GiB per GPU: exceeds an "
            f"RTX-4090 ({free:.1f} GiB free) by {need - free:.1f} GiB") in review
    assert f"micro-batch {est.max_micro_batch} fits" in review
    assert "training.lr=0.002 is outside the usual lora range" in review
    assert "without the Liger plugin's liger_fused_linear_cross_entropy" in review
    assert "`lora_mlp_kernel` is not modelled" in review
    assert "`training.lr` 0.002: from `learning_rate: 0.002`; the rules would choose" in review
    decision = next(d for d in plan.decisions if d.field == "training.micro_batch")
    assert decision.source == "axolotl config big.yml" and "from `micro_batch_size: 8`" in decision.reason
    assert "## Warnings" not in report or "config:" not in report.split("## Warnings")[1].split("\n## ")[0]


def test_plan_config_user_set_wins_over_the_config(tmp_path, capsys):
    cfg = write_yaml(tmp_path / "qlora.yaml", LLAMA_FACTORY_QLORA)
    out = tmp_path / "plan"
    code, _, err = cli(capsys, "plan", "--config", str(cfg), "--data", str(DATA / "alpaca.jsonl"), "--gpu",
                       "RTX-4090", "--set", "training.micro_batch=2", "--out", str(out))
    assert code == 0, err
    plan = load_plan(out)
    assert plan.strategy.method == "qlora" and plan.training.micro_batch == 2 and plan.training.grad_accum == 8
    assert next(d for d in plan.decisions if d.field == "training.micro_batch").source == "--set"
    # ftplan's plan keeps its own QLoRA upcast and fused loss: those are how LLaMA-Factory runs, not settings
    assert plan.strategy.qlora_upcast is True and plan.training.fused_loss is True


def test_plan_without_model_or_config_is_one_line(capsys, tmp_path):
    code, _, err = cli(capsys, "plan", "--data", str(DATA / "alpaca.jsonl"), "--task", "sft", "--out",
                       str(tmp_path / "p"))
    assert code == 2 and "--model and --task are required (or --config FILE)" in err


# ----------------------------------------------------------------------------------------------------------
# published configs (optional: ../shared/peer-data/configs)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (PEER / "manifest.json").is_file(), reason="no ../shared/peer-data/configs here")
def test_published_configs_estimate_or_refuse_in_one_line(tmp_path, monkeypatch):
    """Every published config answers (an estimate), or, for the exotic ones the manifest marks
    estimate-or-refuse, refuses in one FtplanError naming the key."""
    from planner.errors import FtplanError
    from planner.hardware import resolve_hardware
    from planner.model_spec import load_model_spec

    hub = json.loads((PEER / "hub_configs.json").read_text())
    for entry in json.loads((PEER / "manifest.json").read_text()):
        tool_dir = PEER / ("axolotl" if entry["tool"] == "axolotl" else "llamafactory")
        monkeypatch.chdir(tool_dir)  # the tools resolve relative paths from their repository root
        path = tool_dir / entry["path"]
        acc = tool_dir / "examples/accelerate/fsdp_config.yaml" if "fsdp_qlora" in entry["path"] else None
        try:
            hw = resolve_hardware(gpu="H100-SXM", gpus=entry["gpus"])
            ci = read_config(path, gpus=entry["gpus"], bf16_ok=True, accelerate_config=acc)
            model = ci.model
            if model in hub:
                folder = tmp_path / model.replace("/", "__")
                folder.mkdir(exist_ok=True)
                (folder / "config.json").write_text(json.dumps(hub[model]))
                model = str(folder)
            est = estimate_config(ci, load_model_spec(model, offline=True), hw, tokens=1_000_000, search=False)
        except FtplanError as exc:
            assert entry["expect"] == "estimate-or-refuse", f"{entry['path']}: {exc}"
            assert "\n" not in str(exc)
            continue
        assert est.memory.total > 0, entry["path"]
