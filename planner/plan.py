"""plan.yaml: the single source of truth between the planner and the executor.

The dataclasses below are the schema (version 1). ``load_plan(path) -> Plan`` validates
every field (unknown keys, wrong types, out-of-range values, all reported together with their field
paths) and ``save_plan(plan, path)`` writes it atomically. The executor reads only this.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import FtplanError, close_matches, first_line
from planner.files import write_atomic
from planner.memory import SAVE_MODULES
from planner.units import GB, GIB
from planner.vocab import (
    ADAPTER_METHODS,
    ATTN_IMPLEMENTATIONS,
    DEFAULT_LORA_ALPHA,
    DEFAULT_LORA_R,
    DISTRIBUTIONS,
    FORMATS,
    METHODS,
    OPTIMIZERS,
    PRECISIONS,
    TASKS,
    TRACKING_BACKENDS,
    WANDB_MODES,
)

SCHEMA_VERSION = 1

@dataclass
class ModelSection:
    name_or_path: str  # what from_pretrained receives (hub id or local folder)
    architecture: str = ""
    model_type: str = ""
    total_params: int = 0
    source: str = "catalog"
    revision: str | None = None
    trust_remote_code: bool = False  # off unless the user asks (security)
    # tokens added to the tokenizer before training (tokenizer.add_tokens, then resize_token_embeddings);
    # with LoRA the new embedding rows train only through lora.modules_to_save
    added_tokens: list[str] = field(default_factory=list)


@dataclass
class DataSection:
    path: str
    sha256: str = ""
    format: str = "alpaca"  # DataProfile.format
    rows: int = 0
    valid_rows: int = 0
    val_split: float = 0.1  # fraction held out (or val_rows when > 0)
    val_rows: int = 0
    drop_duplicates: bool = True
    general_path: str | None = None  # replay corpus against forgetting
    general_sha256: str = ""
    replay_ratio: float = 0.0  # share of general data in the training mix (0.2 = 80/20)
    chat_template: str | None = None  # None: the tokenizer's own; else a template string
    duplicates: int = 0  # exact duplicate rows found by the profiler (dropped when drop_duplicates)
    invalid_rows: int = 0  # malformed rows found by the profiler (always dropped)
    # How the file is read (planner.dataset): the same settings at plan time and at run time.
    columns: dict[str, str] = field(default_factory=dict)  # canonical name -> file column (--columns)
    system_turn: str = "keep"  # keep | merge (into the first user turn) | drop: for templates without a system role
    merge_consecutive: bool = False  # join consecutive same-role turns (templates demanding alternation)
    template: str = ""  # chat template the profile rendered with: tokenizer | plan | default | "" (heuristic)
    tokens_counted: str = ""  # "exact" (the model's tokenizer and template) or "heuristic"
    truncated_rows: int = 0  # rows longer than training.seq_len (cut at the end)
    untrained_rows: int = 0  # rows with no trained token within training.seq_len (dropped)
    skipped: dict[str, int] = field(default_factory=dict)  # content left out of valid rows, by kind


@dataclass
class HardwareSection:
    gpu: str | None = None  # catalog name or None for CPU
    count: int = 1
    nodes: int = 1
    memory_gib: float = 0.0  # usable memory per GPU, GiB (planner.units)
    bf16: bool = False
    detected: bool = False
    price_per_hour: float = 0.0  # USD per GPU-hour used for the cost estimate


@dataclass
class LoraSection:
    r: int = DEFAULT_LORA_R
    alpha: int = DEFAULT_LORA_ALPHA
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    use_dora: bool = False
    merge_after: bool = False  # also save a merged model
    # peft modules_to_save: whole modules trained beside the adapters (embed_tokens, lm_head)
    modules_to_save: list[str] = field(default_factory=list)
    # adapter weights: fp32 (peft's autocast_adapter_dtype default) or the model's 16-bit dtype
    adapter_dtype: str = "fp32"


@dataclass
class StrategySection:
    method: str = "lora"  # full | lora | dora | qlora | ia3 | prompt | prefix
    distribution: str = "single"  # single | ddp | zero1 | zero2 | zero3 | fsdp
    precision: str = "bf16"  # bf16 | fp16 | fp32
    mixed_precision: bool = False  # fp32 master weights with 16-bit compute (full fine-tuning)
    offload_optimizer: bool = False
    offload_params: bool = False
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"  # planner.memory.OPTIMIZERS
    num_virtual_tokens: int = 20  # prompt / prefix tuning
    # qlora: peft prepare_model_for_kbit_training's fp32 upcast of every non-quantized parameter
    qlora_upcast: bool = True
    # qlora: NF4 double quantization of the block absmax (bnb_4bit_use_double_quant)
    double_quant: bool = True


@dataclass
class TrainingSection:
    seq_len: int = 2048
    micro_batch: int = 1
    grad_accum: int = 1
    packing: bool = False
    epochs: float = 1.0
    max_steps: int = -1  # -1: derived from epochs
    lr: float = 2e-4
    lr_scheduler: str = "cosine"  # cosine | linear | constant_with_warmup
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    layerwise_lr_decay: float | None = None  # e.g. 0.9: layer l gets lr * decay**(L-1-l)
    completion_only_loss: bool = True  # loss on response tokens only (sft/chat)
    seed: int = 42
    classification_mode: str = "generate"  # generate (label as text) | head (sequence classification)
    dpo_beta: float = 0.1
    # the loss through TRL's fused LM head (chunked log-probs, no T x V logits); false: model(**batch).loss
    fused_loss: bool = True


@dataclass
class EvaluationSection:
    eval_steps: int = 100
    early_stopping_patience: int | None = 3  # evals without val-loss improvement; None = off
    metric: str = "loss"  # loss | exact_match | accuracy | rouge_l | perplexity
    compare_base: bool = True
    forgetting_check: bool = False
    max_eval_samples: int = 200


@dataclass
class CheckpointSection:
    save_steps: int = 200
    save_total_limit: int = 3


# The trackers themselves (TRACKING_BACKENDS, WANDB_MODES) are planner.vocab's closed sets.
MLFLOW_LOCAL_STORE = "mlruns"  # under output_dir: mlflow.db (SQLite) and artifacts/


@dataclass
class TrackingSection:
    """Where a run's settings, metrics and estimate-vs-measured table go (transformers' report_to).

    Never a credential: trackers read their tokens from the environment (WANDB_API_KEY,
    MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD); a URI carrying one is refused at load.
    """

    backends: list[str] = field(default_factory=lambda: ["tensorboard"])  # TRACKING_BACKENDS; [] = none
    experiment: str | None = None  # MLflow experiment / W&B project; null: the plan folder's name
    mlflow_tracking_uri: str | None = None  # null: a local store under <output_dir>/mlruns
    wandb_project: str | None = None  # null: the experiment name
    wandb_mode: str = "offline"  # offline (nothing leaves the machine; `wandb sync` later) | online

    def mlflow_uri(self, output_dir: str) -> str:
        """The MLflow tracking URI of a run: the plan's, or MLflow's local database backend (SQLite) under
        ``<output_dir>/mlruns`` (MLflow 3 keeps the file store in maintenance mode and refuses it unless
        opted in: mlflow/store/tracking/file_store.py)."""
        return self.mlflow_tracking_uri or f"sqlite:///{output_dir}/{MLFLOW_LOCAL_STORE}/mlflow.db"


@dataclass
class EstimateSection:
    weights: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0
    temporary: int = 0
    peak_allocated: int = 0
    overhead: int = 0
    total: int = 0
    cpu_bytes: int = 0
    verdict: str = ""  # fits | tight | exceeds | cpu
    tokens: int = 0  # tokens trained (all epochs)
    steps: int = 0  # optimizer steps
    time_hours: float = 0.0
    cost_usd: float = 0.0
    tokens_per_second: float = 0.0


@dataclass
class Decision:
    field: str  # dotted plan path, e.g. "training.lr"
    value: object
    reason: str
    source: str = ""  # seed file / paper / measurement behind the rule


@dataclass
class Fallback:
    """A change the executor may apply on out-of-memory, in order."""

    set: dict[str, object]  # dotted plan path -> new value
    reason: str


@dataclass
class Plan:
    model: ModelSection
    data: DataSection
    task: str = "sft"
    goal: str = "balanced"  # quality | balanced | cost
    hardware: HardwareSection = field(default_factory=HardwareSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    lora: LoraSection | None = field(default_factory=LoraSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    checkpointing: CheckpointSection = field(default_factory=CheckpointSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    estimate: EstimateSection = field(default_factory=EstimateSection)
    output_dir: str = "output"  # relative to the plan folder
    decisions: list[Decision] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    advice: list[str] = field(default_factory=list)  # fine-tune vs prompting/RAG notes (rules/advice.py)


# --------------------------------------------------------------------------------------------------
# Validation: a generic walk over the dataclasses above (typing.get_type_hints) plus a table of
# value constraints. Every problem is collected and reported at once with its field path, the way
# torchtune's config/_validate.py and accelerate's YAML loader report unknown/bad keys.
# --------------------------------------------------------------------------------------------------

PLAN_FILENAME = "plan.yaml"

# Allowed values of the string fields (the schema keeps them as ``str`` so old plans stay loadable).
CHOICES: dict[str, tuple[str, ...]] = {
    "task": TASKS,
    "goal": ("quality", "balanced", "cost"),
    "model.source": ("catalog", "local", "hf-cache", "hub"),
    "data.format": FORMATS,
    "data.system_turn": ("keep", "merge", "drop"),
    "lora.adapter_dtype": ("fp32", "model"),
    "data.template": ("", "tokenizer", "plan", "default"),
    "data.tokens_counted": ("", "exact", "heuristic"),
    "strategy.method": METHODS,
    "strategy.distribution": DISTRIBUTIONS,
    "strategy.precision": PRECISIONS,
    "strategy.attn_implementation": ATTN_IMPLEMENTATIONS,
    "strategy.optimizer": OPTIMIZERS,
    # transformers.SchedulerType names (transformers/trainer_utils.py).
    "training.lr_scheduler": (
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant",
        "constant_with_warmup",
    ),
    "training.classification_mode": ("generate", "head"),
    "evaluation.metric": ("loss", "exact_match", "accuracy", "rouge_l", "perplexity"),
    "estimate.verdict": ("", "fits", "tight", "exceeds", "cpu"),
    "tracking.wandb_mode": WANDB_MODES,
}


@dataclass(frozen=True)
class Range:
    """Numeric bounds of one field; ``None`` values of Optional fields are always allowed."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # True: value must be > lo (not >=)
    hi_open: bool = False  # True: value must be < hi

    def check(self, value: float) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return f"must be {'>' if self.lo_open else '>='} {_num(self.lo)}, got {_num(value)}"
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return f"must be {'<' if self.hi_open else '<='} {_num(self.hi)}, got {_num(value)}"
        return None


