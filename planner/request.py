"""What the user asked for: the input of the rule engine (``planner.rules.make_plan``).

The CLI (`ftplan plan`, `ftplan go`) and the wizard both build a PlanRequest and call
``planner.rules.make_plan(request) -> PlanResult``; ``planner.render.write_plan_folder(result, out)``
writes plan.yaml, launch.sh, accelerate/DeepSpeed configs and REPORT.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Goal = Literal["quality", "balanced", "cost"]


@dataclass(frozen=True)
class PlanRequest:
    model: str  # catalog hub id, hub id or local folder
    data: str  # dataset file
    task: str  # sft | chat | continued-pretraining | classification | preference
    goal: Goal = "balanced"
    gpu: str | None = None  # catalog GPU name; None = detect with pynvml
    gpus: int | None = None  # count; None = detected / 1
    gpu_memory_gib: float | None = None  # override memory per GPU
    price_per_hour: float | None = None
    max_hours: float | None = None
    max_cost: float | None = None
    general_data: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)  # --set key=value (dotted plan paths)
    trust_remote_code: bool = False
    nodes: int = 1  # machines with `gpus` GPUs each (multi-node: launch.sh runs on every node)
    # --cpu-processes: a CPU plan with this many training processes per node (gloo; DDP or DeepSpeed ZeRO);
    # None = GPUs when there are any, else one CPU process
    cpu_processes: int | None = None
    columns: dict[str, str] = field(default_factory=dict)  # --columns: canonical name -> file column
    system_turn: str = "keep"  # --system-turn: keep | merge | drop (templates without a system role)
    merge_consecutive: bool = False  # --merge-consecutive (templates demanding strict alternation)
    tracking: tuple[str, ...] | None = None  # --tracking: report_to backends; None = the rule's default
    mlflow_uri: str | None = None  # --mlflow-uri: None = a local store under <plan>/output/mlruns
