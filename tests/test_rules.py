"""The rule engine against what a careful practitioner would do.

The scenario table runs the real estimator (planner.estimate) on catalog models and catalog GPUs with
data profiles built from numbers. Each row states the expectation from practice (the seeds, the QLoRA
paper, ZeRO), not what the code happens to output. The small rule functions are tested directly below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from planner.convert import setup_from_plan
from planner.errors import FtplanError
from planner.hardware import Hardware, resolve_hardware
from planner.request import PlanRequest
from planner.rules import (
    NoFitError,
    batch,
    data,
    evaluation,
    inputs,
    lora,
    make_plan,
    optim,
    precision,
    strategy,
)
from tests.rules_helpers import FIXED_VERSIONS, make_profile

CPU = Hardware(gpu=None, count=0, free_memory_bytes=0, detected=True, cpu_memory_bytes=64_000_000_000)
PEFT = {"lora", "qlora"}


@dataclass(frozen=True)
class Scenario:
    id: str
    model: str
    hardware: tuple | Hardware  # (catalog GPU, count) or a Hardware
    profile: dict  # make_profile kwargs
    task: str = "sft"
    goal: str = "balanced"
    method: set = field(default_factory=set)  # acceptable methods
    distribution: set = field(default_factory=set)  # acceptable distributions (empty: any)
    precision: str | None = None
    lr: tuple[float, float] | None = None  # inclusive range
    lora_r: int | None = None
    epochs: float | None = None
    metric: str | None = None
    packing: bool | None = None
    warn: tuple[str, ...] = ()  # substrings expected among the warnings
    extra: dict = field(default_factory=dict)  # dotted plan path -> expected value
    why: str = ""


SCENARIOS = [
    Scenario(
        "65b-one-48gb",
        "huggyllama/llama-65b",
        ("RTX-A6000", 1),
        dict(rows=10_000),
        method={"qlora"},
        precision="bf16",
        lr=(1e-4, 1e-4),
        why="QLoRA paper: 65B fine-tuned on a single 48 GB GPU; 1e-4 for 33B+",
    ),
    Scenario(
        "8b-24gb-5k",
        "meta-llama/Llama-3.1-8B",
        ("RTX-4090", 1),
        dict(rows=5_000),
        method=PEFT,
        lr=(1e-4, 3e-4),
        lora_r=16,
        epochs=3.0,
        why="8B full fine-tuning needs >100 GB; 5K examples is LoRA territory (seeds/001)",
    ),
    Scenario(
        "0.5b-80gb-50k",
        "Qwen/Qwen2.5-0.5B",
        ("A100-80GB", 1),
        dict(rows=50_000),
        method={"full"},
        precision="bf16",
        lr=(1e-5, 5e-5),
        epochs=2.0,
        extra={"strategy.mixed_precision": True},
        why="small model, 10K+ examples, fits easily: full fine-tuning (seeds/001)",
    ),
    Scenario(
        "70b-8x80gb-200k",
        "meta-llama/Llama-3.1-70B",
        ("H100-SXM", 8),
        dict(rows=200_000),
        distribution={"zero3"},
        epochs=1.0,
        why="70B does not fit one 80 GB GPU: shard with ZeRO-3; one epoch",
    ),
    Scenario(
        "70b-8x80gb-quality",
        "meta-llama/Llama-3.1-70B",
        ("H100-SXM", 8),
        dict(rows=200_000),
        goal="quality",
        method={"full"},
        distribution={"zero3"},
        lr=(1e-5, 1e-5),
        extra={"strategy.offload_optimizer": True},
        why="full 70B needs 16 B/param = 1.1 TB: ZeRO-3 with CPU offload on 8x80 GB",
    ),
    Scenario(
        "7b-t4-no-bf16",
        "Qwen/Qwen2.5-7B",
        ("T4", 1),
        dict(rows=3_000),
        method={"qlora"},
        precision="fp16",
        why="T4 (Turing) has no bf16: fp16 with loss scaling; 16 GB only fits 4-bit 7B",
    ),
    Scenario(
        "0.5b-v100-fp16-full",
        "Qwen/Qwen2.5-0.5B",
        ("V100-32GB", 1),
        dict(rows=20_000),
        method={"full"},
        precision="fp16",
        extra={"strategy.mixed_precision": True},
        why="Volta: fp16 mixed precision",
    ),
    Scenario(
        "mistral-chat-3k",
        "mistralai/Mistral-7B-v0.3",
        ("A100-80GB", 1),
        dict(rows=3_000, fmt="chat"),
        task="chat",
        method={"lora"},
        lr=(2e-4, 2e-4),
        lora_r=16,
        metric="rouge_l",
        extra={
            "lora.alpha": 32,
            "training.completion_only_loss": True,
            "strategy.gradient_checkpointing": False,
        },
        why="medium data, LoRA fits an 80 GB GPU without checkpointing; alpha = 2r",
    ),
    Scenario(
        "tiny-data",
        "meta-llama/Llama-3.1-8B",
        ("A100-80GB", 1),
        dict(rows=60, response_mean=40),
        method={"lora"},
        lora_r=8,
        epochs=5.0,
        warn=("tiny dataset",),
        extra={"evaluation.early_stopping_patience": 3},
        why="< 100 examples: small rank, more epochs with early stopping, and a warning",
    ),
    Scenario(
        "continued-pretraining",
        "Qwen/Qwen2.5-1.5B",
        ("H100-SXM", 1),
        dict(rows=40_000, fmt="text", mean=900, response_mean=900),
        task="continued-pretraining",
        method={"full"},
        epochs=1.0,
        metric="perplexity",
        packing=True,
        extra={"training.completion_only_loss": False, "training.seq_len": 2048},
        why="a 36M-token domain corpus on a GPU that fits full: full continued pretraining, perplexity",
    ),
    Scenario(
        "classification-imbalanced",
        "Qwen/Qwen2.5-1.5B",
        ("L4", 1),
        dict(rows=4_000, fmt="classification", mean=80, response_mean=2, labels={"pos": 3_800, "neg": 200}),
        task="classification",
        method=PEFT,
        metric="accuracy",
        packing=False,
        warn=("class imbalance",),
        why="classification: accuracy; 19:1 labels deserve a warning",
    ),
    Scenario(
        "dpo-preference",
        "meta-llama/Llama-3.1-8B",
        ("H100-SXM", 1),
        dict(rows=20_000, fmt="preference", mean=600),
        task="preference",
        method={"lora"},
        lr=(1e-7, 1e-5),
        epochs=1.0,
        packing=False,
        why="DPO with LoRA (the frozen base is the reference), small lr, one epoch",
    ),
    Scenario(
        "goal-cost",
        "Qwen/Qwen2.5-0.5B",
        ("A100-80GB", 1),
        dict(rows=50_000),
        goal="cost",
        method={"lora"},
        epochs=1.0,
        why="goal=cost: LoRA first and one fewer epoch",
    ),
    Scenario(
        "gemma2-eager",
        "google/gemma-2-9b",
        ("A100-80GB", 1),
        dict(rows=5_000),
        method={"lora"},
        extra={"strategy.attn_implementation": "eager"},
        why="Gemma-2 soft-caps attention: eager",
    ),
    Scenario(
        "heavy-truncation",
        "meta-llama/Llama-2-7b-hf",
        ("A100-80GB", 1),
        dict(rows=5_000, mean=2_500, p99=9_000, max_len=20_000),
        method=PEFT,
        warn=("heavy truncation",),
        extra={"training.seq_len": 4096},
        why="p99 beyond the 4096-token context: capped, with a warning",
    ),
    Scenario(
        "72b-4x80gb",
        "Qwen/Qwen2.5-72B",
        ("A100-80GB", 4),
        dict(rows=30_000),
        method=PEFT,
        distribution={"zero3", "fsdp", "ddp"},
        lr=(1e-4, 1e-4),
        why="72B full needs >1 TB; LoRA with the base sharded (or 4-bit) over 4 GPUs",
    ),
    Scenario(
        "405b-8xh100",
        "meta-llama/Llama-3.1-405B",
        ("H100-SXM", 8),
        dict(rows=10_000),
        method={"qlora"},
        distribution={"fsdp", "ddp"},
        why="405B in bf16 is 810 GB > 8x80 GB: only 4-bit fits (FSDP-QLoRA)",
    ),
    Scenario(
        "cpu-tiny-model",
        "HuggingFaceTB/SmolLM2-135M",
        CPU,
        dict(rows=300, mean=100),
        precision="fp32",
        distribution={"single"},
        warn=("no GPU",),
        why="no GPU: a 135M model on a few hundred rows trains on CPU",
    ),
]


def _get(plan, path):
    obj = plan
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.fixture(scope="module")
def results():
    cache = {}

    def run(sc: Scenario):
        if sc.id not in cache:
            hw = resolve_hardware(*sc.hardware) if isinstance(sc.hardware, tuple) else sc.hardware
            req = PlanRequest(model=sc.model, data="train.jsonl", task=sc.task, goal=sc.goal)
            cache[sc.id] = make_plan(
                req, hardware=hw, profile=make_profile(**sc.profile), versions=FIXED_VERSIONS
            )
        return cache[sc.id]

    return run


def test_scenario_table_is_large_enough():
    assert len(SCENARIOS) >= 15
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_scenario(sc: Scenario, results):
    plan = results(sc).plan
    where = f"{sc.id} ({sc.why})"
    if sc.method:
        assert plan.strategy.method in sc.method, where
    if sc.distribution:
        assert plan.strategy.distribution in sc.distribution, where
    if sc.precision:
        assert plan.strategy.precision == sc.precision, where
    if sc.lr:
        assert sc.lr[0] <= plan.training.lr <= sc.lr[1], where
    if sc.lora_r is not None:
        assert plan.lora is not None and plan.lora.r == sc.lora_r, where
        assert plan.lora.alpha == 2 * sc.lora_r, where
    if sc.epochs is not None:
        assert plan.training.epochs == sc.epochs, where
    if sc.metric:
        assert plan.evaluation.metric == sc.metric, where
    if sc.packing is not None:
        assert plan.training.packing is sc.packing, where
    for w in sc.warn:
        assert any(w in x for x in plan.warnings), (where, plan.warnings)
    for path, value in sc.extra.items():
        assert _get(plan, path) == value, (where, path)
    # Invariants of every plan a practitioner would run:
    assert plan.estimate.verdict in ("fits", "cpu"), where
    assert plan.training.max_grad_norm == 1.0
    assert plan.checkpointing.save_steps % plan.evaluation.eval_steps == 0  # HF load_best_model_at_end
    assert plan.training.micro_batch >= 1 and plan.training.grad_accum >= 1
    decided = {d.field for d in plan.decisions}
    for key in (
        "strategy.method",
        "strategy.precision",
        "training.lr",
        "training.micro_batch",
        "training.seq_len",
        "evaluation.metric",
        "checkpointing.save_steps",
    ):
        assert key in decided, (where, key)
    assert all(d.reason for d in plan.decisions)


def test_full_is_not_chosen_when_it_does_not_fit(results):
    res = results(SCENARIOS[1])  # 8B on a 24 GB GPU
    full = [o for o in res.options if o.family == "full"]
    assert full and not any(o.fits for o in full)
    assert res.chosen.memory.total <= 0.9 * res.hardware.free_memory_bytes


def test_checkpoints_at_least_every_30_minutes(results):
    for sc in SCENARIOS:
        plan = results(sc).plan
        if plan.estimate.steps and plan.estimate.time_hours:
            minutes = plan.checkpointing.save_steps * plan.estimate.time_hours * 60 / plan.estimate.steps
            assert minutes <= 30.0 + 1e-6, sc.id


def test_alternatives_are_cheapest_and_fastest(results):
    res = results(SCENARIOS[0])
    cheap, fast = res.alternatives["cheapest"], res.alternatives["fastest"]
    assert cheap is not None and fast is not None
    assert cheap.cost_usd <= fast.cost_usd and fast.time_hours <= cheap.time_hours


def test_fallbacks_shrink_then_checkpoint_then_switch(results):
    plan = results(SCENARIOS[2]).plan  # 0.5B full: big micro-batch, no checkpointing
    sets = [f.set for f in plan.fallbacks]
    assert sets[0]["training.micro_batch"] == plan.training.micro_batch // 2
    assert sets[0]["training.grad_accum"] == plan.training.grad_accum * 2
    ckpt = next(i for i, s in enumerate(sets) if s.get("strategy.gradient_checkpointing") and len(s) == 1)
    switch = next(i for i, s in enumerate(sets) if "strategy.method" in s)
    assert ckpt < switch


def test_no_gpu_for_a_big_model_says_which_gpu_would_do():
    req = PlanRequest(model="meta-llama/Llama-3.1-8B", data="train.jsonl", task="sft")
    with pytest.raises(NoFitError) as err:
        make_plan(req, hardware=CPU, profile=make_profile(5_000), versions=FIXED_VERSIONS)
    msg = str(err.value)
    assert msg.startswith("no GPU found") and "needs a GPU" in msg
    cheap = err.value.alternatives["cheapest"]
    assert cheap is not None and cheap.gpu in msg and "--gpu" in msg


def test_a_gpu_too_small_for_everything():
    req = PlanRequest(model="meta-llama/Llama-3.1-405B", data="train.jsonl", task="sft")
    with pytest.raises(NoFitError, match=r"does not fit 1x RTX-4090 .* with any strategy"):
        make_plan(
            req,
            hardware=resolve_hardware("RTX-4090", 1),
            profile=make_profile(1_000),
            versions=FIXED_VERSIONS,
        )


def test_general_data_adds_replay_and_forgetting_check(tmp_path):
    general = tmp_path / "general.jsonl"
    general.write_text(
        "".join(f'{{"text": "general sentence number {i} about many things"}}\n' for i in range(50))
    )
    req = PlanRequest(model="Qwen/Qwen2.5-0.5B", data="train.jsonl", task="sft", general_data=str(general))
    plan = make_plan(
        req, hardware=resolve_hardware("A100-80GB", 1), profile=make_profile(5_000), versions=FIXED_VERSIONS
    ).plan
    assert plan.data.replay_ratio == pytest.approx(0.2)
    assert plan.evaluation.forgetting_check is True
    assert plan.data.general_path == str(general) and len(plan.data.general_sha256) == 64


def test_budget_switches_to_a_plan_that_meets_it():
    hw = resolve_hardware("A100-80GB", 1)
    base = make_plan(
        PlanRequest(model="Qwen/Qwen2.5-0.5B", data="t.jsonl", task="sft"),
        hardware=hw,
        profile=make_profile(50_000),
        versions=FIXED_VERSIONS,
    )
    times = sorted(o.estimate.time_hours for o in base.options if o.fits)
    assert len(times) >= 2 and times[0] < base.plan.estimate.time_hours
    limit = (times[0] + base.plan.estimate.time_hours) / 2  # between the fastest option and the chosen one
    res = make_plan(
        PlanRequest(model="Qwen/Qwen2.5-0.5B", data="t.jsonl", task="sft", max_hours=limit),
        hardware=hw,
        profile=make_profile(50_000),
        versions=FIXED_VERSIONS,
    )
    assert res.plan.estimate.time_hours <= limit
    assert any(w.startswith("budget: switched") for w in res.plan.warnings)


def test_budget_that_cannot_be_met_warns_with_numbers():
    res = make_plan(
        PlanRequest(model="Qwen/Qwen2.5-7B", data="t.jsonl", task="sft", max_hours=0.001, max_cost=0.01),
        hardware=resolve_hardware("A100-80GB", 1),
        profile=make_profile(30_000),
        versions=FIXED_VERSIONS,
    )
    warning = next(w for w in res.plan.warnings if w.startswith("budget:"))
    assert "--max-hours 0.001 and --max-cost 0.01 cannot be met" in warning
    assert "cheapest plan that fits" in warning and "training.max_steps" in warning


def test_set_overrides_are_accepted_with_warnings():
    req = PlanRequest(
        model="meta-llama/Llama-3.1-8B",
        data="t.jsonl",
        task="sft",
        overrides={"training.lr": "1e-3", "training.micro_batch": "64", "lora.alpha": "8"},
    )
    res = make_plan(
        req, hardware=resolve_hardware("RTX-4090", 1), profile=make_profile(5_000), versions=FIXED_VERSIONS
    )
    plan = res.plan
    assert plan.training.lr == 1e-3 and plan.training.micro_batch == 64 and plan.lora.alpha == 8
    text = " ".join(plan.warnings)
    assert "training.lr=0.001 is outside the usual lora range 0.0001..0.0003" in text
    assert "needs" in text and "expect out-of-memory" in text  # 64 x seq on a 24 GB GPU
    assert "alpha/r" in text
    assert res.chosen.setup.micro_batch == 64 and plan.estimate.verdict in ("tight", "exceeds")
    lr = next(d for d in plan.decisions if d.field == "training.lr")
    assert lr.source == "--set" and "the rule chose 0.0002" in lr.reason


def test_set_bf16_on_a_gpu_without_it_warns():
    req = PlanRequest(
        model="Qwen/Qwen2.5-0.5B", data="t.jsonl", task="sft", overrides={"strategy.precision": "bf16"}
    )
    plan = make_plan(
        req, hardware=resolve_hardware("T4", 1), profile=make_profile(2_000), versions=FIXED_VERSIONS
    ).plan
    assert any("T4 has no bf16" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("profile", "task", "message"),
    [
        (dict(rows=0), "sft", "the dataset is empty"),
        (dict(rows=10, invalid=90), "sft", "90 of 100 rows are malformed; first: line 2"),
        (dict(rows=100, fmt="text"), "preference", "cannot train on"),
    ],
)
def test_bad_data_is_refused(profile, task, message):
    req = PlanRequest(model="Qwen/Qwen2.5-0.5B", data="t.jsonl", task=task)
    p = make_profile(**profile)
    if profile["rows"] == 0:
        from dataclasses import replace

        p = replace(p, rows=0, valid_rows=0)
    with pytest.raises(FtplanError, match=message):
        make_plan(req, hardware=resolve_hardware("A100-80GB", 1), profile=p, versions=FIXED_VERSIONS)


def test_formats_per_task_match_the_executor():
    executor_data = pytest.importorskip("executor.data")
    assert inputs.FORMATS_FOR_TASK == executor_data.FORMATS_FOR_TASK
    assert inputs.MAX_INVALID_SHARE == executor_data.MAX_INVALID_SHARE


# ------------------------------------------------------------------------------ single rules


def test_seq_len_rounding_and_cap():
    p = make_profile(1000, mean=300, p99=700, max_len=5000)
    assert data.seq_len_rule(p, 32768, "sft").value == 704  # multiple of 64
    p = make_profile(1000, mean=900, p99=1500, max_len=5000)
    assert data.seq_len_rule(p, 32768, "sft").value == 1536  # multiple of 128 above 1024
    assert data.seq_len_rule(p, 1024, "sft").value == 1024  # capped by the model


def test_truncated_share_is_exact_at_the_percentiles():
    assert data.truncated_share(700, 300, 600, 700, 900) == pytest.approx(0.01)
    assert data.truncated_share(600, 300, 600, 700, 900) == pytest.approx(0.05)
    assert data.truncated_share(900, 300, 600, 700, 900) == 0.0
    assert 0.01 < data.truncated_share(650, 300, 600, 700, 900) < 0.05


def test_val_split_rule():
    assert data.val_split_rule(15)[1] == 0  # too few to hold out
    assert data.val_split_rule(500)[1] == 50
    assert data.val_split_rule(1_000_000)[1] == data.VAL_CAP


def test_precision_rule():
    assert precision.precision_rule(resolve_hardware("A100-80GB", 1)).value == "bf16"
    assert precision.precision_rule(resolve_hardware("V100-16GB", 1)).value == "fp16"
    assert precision.precision_rule(CPU).value == "fp32"


def test_lr_rule_by_method_and_size():
    assert optim.lr_rule("full", "sft", 500_000_000).value == 5e-5
    assert optim.lr_rule("full", "sft", 70_000_000_000).value == 1e-5
    assert optim.lr_rule("lora", "sft", 8_000_000_000).value == 2e-4
    assert optim.lr_rule("qlora", "sft", 65_000_000_000).value == 1e-4


def test_warmup_and_schedule():
    assert optim.warmup_rule(20_000).value == pytest.approx(500 / 20_000)  # capped at 500 steps
    assert optim.warmup_rule(1_000).value == pytest.approx(0.1)  # at least 100 steps
    assert optim.schedule_rule(100, 1).value == "constant_with_warmup"
    assert optim.schedule_rule(5_000, 1).value == "cosine"


def test_lora_rank_rule():
    assert lora.rank_rule("sft", 5_000, False, "balanced").value == 16
    assert lora.rank_rule("sft", 500, False, "balanced").value == 8
    assert lora.rank_rule("sft", 5_000, True, "balanced").value == 32
    assert lora.rank_rule("continued-pretraining", 5_000, False, "balanced").value == 64


def test_family_order():
    assert strategy.family_order("sft", 50_000, 0, "balanced").value[0] == "full"
    assert strategy.family_order("sft", 5_000, 0, "balanced").value[0] == "lora"
    assert strategy.family_order("sft", 50_000, 0, "cost").value[0] == "lora"


def test_fit_micro_batch_is_the_largest_that_fits():
    for limit in (1, 3, 7, 8, 33):
        assert batch.fit_micro_batch(lambda m, lim=limit: m <= lim, 64) == limit
    assert batch.fit_micro_batch(lambda m: True, 12) == 12
    assert batch.fit_micro_batch(lambda m: False, 12) == 0


def test_eval_steps_respect_30_minutes():
    ch = evaluation.eval_steps_rule(10_000, 60.0)  # 1 min per step
    assert ch.value == 30
    assert evaluation.eval_steps_rule(100, 1.0).value == 10


def test_values_that_follow_an_override():
    hw, prof = resolve_hardware("RTX-4090", 1), make_profile(5_000)
    base = make_plan(
        PlanRequest(model="meta-llama/Llama-3.1-8B", data="t.jsonl", task="sft"),
        hardware=hw,
        profile=prof,
        versions=FIXED_VERSIONS,
    ).plan
    req = PlanRequest(
        model="meta-llama/Llama-3.1-8B",
        data="t.jsonl",
        task="sft",
        overrides={"lora.r": "64", "training.micro_batch": "1"},
    )
    plan = make_plan(req, hardware=hw, profile=prof, versions=FIXED_VERSIONS).plan
    assert plan.lora.r == 64 and plan.lora.alpha == 128  # alpha = 2r follows r
    per_gpu = base.training.micro_batch * base.training.grad_accum
    assert plan.training.micro_batch == 1 and plan.training.grad_accum == per_gpu  # same effective batch
    assert not any("alpha/r" in w or "effective batch" in w for w in plan.warnings)
    alpha = next(d for d in plan.decisions if d.field == "lora.alpha")
    assert "follows --set lora.r=64" in alpha.reason


def test_multi_node_request_plans_for_every_gpu():
    req = PlanRequest(
        model="meta-llama/Llama-3.1-70B", data="t.jsonl", task="sft", gpu="H100-SXM", gpus=8, nodes=2
    )
    plan = make_plan(req, profile=make_profile(100_000), versions=FIXED_VERSIONS, alternatives=False).plan
    assert plan.hardware.nodes == 2 and plan.hardware.count == 8
    per_step = plan.training.micro_batch * plan.training.grad_accum * 16
    effective = next(d for d in plan.decisions if d.field == "training.grad_accum")
    assert "x 16 GPU(s)" in effective.reason and f"= {per_step} per step" in effective.reason


def test_preference_rows_are_sized_as_two_sequences():
    sc = next(s for s in SCENARIOS if s.id == "dpo-preference")
    hw = resolve_hardware(*sc.hardware)
    res = make_plan(
        PlanRequest(model=sc.model, data="t.jsonl", task="preference"),
        hardware=hw,
        profile=make_profile(**sc.profile),
        versions=FIXED_VERSIONS,
    )
    # one unit: micro_batch counts rows (pairs) in the plan and the setup; the setup runs two sequences each
    assert res.chosen.setup.micro_batch == res.plan.training.micro_batch
    assert res.chosen.setup.sequences_per_row == 2  # chosen + rejected
    assert setup_from_plan(res.plan) == res.chosen.setup.with_(
        grad_accum=res.plan.training.grad_accum)  # the executor's converter sizes what the rules sized
    rows = res.plan.data.valid_rows - res.plan.data.val_rows
    assert res.plan.estimate.tokens >= 2 * rows * sc.profile["mean"] * 0.99  # both sequences trained


def test_long_examples_fall_back_to_a_shorter_sequence_that_fits():
    # p99 of 40K tokens cannot fit an 8B model on 24 GB; half the examples are under 3K tokens.
    prof = make_profile(5_000, mean=6_000, p50=3_000, p95=20_000, p99=40_000, max_len=60_000)
    plan = make_plan(
        PlanRequest(model="meta-llama/Llama-3.1-8B", data="t.jsonl", task="sft"),
        hardware=resolve_hardware("RTX-4090", 1),
        profile=prof,
        versions=FIXED_VERSIONS,
    ).plan
    assert 3_000 <= plan.training.seq_len < 40_000 and plan.estimate.verdict == "fits"
    reason = next(d.reason for d in plan.decisions if d.field == "training.seq_len")
    assert reason.startswith("shortened from 40064") and "will be truncated" in reason
    assert any(w.startswith("heavy truncation") for w in plan.warnings)


def test_no_fallback_that_would_truncate_most_examples():
    # p50 of 20K: even half the examples do not fit (10K did fit once the estimator modelled TRL's fused
    # LM head, which has no T x V logits: QLoRA + checkpointing at 10K needs ~18 GiB)
    prof = make_profile(5_000, mean=20_000, p50=20_000, p95=45_000, p99=60_000, max_len=120_000)
    with pytest.raises(NoFitError, match="at 60032 tokens per sequence.*do not fit either"):
        make_plan(
            PlanRequest(model="meta-llama/Llama-3.1-8B", data="t.jsonl", task="sft"),
            hardware=resolve_hardware("RTX-4090", 1),
            profile=prof,
            versions=FIXED_VERSIONS,
        )


# ----------------------------------------------------------------------------------------------
# The estimate follows what the executor will run
# ----------------------------------------------------------------------------------------------


def _plan(overrides=None, task="sft", rows=5_000, hardware=None, **profile):
    req = PlanRequest(model="Qwen/Qwen2.5-0.5B", data="t.jsonl", task=task, overrides=overrides or {})
    return make_plan(
        req, hardware=hardware or resolve_hardware("A100-80GB", 1), profile=make_profile(rows, **profile),
        versions=FIXED_VERSIONS,
    )


@pytest.mark.parametrize("packing", ["true", "false"])
def test_max_steps_override_sets_tokens_steps_and_time(packing):
    base = _plan({"training.packing": packing})
    cut = _plan({"training.packing": packing, "training.max_steps": "7"})
    t = cut.plan.training
    assert cut.plan.estimate.steps == 7
    rows = 7 * t.micro_batch * t.grad_accum
    if t.packing:  # packed rows are full seq_len sequences
        expect = rows * t.seq_len
    else:  # one example per row: the data's mean length
        expect = rows * 300  # make_profile's mean
    assert cut.plan.estimate.tokens == pytest.approx(expect, rel=0.02)
    assert cut.plan.estimate.tokens < base.plan.estimate.tokens
    assert cut.plan.estimate.time_hours < base.plan.estimate.time_hours


def test_setup_from_plan_passes_what_the_executor_does():
    from planner.convert import setup_from_plan

    plan = _plan({"lora.dropout": "0.1"}).plan
    setup = setup_from_plan(plan)
    assert plan.strategy.method in ("lora", "qlora", "dora") and setup.lora_dropout == 0.1
    assert setup.fused_loss  # TRL SFTTrainer's fused LM head
    assert setup.padding_mask == (not plan.training.packing)
    assert not setup.reference_model
    full = setup_from_plan(_plan({"strategy.method": "full"}).plan)
    assert full.lora_dropout == 0.0  # no adapters


def test_lora_dropout_changes_the_estimated_memory():
    a = _plan({"lora.dropout": "0.0", "training.micro_batch": "4", "training.grad_accum": "1"}).plan
    b = _plan({"lora.dropout": "0.1", "training.micro_batch": "4", "training.grad_accum": "1"}).plan
    assert b.estimate.activations > a.estimate.activations  # 1-byte mask per adapter input


def test_dpo_full_counts_the_reference_copy():
    from planner.convert import setup_from_plan
    from planner.model_spec import load_model_spec

    prof = {"fmt": "preference", "fields": ("prompt", "chosen", "rejected")}
    full = _plan({"strategy.method": "full"}, task="preference", **prof)
    setup = setup_from_plan(full.plan)
    assert setup.reference_model and setup.padding_mask
    total = load_model_spec("Qwen/Qwen2.5-0.5B").param_counts().total
    bytes_per = {"bf16": 2, "fp16": 2, "fp32": 4}[full.plan.strategy.precision]
    if full.plan.strategy.mixed_precision:
        bytes_per = 4
    assert full.plan.estimate.weights == 2 * total * bytes_per  # policy + frozen reference