POSITIVE = Range(0, lo_open=True)
AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, hi_open=True)

RANGES: dict[str, Range] = {
    "schema_version": Range(1, SCHEMA_VERSION),
    "model.total_params": NON_NEGATIVE,
    "data.rows": NON_NEGATIVE,
    "data.valid_rows": NON_NEGATIVE,
    "data.val_split": Range(0, 0.5),  # holding out more than half is a mistake, not a choice
    "data.val_rows": NON_NEGATIVE,
    "data.replay_ratio": FRACTION,
    "data.duplicates": NON_NEGATIVE,
    "data.invalid_rows": NON_NEGATIVE,
    "data.truncated_rows": NON_NEGATIVE,
    "data.untrained_rows": NON_NEGATIVE,
    "hardware.count": AT_LEAST_1,
    "hardware.nodes": AT_LEAST_1,
    "hardware.memory_gib": NON_NEGATIVE,
    "hardware.price_per_hour": NON_NEGATIVE,
    "lora.r": Range(1, 4096),
    "lora.alpha": POSITIVE,
    "lora.dropout": FRACTION,
    "strategy.num_virtual_tokens": AT_LEAST_1,
    "training.seq_len": Range(8, 1 << 21),
    "training.micro_batch": AT_LEAST_1,
    "training.grad_accum": AT_LEAST_1,
    "training.epochs": POSITIVE,
    "training.max_steps": Range(-1),
    "training.lr": Range(0, 1, lo_open=True),
    "training.warmup_ratio": FRACTION,
    "training.weight_decay": Range(0, 1),
    "training.max_grad_norm": NON_NEGATIVE,  # 0 disables clipping (HF TrainingArguments)
    "training.layerwise_lr_decay": Range(0, 1, lo_open=True),
    "training.seed": NON_NEGATIVE,
    "training.dpo_beta": POSITIVE,
    "evaluation.eval_steps": AT_LEAST_1,
    "evaluation.early_stopping_patience": AT_LEAST_1,
    "evaluation.max_eval_samples": NON_NEGATIVE,
    "checkpointing.save_steps": AT_LEAST_1,
    "checkpointing.save_total_limit": AT_LEAST_1,
    **{
        f"estimate.{k}": NON_NEGATIVE
        for k in (
            "weights",
            "gradients",
            "optimizer",
            "activations",
            "temporary",
            "peak_allocated",
            "overhead",
            "total",
            "cpu_bytes",
            "tokens",
            "steps",
            "time_hours",
            "cost_usd",
            "tokens_per_second",
        )
    },
}

