"""The closed sets of ftplan's vocabulary, each defined once: the CLI's click choices, the plan schema
(planner.plan.CHOICES), the estimator's validation (planner.memory) and the rules read them from here.

A name here is the plan.yaml name (docs/design.md, "One vocabulary"); the Literal types give the same sets
to type checkers.
"""

from __future__ import annotations

from typing import Literal, get_args

Task = Literal["sft", "chat", "continued-pretraining", "classification", "preference"]
TASKS: tuple[str, ...] = get_args(Task)

Method = Literal["full", "lora", "dora", "qlora", "ia3", "prompt", "prefix"]
METHODS: tuple[str, ...] = get_args(Method)
# methods that train peft LoRA adapters and read plan.yaml's lora: section
ADAPTER_METHODS: tuple[str, ...] = ("lora", "dora", "qlora")
# methods `ftplan estimate --method` compares (ia3 is planned only as an explicit choice)
ESTIMATE_METHODS: tuple[str, ...] = ("full", "lora", "qlora", "dora", "prompt", "prefix")

Precision = Literal["bf16", "fp16", "fp32"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

Distribution = Literal["single", "ddp", "zero1", "zero2", "zero3", "fsdp"]
DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)

AttnImplementation = Literal["sdpa", "flash_attention_2", "eager"]
ATTN_IMPLEMENTATIONS: tuple[str, ...] = get_args(AttnImplementation)

Optimizer = Literal["adamw", "adamw_foreach", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "sgd",
                    "adafactor"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)

# dataset record formats (planner.dataset.layouts reads and detects them)
FORMATS: tuple[str, ...] = ("alpaca", "chat", "prompt_completion", "text", "preference", "kto", "classification")

# experiment trackers the executor reports to (transformers' report_to names) and W&B's modes
TRACKING_BACKENDS: tuple[str, ...] = ("tensorboard", "mlflow", "wandb")
WANDB_MODES: tuple[str, ...] = ("offline", "online")

# LoRA shape when nothing decides it (the rules choose r per task and data size: planner/rules/lora.py);
# alpha = 2r, the rules' and LLaMA-Factory's convention.
DEFAULT_LORA_R = 16
DEFAULT_LORA_ALPHA = 2 * DEFAULT_LORA_R
