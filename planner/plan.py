"""plan.yaml: the single source of truth between the planner and the executor.

INTERFACE: the dataclasses below are the schema (version 1). ``load_plan(path) -> Plan`` validates
every field (unknown keys, wrong types, out-of-range values, all reported together with their field
paths) and ``save_plan(plan, path)`` writes it atomically. The executor reads only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SCHEMA_VERSION = 1

Task = Literal["sft", "chat", "continued-pretraining", "classification", "preference"]


@dataclass
class ModelSection:
    name_or_path: str  # what from_pretrained receives (hub id or local folder)
    architecture: str = ""
    model_type: str = ""
    total_params: int = 0
    source: str = "catalog"
    revision: str | None = None
    trust_remote_code: bool = False  # off unless the user asks (security)


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


@dataclass
class HardwareSection:
    gpu: str | None = None  # catalog name or None for CPU
    count: int = 1
    nodes: int = 1
    memory_gb: float = 0.0
    bf16: bool = False
    detected: bool = False
    price_per_hour: float = 0.0  # USD per GPU-hour used for the cost estimate


@dataclass
class LoraSection:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    use_dora: bool = False
    merge_after: bool = False  # also save a merged model


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
    optimizer: str = "adamw"  # adamw | adamw_8bit | paged_adamw_8bit | sgd | adafactor
    num_virtual_tokens: int = 20  # prompt / prefix tuning


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
    estimate: EstimateSection = field(default_factory=EstimateSection)
    output_dir: str = "output"  # relative to the plan folder
    decisions: list[Decision] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