LORA_METHODS = ADAPTER_METHODS  # methods that read the lora section
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")  # YAML 1.1 reads '1e-5' as str


class PlanValidationError(FtplanError):
    """All problems of one plan, with field paths; ``errors`` keeps them as a list."""

    def __init__(self, source: str, errors: list[str]):
        self.errors = list(errors)
        super().__init__(f"{source}: " + "; ".join(self.errors))


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _type_name(tp) -> str:
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false"}.get(tp, str(tp))


def _got(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@functools.cache
def _hints(cls) -> dict:
    """Resolved field types (cached: resolving string annotations compiles each one)."""
    return typing.get_type_hints(cls)


def _convert(value, tp, path: str, errors: list[str]):
    """``value`` (parsed YAML) as type ``tp``; appends to ``errors`` and returns None when it can't.

    Scalars are also checked against CHOICES/RANGES here, so type and value problems of different
    fields are all reported in the same pass.
    """
    out = _convert_type(value, tp, path, errors)
    if out is not None and not isinstance(out, (bool, list, dict)) and not dataclasses.is_dataclass(out):
        problem = _check_scalar(path, out)
        if problem:
            errors.append(f"{path}: {problem}")
    return out


def _check_scalar(path: str, value) -> str | None:
    allowed = CHOICES.get(path)
    if allowed is not None and value not in allowed:
        hint = close_matches(str(value), [a for a in allowed if a], n=1)
        extra = (
            f" (did you mean '{hint[0]}'?)" if hint else f" (one of: {', '.join(a for a in allowed if a)})"
        )
        return f"unknown '{value}'{extra}"
    rng = RANGES.get(path)
    if rng is not None and isinstance(value, (int, float)):
        return rng.check(value)
    return None


def _convert_type(value, tp, path: str, errors: list[str]):
    if tp is object or tp is typing.Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            errors.append(f"{path}: must be {_type_name(tp)}, got null")
            return None
        for arg in args:
            if arg is type(None):
                continue
            trial: list[str] = []
            out = _convert(value, arg, path, trial)
            if not trial:
                return out
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:  # Optional[X]: report X's own message (e.g. unknown keys of a section)
            return _convert(value, inner[0], path, errors)
        errors.append(f"{path}: must be {_type_name(tp)}, got {_got(value)}")
        return None
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, errors)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            errors.append(f"{path}: must be {_type_name(tp)}, got {_got(value)}")
            return None
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            errors.append(f"{path}: must be a mapping, got {_got(value)}")
            return None
        _, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, f"{path}.{k}", errors) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a schema type this walker does not know
        raise TypeError(f"plan schema type {tp!r} at {path} is not supported")
    errors.append(f"{path}: must be {_type_name(tp)}, got {_got(value)}")
    return None


