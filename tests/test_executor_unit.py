"""Fast executor units: data validation, masks, metrics, LR groups, checkpoints, fallbacks, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from executor_helpers import Fallback, make_plan, plan_folder, tiny_model, write_jsonl

from planner.errors import FtplanError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


# --- metrics ----------------------------------------------------------------------------------------


def test_rouge_l_and_exact_match():
    from executor.evaluate import exact_match, rouge_l

    # LCS("the cat sat", "the cat was sat") = 3 tokens: P = 3/3, R = 3/4, F = 2PR/(P+R) = 6/7
    assert rouge_l("the cat sat", "the cat was sat") == pytest.approx(6 / 7)
    assert rouge_l("a b", "c d") == 0.0 and rouge_l("Same  Text", "same text") == 1.0
    assert exact_match(" 42 ", "42") == 1.0 and exact_match("41", "42") == 0.0


# --- data -------------------------------------------------------------------------------------------


def test_assistant_mask_covers_every_assistant_turn_and_end_of_turn(tokenizer):
    from planner.dataset.chat import template_of_tokenizer
    from planner.dataset.encode import encode_conversation

    msgs = [
        {"role": "user", "content": "2+3"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "55"},
    ]
    enc = encode_conversation(template_of_tokenizer(tokenizer), tokenizer.backend_tokenizer, msgs)
    trained = tokenizer.decode([t for t, m in zip(enc.input_ids, enc.completion_mask) if m])
    assert trained == "5" + tokenizer.eos_token + "55" + tokenizer.eos_token
    # and the untrained part is exactly the prompts and role headers
    assert "2+3" in tokenizer.decode([t for t, m in zip(enc.input_ids, enc.completion_mask) if not m])


def test_packed_examples_attend_only_within_themselves(tmp_path, model_dir):
    """Padding-free packing (TRL bfd) relies on transformers isolating sequences by position_ids when
    there is no attention mask and no cache: which build_model guarantees by use_cache=False."""
    import torch

    from executor.model import build_model
    from executor.tokenizer import build_tokenizer

    plan = make_plan(tmp_path, model=model_dir, method="full")
    model = build_model(plan, build_tokenizer(plan)).eval()
    a, b = torch.tensor([[5, 6, 7, 8]]), torch.tensor([[9, 10, 11]])
    with torch.no_grad():
        packed = model(
            input_ids=torch.cat([a, b], 1), position_ids=torch.tensor([[0, 1, 2, 3, 0, 1, 2]])
        ).logits
        alone = model(input_ids=b).logits
    assert torch.allclose(packed[:, 4:], alone, atol=1e-5)


def test_load_rows_drops_duplicates_and_invalid_rows(tmp_path, model_dir):
    from executor.data import load_rows

    rows = [{"instruction": "1+1", "output": "2"}] * 3 + [
        {"instruction": "2+2", "output": "4"},
        {"instruction": "no output"},
        "{broken json",
    ]
    plan = make_plan(tmp_path, model=model_dir)
    plan.data.path = str(write_jsonl(tmp_path / "d.jsonl", rows))
    kept, stats = load_rows(plan)
    assert len(kept) == 2
    assert stats == {"rows_read": 6, "invalid_dropped": 2, "duplicates_dropped": 2}


def test_rows_not_matching_the_format_name_the_line(tmp_path, model_dir):
    from executor.data import load_rows

    plan = make_plan(tmp_path, model=model_dir)
    plan.data.path = str(write_jsonl(tmp_path / "d.jsonl", [{"question_text": "x"}] * 4))
    with pytest.raises(FtplanError, match=r"d.jsonl line 1: missing field 'instruction'"):
        load_rows(plan)
    plan.task = "continued-pretraining"
    with pytest.raises(FtplanError, match="cannot train task 'continued-pretraining'"):
        load_rows(plan)


def test_split_is_seeded_and_sized(tmp_path, model_dir):
    from executor.data import split_rows

    plan = make_plan(tmp_path, model=model_dir)
    plan.data.val_split = 0.25
    train, val = split_rows(list(range(10)), plan)
    assert len(val) == 3 and sorted(train + val) == list(range(10))
    assert split_rows(list(range(10)), plan) == (train, val)
    plan.data.val_rows = 4
    assert len(split_rows(list(range(10)), plan)[1]) == 4


# --- optimizer --------------------------------------------------------------------------------------


def test_layerwise_lr_decay_groups(model_dir):
    from transformers import AutoModelForCausalLM

    from executor.trainer import layerwise_param_groups

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    groups = layerwise_param_groups(
        model,
        lr=1.0,
        decay=0.5,
        weight_decay=0.1,
        decay_names={n for n, _ in model.named_parameters() if "norm" not in n},
    )
    by_name = {id(p): g for g in groups for p in g["params"]}
    params = dict(model.named_parameters())
    def lr(n):
        return by_name[id(params[n])]["lr"]

    assert lr("model.layers.1.self_attn.q_proj.weight") == 1.0  # top block: full lr
    assert lr("model.layers.0.self_attn.q_proj.weight") == 0.5
    assert lr("model.embed_tokens.weight") == 0.25  # below block 0
    assert by_name[id(params["model.layers.0.input_layernorm.weight"])]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(params)


def test_optimizer_names_follow_the_plan(tmp_path, model_dir):
    from executor.trainer import optimizer_name

    plan = make_plan(tmp_path, model=model_dir)
    expected = {
        "adamw": "adamw_torch",
        "adamw_8bit": "adamw_bnb_8bit",
        "paged_adamw_8bit": "paged_adamw_8bit",
        "sgd": "sgd",
        "adafactor": "adafactor",
    }
    for name, hf in expected.items():
        plan.strategy.optimizer = name
        assert optimizer_name(plan) == hf  # CPU: no fused CUDA AdamW


def test_training_arguments_come_from_the_plan(tmp_path, model_dir):
    from executor.paths import RunPaths
    from executor.trainer import _common_args, build_callbacks, build_training_args

    plan = make_plan(
        tmp_path,
        model=model_dir,
        training={
            "micro_batch": 3,
            "grad_accum": 5,
            "lr": 3e-4,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.1,
            "weight_decay": 0.01,
            "max_grad_norm": 0.5,
            "seed": 7,
            "max_steps": 11,
            "packing": True,
        },
        strategy={
            "method": "lora",
            "precision": "bf16",
            "optimizer": "adamw",
            "gradient_checkpointing": True,
        },
        evaluation={"eval_steps": 4, "early_stopping_patience": 2},
        checkpointing={"save_steps": 8},
    )
    paths = RunPaths.of(tmp_path / "p", plan.output_dir)
    args = build_training_args(plan, paths, has_val=True)
    got = (
        args.per_device_train_batch_size,
        args.gradient_accumulation_steps,
        args.learning_rate,
        args.lr_scheduler_type.value,
        args.warmup_steps,
        args.weight_decay,
        args.max_grad_norm,
        args.seed,
        args.max_steps,
        args.bf16,
        args.gradient_checkpointing,
        args.eval_steps,
        args.save_steps,
        args.packing,
        args.max_length,
        args.optim.value,
    )
    assert got == (3, 5, 3e-4, "cosine", 0.1, 0.01, 0.5, 7, 11, True, True, 4, 8, True, 64, "adamw_torch")
    # early stopping planned: best model tracked on eval loss; save steps are a multiple of eval steps
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert any(type(cb).__name__ == "EarlyStoppingCallback" for cb in build_callbacks(plan, paths, True))
    assert not args.logging_nan_inf_filter and 8 % args.logging_steps == 0
    # ZeRO plans only: the DeepSpeed config rendered from the plan itself (not the file, which may be stale)
    paths.plan_dir.mkdir(parents=True)
    (paths.plan_dir / "deepspeed.json").write_text("{}")
    plan.strategy.distribution = "zero2"
    ds = _common_args(plan, paths, True)["deepspeed"]
    assert ds["train_micro_batch_size_per_gpu"] == plan.training.micro_batch
    assert ds["gradient_accumulation_steps"] == plan.training.grad_accum and ds["zero_optimization"]["stage"] == 2
    plan.strategy.distribution = "single"
    assert _common_args(plan, paths, True)["deepspeed"] is None


# --- checkpoints ------------------------------------------------------------------------------------


def _fake_ckpt(folder: Path, step: int, complete: bool = True) -> Path:
    from executor.checkpoints import mark_complete

    c = folder / f"checkpoint-{step}"
    c.mkdir(parents=True)
    (c / "model.safetensors").write_bytes(b"x" * 100)
    (c / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        mark_complete(c)
    return c


def test_resume_skips_incomplete_and_rejects_corrupted(tmp_path):
    from executor.checkpoints import resume_checkpoint, rotate

    _fake_ckpt(tmp_path, 2)
    c4 = _fake_ckpt(tmp_path, 4)
    _fake_ckpt(tmp_path, 6, complete=False)  # killed while writing
    assert resume_checkpoint(tmp_path, log=lambda *_: None) == c4
    assert not (tmp_path / "checkpoint-6").exists()
    (c4 / "model.safetensors").write_bytes(b"x" * 10)
    said = []
    assert resume_checkpoint(tmp_path, log=said.append).name == "checkpoint-2"  # the previous complete one
    assert "checkpoint-4: file 'model.safetensors' is 10 bytes, 100 when saved" in said[0]
    assert (tmp_path / "checkpoint-4.damaged" / "model.safetensors").is_file()  # set aside, not deleted
    c4 = _fake_ckpt(tmp_path, 4)
    _fake_ckpt(tmp_path, 8)
    removed = rotate(tmp_path, keep=2, protect=str(tmp_path / "checkpoint-2"))
    assert [p.name for p in removed] == ["checkpoint-4"]  # best (2) protected, newest kept


# --- OOM fallbacks (pure logic: the attempt raises a simulated CUDA OOM) ------------------------------


def test_fallbacks_apply_in_order_then_give_up(tmp_path, model_dir):
    import torch

    from executor.fallback import EARLY_OOM_STEPS, OutOfMemoryAtStep, train_with_fallbacks
    from executor.paths import RunPaths
    from planner.plan import load_plan

    plan = make_plan(
        tmp_path,
        model=model_dir,
        fallbacks=[
            Fallback(set={"training.micro_batch": 2, "training.grad_accum": 2}, reason="smaller micro-batch"),
            Fallback(set={"strategy.gradient_checkpointing": True}, reason="checkpointing"),
        ],
    )
    folder = plan_folder(tmp_path, plan)
    paths = RunPaths.of(folder, plan.output_dir)
    seen = []

    def attempt(p):
        seen.append((p.training.micro_batch, p.strategy.gradient_checkpointing))
        if len(seen) < 3:
            raise OutOfMemoryAtStep(0, torch.OutOfMemoryError("CUDA out of memory (simulated)"))
        return "ok"

    result, final, applied = train_with_fallbacks(plan, paths, attempt, log=lambda *_: None)
    assert result == "ok" and seen == [(4, False), (2, False), (2, True)]
    # restated from the plan's actual values (micro-batch 4 x 1 at the OOM)
    assert [a.reason for a in applied] == ["halve the micro-batch to 2, accumulate 2 (from 4 x 1)", "checkpointing"]
    on_disk = load_plan(folder)
    assert (
        on_disk.training.micro_batch == 2
        and on_disk.strategy.gradient_checkpointing
        and not on_disk.fallbacks
    )
    # the estimate follows the settings that now run: the same converter and estimator as the rules
    from planner.convert import setup_from_plan
    from planner.memory import estimate_memory
    from planner.model_spec import load_model_spec

    now = estimate_memory(load_model_spec(str(model_dir)), setup_from_plan(on_disk))
    assert on_disk.estimate.activations == now.activations and on_disk.estimate.total == now.total
    first = estimate_memory(load_model_spec(str(model_dir)), setup_from_plan(plan))
    assert now.activations < first.activations  # half the micro-batch, checkpointed

    def always(p):
        raise OutOfMemoryAtStep(0, torch.OutOfMemoryError("oom"))

    with pytest.raises(FtplanError, match="no fallback left"):
        train_with_fallbacks(final, paths, always, log=lambda *_: None)

    def late(p):
        raise OutOfMemoryAtStep(EARLY_OOM_STEPS, torch.OutOfMemoryError("oom"))

    with pytest.raises(FtplanError, match="past the first steps"):
        train_with_fallbacks(plan, paths, late, log=lambda *_: None)


# --- bad input: exit code 2, one line, nothing lost ---------------------------------------------------


@pytest.mark.parametrize("case", ["missing_model", "missing_data", "wrong_rows", "wrong_task", "pure_fp16"])
def test_bad_input_exits_2_with_one_line(tmp_path, model_dir, capsys, case):
    from ftplan.cli import main

    plan = make_plan(tmp_path, model=model_dir)
    if case == "missing_model":
        plan.model.name_or_path = str(tmp_path / "no-such-model")
    elif case == "missing_data":
        plan.data.path = str(tmp_path / "gone.jsonl")
    elif case == "wrong_rows":
        plan.data.path = str(write_jsonl(tmp_path / "bad.jsonl", [{"foo": i} for i in range(5)]))
    elif case == "wrong_task":
        plan.task = "preference"
    else:
        plan.strategy.method, plan.strategy.precision, plan.lora = "full", "fp16", None
    folder = plan_folder(tmp_path, plan)
    plan_text = (folder / "plan.yaml").read_text()
    assert main(["run", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ftplan: error:") and len(err.splitlines()) == 1
    expected = {
        "missing_model": "no such model folder",
        "missing_data": "no such file",
        "wrong_rows": "bad.jsonl line 1",
        "wrong_task": "cannot train task 'preference'",
        "pure_fp16": "set strategy.mixed_precision: true",
    }[case]
    assert expected in err
    assert (folder / "plan.yaml").read_text() == plan_text


def test_real_entry_points_exit_2(tmp_path, model_dir):
    plan = make_plan(tmp_path, model=model_dir)
    plan.data.path = str(tmp_path / "gone.jsonl")
    folder = plan_folder(tmp_path, plan)
    for cmd in (["ftplan", "run", str(folder)], [sys.executable, "-m", "executor", "run", str(folder)]):
        exe = cmd if cmd[0] != "ftplan" else [str(Path(sys.executable).parent / "ftplan"), *cmd[1:]]
        proc = subprocess.run(exe, check=False, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("ftplan: error: data.path")


# ----------------------------------------------------------------------------------------------------
# estimate vs measured: like for like
# ----------------------------------------------------------------------------------------------------


def _summary(**kw):
    from executor.report import RunSummary

    base = {"status": "completed", "plan_dir": "p", "output_dir": "o", "task": "sft", "method": "full",
            "device": "cpu"}
    return RunSummary(**{**base, **kw})


def test_training_time_comparison_leaves_out_in_training_evaluation():
    from types import SimpleNamespace

    from executor.report import compare_with_estimate
    from planner.plan import EstimateSection

    plan = SimpleNamespace(estimate=EstimateSection(total=600 * 2**20, time_hours=10 / 3600,
                                                    tokens_per_second=2000.0, steps=5))
    s = _summary(train_seconds=14.0, eval_seconds=4.0, tokens_per_second=1900.0, global_step=5,
                 peak_memory_gb={"peak_rss_gb": 0.6})
    rows = {c.quantity: c for c in compare_with_estimate(plan, s)}
    assert rows["training time"].measured == 10.0  # 14 s of train() minus 4 s of evaluation
    assert rows["peak process memory (RSS)"].estimate == pytest.approx(600 / 1024)


def test_metrics_callback_counts_evaluation_only_inside_training(tmp_path):
    from types import SimpleNamespace

    from executor.callbacks import MetricsCallback

    cb = MetricsCallback(tmp_path / "m.jsonl")
    state = SimpleNamespace(num_input_tokens_seen=0, global_step=0, epoch=0, is_world_process_zero=True)
    cb.on_log(None, state, None, logs={"eval_loss": 2.0, "eval_runtime": 3.0})  # base evaluation: before train
    cb.on_train_begin(None, state, None)
    cb.on_log(None, state, None, logs={"eval_loss": 1.0, "eval_runtime": 1.5})
    cb.on_log(None, state, None, logs={"eval_loss": 0.9, "eval_runtime": 0.5})
    cb.on_train_end(None, state, None)
    cb.on_log(None, state, None, logs={"eval_loss": 0.9, "eval_runtime": 2.0})  # tuned evaluation: after
    assert cb.eval_seconds == 2.0


def test_report_says_what_the_cpu_comparison_compares(tmp_path):
    from executor.paths import RunPaths
    from executor.report import Comparison, report_section

    s = _summary(comparisons=[Comparison("peak process memory (RSS)", "GiB", 0.58, 0.62),
                              Comparison("training time", "s", 10.0, 11.0)])
    text = report_section(s, RunPaths.of(tmp_path, "output"))
    assert "peak RSS" in text and "peak allocated" in text
    assert "training steps only" in text
