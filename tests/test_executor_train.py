"""End-to-end training of tiny plans: every task once, every method once, plus key pairs.

Each run is a real ``run_plan`` on a 2-layer 64-dim random model (a few optimizer steps on CPU);
the assertions check what the run wrote and that the saved artifacts load back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from executor_helpers import make_plan, plan_folder, tiny_model, write_jsonl

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models"))


def _run(tmp_path, model_dir, **kw):
    from executor.run import run_plan

    plan = make_plan(tmp_path, model=model_dir, **kw)
    folder = plan_folder(tmp_path, plan)
    return folder, run_plan(folder, log=lambda *_: None)


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "output" / "metrics.jsonl").read_text().splitlines()]


def test_sft_lora_end_to_end_with_merge_and_replay(tmp_path, model_dir):
    general = write_jsonl(
        tmp_path / "general.jsonl", [{"text": f"the cat sat on the mat number {i}"} for i in range(40)]
    )
    folder, s = _run(
        tmp_path,
        model_dir,
        method="lora",
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "merge_after": True},
        data={"general_path": str(general), "replay_ratio": 0.2},
        evaluation={"forgetting_check": True},
    )
    assert s.status == "completed" and s.global_step == 6
    d = s.data  # 48 rows minus exact duplicates, 1/8 held out; 20 % replay share = train * 0.2 / 0.8 rows
    assert d["train_rows"] + d["val_rows"] + d["duplicates_dropped"] == 48 and d["duplicates_dropped"] > 0
    assert d["val_rows"] == -(-(48 - d["duplicates_dropped"]) // 8)
    assert d["replay_rows"] == round(d["train_rows"] * 0.2 / 0.8)
    # Learning happened: held-out loss of the tuned model below the base model's (adapter disabled).
    assert s.tuned["loss"] < s.base["loss"]
    assert s.tuned["perplexity"] == pytest.approx(torch.exp(torch.tensor(s.tuned["loss"])).item(), rel=1e-4)
    assert "exact_match" in s.tuned and "exact_match" in s.base and "general_loss" in s.tuned
    out = folder / "output"
    rows = _metrics(folder)
    train_rows = [r for r in rows if "loss" in r]
    assert {"loss", "learning_rate", "grad_norm", "tokens_per_second", "peak_rss_gb"} <= set(train_rows[-1])
    assert any("eval_perplexity" in r for r in rows)
    assert list((out / "tensorboard").rglob("events.out.tfevents*"))
    assert (out / "loss_curve.png").stat().st_size > 1000
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["tokens_per_second"] > 0
    assert "## Run results" in (folder / "REPORT.md").read_text()
    # Adapter in PEFT format + merged safetensors: both load and agree.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert (out / "merged" / "model.safetensors").is_file() and (out / "merged" / "tokenizer.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    adapted = PeftModel.from_pretrained(base, out / "final").eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(adapted(ids).logits, merged(ids).logits, atol=1e-4)


def test_chat_full_fp32_packing_reloads(tmp_path, model_dir):
    folder, s = _run(
        tmp_path, model_dir, task="chat", fmt="chat", method="full", training={"packing": True, "lr": 1e-3}
    )
    assert s.status == "completed" and s.global_step == 6
    assert s.trainable_params == s.total_params
    assert s.base and s.base["loss"] > s.tuned["loss"]  # base evaluated before training
    from transformers import AutoModelForCausalLM

    final = folder / "output" / "final"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.dtype == torch.float32


def test_continued_pretraining_dora(tmp_path, model_dir):
    folder, s = _run(
        tmp_path,
        model_dir,
        task="continued-pretraining",
        fmt="text",
        method="dora",
        training={"packing": True},
        evaluation={"metric": "perplexity"},
    )
    assert s.status == "completed"
    cfg = json.loads((folder / "output" / "final" / "adapter_config.json").read_text())
    assert cfg["use_dora"] is True
    assert s.tuned["loss"] < s.base["loss"]


def test_classification_generate_ia3(tmp_path, model_dir):
    folder, s = _run(
        tmp_path,
        model_dir,
        task="classification",
        fmt="classification",
        method="ia3",
        evaluation={"metric": "accuracy", "eval_steps": 3},
    )
    assert s.status == "completed"
    assert "accuracy" in s.tuned and 0.0 <= s.tuned["accuracy"] <= 1.0
    cfg = json.loads((folder / "output" / "final" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "IA3"


@pytest.mark.slow
def test_classification_head_lora(tmp_path, model_dir):
    folder, s = _run(
        tmp_path,
        model_dir,
        task="classification",
        fmt="classification",
        method="lora",
        training={"classification_mode": "head", "max_steps": 8},
        evaluation={"metric": "accuracy"},
    )
    assert s.status == "completed"
    assert s.tuned["accuracy"] is not None and 0.0 <= s.tuned["accuracy"] <= 1.0
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    model = PeftModel.from_pretrained(base, folder / "output" / "final")
    assert model(torch.tensor([[5, 6, 7]])).logits.shape == (1, 2)


@pytest.mark.slow
def test_preference_dpo_lora(tmp_path, model_dir):
    _, s = _run(
        tmp_path,
        model_dir,
        task="preference",
        fmt="preference",
        method="lora",
        evaluation={"metric": "accuracy"},
    )
    assert s.status == "completed" and s.global_step == 6
    assert s.tuned["loss"] is not None and "rewards/accuracies" in s.tuned
    assert s.tokens_per_second > 0


def test_qlora_paged_8bit_bf16(tmp_path, model_dir):
    folder, s = _run(
        tmp_path,
        model_dir,
        method="qlora",
        strategy={"method": "qlora", "precision": "bf16", "optimizer": "paged_adamw_8bit"},
    )
    assert s.status == "completed"
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir), folder / "output" / "final"
    )
    assert any("lora_A" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_prompt_and_prefix_tuning(tmp_path, model_dir, method):
    folder, s = _run(tmp_path, model_dir, method=method, strategy={"method": method, "num_virtual_tokens": 4})
    assert s.status == "completed"
    cfg = json.loads((folder / "output" / "final" / "adapter_config.json").read_text())
    assert cfg["num_virtual_tokens"] == 4
    assert s.base["loss"] != s.tuned["loss"]  # base = virtual tokens switched off (PeftModel.disable_adapter)
    assert s.trainable_params < s.total_params / 10


def test_full_pure_bf16_adamw_8bit_layerwise_decay(tmp_path, model_dir):
    folder, s = _run(
        tmp_path,
        model_dir,
        method="full",
        strategy={"method": "full", "precision": "bf16", "mixed_precision": False, "optimizer": "adamw_8bit"},
        training={"layerwise_lr_decay": 0.5, "lr": 1e-3},
    )
    assert s.status == "completed"
    from safetensors import safe_open

    with safe_open(str(folder / "output" / "final" / "model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16


def test_full_mixed_precision_keeps_fp32_master_weights(tmp_path, model_dir):
    folder, s = _run(
        tmp_path,
        model_dir,
        method="full",
        training={"lr": 1e-3},
        strategy={"method": "full", "precision": "bf16", "mixed_precision": True, "optimizer": "sgd"},
    )
    assert s.status == "completed" and s.tuned["loss"] < s.base["loss"]
    from safetensors import safe_open

    with safe_open(str(folder / "output" / "final" / "model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float32


def test_early_stopping_stops_and_keeps_the_best_model(tmp_path, model_dir):
    # SGD at a high constant lr makes validation loss go up again within a few evaluations.
    folder, s = _run(
        tmp_path,
        model_dir,
        method="full",
        strategy={"method": "full", "optimizer": "sgd"},
        training={"max_steps": 20, "lr": 0.5},
        evaluation={"eval_steps": 2, "early_stopping_patience": 1, "metric": "loss"},
        checkpointing={"save_steps": 2, "save_total_limit": 2},
    )
    # eval_loss records: base model (step 0), each in-training evaluation, then the final tuned one
    evals = [r["eval_loss"] for r in _metrics(folder) if "eval_loss" in r]
    assert s.status == "completed" and s.global_step < 20  # stopped early
    assert evals[-2] > min(evals[:-2])  # the last in-training evaluation did not improve (patience 1)
    assert s.tuned["loss"] == pytest.approx(min(evals), abs=1e-5)  # best checkpoint loaded at the end