def _build(cls, value, path: str, errors: list[str]):
    prefix = f"{path}." if path else ""
    if not isinstance(value, Mapping):
        errors.append(f"{path or 'plan'}: must be a mapping, got {_got(value)}")
        return None
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            hint = close_matches(str(key), fields, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            errors.append(f"{prefix}{key}: unknown key{extra}")
    kwargs = {}
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                errors.append(f"{prefix}{name}: required")
            continue
        kwargs[name] = _convert(value[name], hints[name], prefix + name, errors)
    try:
        return cls(**kwargs)
    except TypeError:  # a required field was missing: already reported
        return None


def _check_values(plan: Plan) -> list[str]:
    """The cross-field rules that make a plan impossible to run (choices/ranges: see _convert)."""
    errors: list[str] = []
    if plan.training.max_steps == 0:
        errors.append("training.max_steps: must be -1 (use epochs) or >= 1, got 0")
    if plan.strategy.method in LORA_METHODS and plan.lora is None:
        errors.append(f"lora: required when strategy.method is '{plan.strategy.method}'")
    if plan.lora is not None and not plan.lora.target_modules:
        errors.append("lora.target_modules: must list at least one module (or 'all-linear')")
    if plan.lora is not None:
        for i, name in enumerate(plan.lora.modules_to_save):
            if name not in SAVE_MODULES:
                errors.append(f"lora.modules_to_save[{i}]: unknown '{name}' (one of: {', '.join(SAVE_MODULES)})")
    lora_like = plan.strategy.method in LORA_METHODS
    if plan.lora is not None and plan.lora.modules_to_save and not lora_like:
        errors.append(f"lora.modules_to_save: applies to lora/dora/qlora, not '{plan.strategy.method}'")
    saved = set(plan.lora.modules_to_save) if plan.lora is not None else set()
    if plan.model.added_tokens and plan.strategy.method != "full" and not (
            lora_like and saved & {m for m, kind in SAVE_MODULES.items() if kind == "embeddings"}):
        errors.append("model.added_tokens: the new embedding rows would stay untrained: add the embedding "
                      "(e.g. embed_tokens) and lm_head to lora.modules_to_save, or use strategy.method full")
    if not plan.strategy.double_quant and plan.strategy.method != "qlora":
        errors.append(f"strategy.double_quant: applies to qlora only, not '{plan.strategy.method}' (remove it)")
    if not plan.strategy.qlora_upcast and plan.strategy.method != "qlora":
        errors.append(f"strategy.qlora_upcast: applies to qlora only, not '{plan.strategy.method}' (remove it)")
    if not plan.training.fused_loss and plan.task == "preference":
        errors.append("training.fused_loss: TRL's DPOTrainer always uses its fused LM head (set it to true)")
    errors.extend(_tracking_errors(plan.tracking))
    dist = plan.strategy.distribution
    if plan.strategy.offload_params and dist not in ("zero3", "fsdp"):
        errors.append(f"strategy.offload_params: needs distribution zero3 or fsdp, got '{dist}'")
    if plan.strategy.offload_optimizer and dist not in ("zero1", "zero2", "zero3", "fsdp"):
        errors.append(f"strategy.offload_optimizer: needs a ZeRO or FSDP distribution, got '{dist}'")
    gpus = plan.hardware.count * plan.hardware.nodes
    if dist != "single" and plan.hardware.gpu is not None and gpus < 2 and dist == "ddp":
        errors.append("strategy.distribution: 'ddp' needs at least 2 GPUs (hardware.count)")
    # On CPU, hardware.count is the number of processes: DDP and DeepSpeed ZeRO train there over gloo
    # (DeepSpeed's CPU accelerator, deepspeed/accelerator/cpu_accelerator.py); FSDP is GPU-only here.
    if dist == "fsdp" and plan.hardware.gpu is None:
        errors.append("strategy.distribution: 'fsdp' needs GPUs, but hardware.gpu is null (CPU)")
    elif dist != "single" and plan.hardware.gpu is None and gpus < 2:
        errors.append(f"strategy.distribution: '{dist}' on CPU needs hardware.count >= 2 (processes), "
                      f"got {gpus}")
    return errors


def _tracking_errors(t: TrackingSection) -> list[str]:
    errors = [f"tracking.backends[{i}]: unknown '{b}' (one of: {', '.join(TRACKING_BACKENDS)})"
              for i, b in enumerate(t.backends) if b not in TRACKING_BACKENDS]
    if len(set(t.backends)) != len(t.backends):
        errors.append("tracking.backends: lists a backend twice")
    for name in ("experiment", "wandb_project", "mlflow_tracking_uri"):
        value = getattr(t, name)
        if value is not None and not value.strip():
            errors.append(f"tracking.{name}: empty; use null for the default")
    problem = tracking_uri_problem(t.mlflow_tracking_uri)
    if problem:
        errors.append(f"tracking.mlflow_tracking_uri: {problem}")
    return errors


# Query keys that carry a credential (presigned URLs, access tokens): never stored in plan.yaml.
_SECRET_QUERY = re.compile(r"token|passw|secret|api[_-]?key|access[_-]?key|credential|sig(nature)?$|auth", re.I)


def tracking_uri_problem(uri: str | None) -> str | None:
    """Why a tracking URI cannot go into plan.yaml (it carries a credential), else None.

    The message never repeats the URI, so the secret does not reach a terminal or a log either. MLflow reads
    credentials from the environment (MLFLOW_TRACKING_USERNAME / _PASSWORD / _TOKEN, mlflow/environment_variables.py).
    """
    if not uri:
        return None
    from urllib.parse import parse_qsl, urlsplit

    try:
        parts = urlsplit(uri.strip())
        has_user = parts.username is not None or parts.password is not None
        query_keys = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
    except ValueError:
        return "not a valid URI"
    fix = ("plan.yaml holds no secrets: remove them and give them through the environment instead "
           "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN; a database's own "
           "password file)")
    if has_user:
        return f"carries credentials (user[:password]@host); {fix}"
    if any(_SECRET_QUERY.search(k) for k in query_keys):
        return f"carries a credential in its query string; {fix}"
    return None


def get_path(obj, path: str):
    """The value at a dotted plan path (``training.lr``); None where a section on the way is absent."""
    for part in path.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part, None)
    return obj


def set_path(data: dict, path: str, value) -> None:
    """Set the value at a dotted plan path in a plan dict (``plan_to_dict``); a section on the way that is
    null starts from its defaults (``lora: null``, then ``lora.r``). An unknown path raises FtplanError."""
    _, problem = _field_type(path)
    if problem:
        raise FtplanError(f"{path}: {problem}")
    node = data
    parts = path.split(".")
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            section_tp, _ = _field_type(".".join(parts[: i + 1]))
            inner = [a for a in typing.get_args(section_tp) if dataclasses.is_dataclass(a)]
            node[part] = _plain(inner[0]()) if inner else {}
        node = node[part]
    node[parts[-1]] = value


def validate_plan(plan: Plan) -> list[str]:
    """Every problem of an already-built plan (empty list = valid): types, choices, ranges, cross-field."""
    errors: list[str] = []
    rebuilt = _build(Plan, plan_to_dict(plan), "", errors)
    if rebuilt is not None and not errors:
        errors.extend(_check_values(rebuilt))
    return errors


# Keys older plan.yaml files carry, renamed since: old dotted path -> (new path, how the value reads there).
# They load (with a note in the plan's warnings) and are written under the new name.
RENAMED_KEYS = {
    "hardware.memory_gb": ("hardware.memory_gib", lambda v: round(float(v) * GB / GIB, 2)),  # decimal GB -> GiB
}


def _renamed(data, notes: list[str]):
    """``data`` with RENAMED_KEYS moved to their new names (a copy; the caller's dict is not touched)."""
    if not isinstance(data, Mapping):
        return data
    data = dict(data)
    for old, (new, read) in RENAMED_KEYS.items():
        section, key = old.split(".")
        new_key = new.split(".")[1]
        node = data.get(section)
        if not isinstance(node, Mapping) or key not in node:
            continue
        node = dict(node)
        value = node.pop(key)
        if new_key not in node:
            try:
                node[new_key] = read(value)
            except (TypeError, ValueError):
                node[new_key] = value  # the new key's validation names the problem
            notes.append(f"plan.yaml: '{old}' is deprecated, read as '{new}: {node[new_key]}' (saved under the "
                         "new name from now on)")
        data[section] = node
    return data


def plan_from_dict(data, *, source: str = PLAN_FILENAME) -> Plan:
    """Build and validate a Plan from parsed YAML; raises PlanValidationError listing every problem.
    Keys renamed since (RENAMED_KEYS) load under their new names, with a note in ``plan.warnings``."""
    errors: list[str] = []
    notes: list[str] = []
    data = _renamed(data, notes)
    if isinstance(data, Mapping) and "schema_version" in data and data["schema_version"] != SCHEMA_VERSION:
        raise PlanValidationError(
            source,
            [
                f"schema_version: this ftplan reads version {SCHEMA_VERSION}, "
                f"got {_got(data['schema_version'])}"
            ],
        )
    plan = _build(Plan, data, "", errors)
    if plan is not None and not errors:
        errors.extend(_check_values(plan))
    if errors:
        raise PlanValidationError(source, errors)
    if notes:
        plan.warnings = [*plan.warnings, *(n for n in notes if n not in plan.warnings)]
    return plan


def _plain(value):
    """Dataclass/tuple/Path values as YAML-safe builtins."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return value  # stays a float (1.0), YAML keeps the '.0'
    return value


def processes_per_node(plan: Plan) -> int:
    """Training processes on each node: one per GPU; on CPU, hardware.count processes for a DDP/ZeRO plan
    (gloo, DeepSpeed's CPU accelerator), else one."""
    if plan.hardware.gpu is not None:
        return max(1, plan.hardware.count)
    distributed = plan.strategy.distribution in ("ddp", "zero1", "zero2", "zero3")
    return max(1, plan.hardware.count) if distributed else 1


def world_size(plan: Plan) -> int:
    """The one world size of a plan: what launch.sh starts, what the trainer divides the batch by and
    what the estimate's sharding and step counts use. A CPU DDP/ZeRO plan runs hardware.count processes on
    each of hardware.nodes machines (--cpu-processes, --nodes); any other CPU plan is one process."""
    if plan.hardware.gpu is None and plan.strategy.distribution not in ("ddp", "zero1", "zero2", "zero3"):
        return 1
    return processes_per_node(plan) * max(1, plan.hardware.nodes)


def plan_to_dict(plan: Plan) -> dict:
    """The plan as plain builtins, in schema order (what plan.yaml holds)."""
    return _plain(plan)


PLAN_HEADER = (
    "# ftplan plan (schema version {v}): the single source of truth for this run.\n"
    "# Edit any field and run `ftplan run` on this folder; the file is validated on load.\n"
    "# The decisions section explains every value; REPORT.md has the estimates side by side.\n"
)


def _yaml_loader():
    """libyaml's C loader when PyYAML was built with it (several times faster), else the Python one."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_dumper():
    import yaml

    return getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_plan(plan: Plan) -> str:
    """plan.yaml text: a short header comment, then the fields in schema order."""
    import yaml

    body = yaml.dump(
        plan_to_dict(plan), Dumper=_yaml_dumper(), sort_keys=False, allow_unicode=True, width=100
    )
    return PLAN_HEADER.format(v=plan.schema_version) + body


def plan_path(path: str | os.PathLike) -> Path:
    """Accepts a plan folder or the plan.yaml inside it."""
    p = Path(path)
    return p / PLAN_FILENAME if p.is_dir() else p


def load_plan(path: str | os.PathLike) -> Plan:
    """Read and validate plan.yaml (or a plan folder); every problem in one FtplanError."""
    import yaml

    p = plan_path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FtplanError(f"{p}: no such plan file", hint="run `ftplan plan ... --out DIR` first") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FtplanError(f"{p}: cannot read plan ({exc})") from None
    try:
        data = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise FtplanError(
            f"{p}:{where}: not valid YAML ({problem})", hint="fix the syntax or re-plan"
        ) from None
    if data is None:
        raise FtplanError(f"{p}: the plan file is empty", hint="re-run `ftplan plan`")
    return plan_from_dict(data, source=str(p))


def save_plan(plan: Plan, path: str | os.PathLike) -> Path:
    """Validate, then write plan.yaml atomically (temp file + rename); returns the file path."""
    text = dump_plan(plan)
    plan_from_dict(_yaml_load(text), source="plan")  # validates, and proves what we write loads back
    p = Path(path)
    if p.is_dir():
        p = p / PLAN_FILENAME
    return write_atomic(p, text)


def _yaml_load(text: str):
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


# --------------------------------------------------------------------------------------------------
# --set key=value overrides, typed by the schema
# --------------------------------------------------------------------------------------------------


def _field_type(path: str):
    """(type, owner-path problem) of a dotted plan path, e.g. 'training.lr' -> float."""
    cls = Plan
    parts = path.split(".")
    tp = None
    for i, part in enumerate(parts):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            where = ".".join(parts[:i])
            return None, f"'{where}' is not a section, it has no key '{part}'"
        hints = _hints(cls)
        if part not in hints:
            hint = close_matches(part, hints, n=1)
            extra = f" (did you mean '{'.'.join(parts[:i] + [hint[0]])}'?)" if hint else ""
            where = ".".join(parts[:i]) or "plan"
            return None, f"unknown key '{part}' in {where}{extra}"
        tp = hints[part]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        cls = args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp
    return tp, None


def _is_str_type(tp) -> bool:
    return tp is str or (
        typing.get_origin(tp) in (typing.Union, types.UnionType) and str in typing.get_args(tp)
    )


def parse_override_value(raw: str, tp):
    """A --set value as the field's type: YAML scalars, 'a,b' lists, strings kept verbatim."""
    text = raw.strip()
    if text.lower() in ("null", "none", "~"):
        return None
    if _is_str_type(tp):
        return raw
    if typing.get_origin(tp) is list and not text.startswith("["):
        return [t.strip() for t in text.split(",") if t.strip()]
    try:
        return _yaml_load(text)
    except Exception:  # noqa: BLE001 - yaml errors of a one-word value: keep the text, type check reports
        return raw


def apply_overrides(plan: Plan, overrides: Mapping[str, str] | list[str]) -> Plan:
    """A copy of ``plan`` with dotted-path overrides applied and type/range-checked.

    ``overrides`` maps 'training.lr' -> '3e-4' (or is a list of 'key=value'). Bad keys, types or values
    raise one FtplanError listing every problem. Whether the result still *fits* is the rules' job.
    """
    if not isinstance(overrides, Mapping):
        overrides = parse_set_options(overrides)
    data = plan_to_dict(plan)
    errors: list[str] = []
    for key, raw in overrides.items():
        tp, problem = _field_type(key)
        if problem:
            errors.append(f"{key}: {problem}")
            continue
        if dataclasses.is_dataclass(tp) or (
            typing.get_origin(tp) in (typing.Union, types.UnionType)
            and any(dataclasses.is_dataclass(a) for a in typing.get_args(tp))
            and raw.strip().lower() not in ("null", "none", "~")
        ):
            errors.append(f"{key}: is a section; set its fields (e.g. {key}.<field>=...) or 'null'")
            continue
        set_path(data, key, parse_override_value(raw, tp))
    if errors:
        raise PlanValidationError("--set", errors)
    return plan_from_dict(data, source="--set")


def parse_set_options(items) -> dict[str, str]:
    """['training.lr=3e-4', ...] -> {'training.lr': '3e-4'}; a bad item raises FtplanError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise FtplanError(f"--set {item!r}: expected key=value", hint="e.g. --set training.lr=1e-4")
        out[key.strip()] = value
    return out
