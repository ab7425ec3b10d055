"""Where a run puts things, derived from the plan folder and ``plan.output_dir`` (one place, no guessing)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Written into final/ after the model and tokenizer: `generate`, `chat` and a rerun trust final/ only with it.
FINAL_MARKER = "ftplan_complete.json"


@dataclass(frozen=True)
class RunPaths:
    """Every file and folder a run reads or writes. ``output`` is ``plan_dir / plan.output_dir``."""

    plan_dir: Path
    output: Path

    @classmethod
    def of(cls, plan_dir: str | Path, output_dir: str) -> RunPaths:
        plan_dir = Path(plan_dir).resolve()
        out = Path(output_dir)
        return cls(plan_dir=plan_dir, output=out if out.is_absolute() else plan_dir / out)

    @property
    def plan_yaml(self) -> Path:
        return self.plan_dir / "plan.yaml"

    @property
    def report(self) -> Path:
        return self.plan_dir / "REPORT.md"

    @property
    def deepspeed_config(self) -> Path:
        return self.plan_dir / "deepspeed.json"

    @property
    def launch_sh(self) -> Path:
        return self.plan_dir / "launch.sh"

    @property
    def checkpoints(self) -> Path:  # the Trainer's output_dir: checkpoint-N folders
        return self.output / "checkpoints"

    @property
    def final(self) -> Path:  # adapter (PEFT format) or full model, tokenizer beside
        return self.output / "final"

    @property
    def merged(self) -> Path:  # LoRA merged into the base weights (when plan.lora.merge_after)
        return self.output / "merged"

    @property
    def metrics(self) -> Path:
        return self.output / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.output / "tensorboard"

    @property
    def summary(self) -> Path:
        return self.output / "run_summary.json"

    @property
    def loss_curve(self) -> Path:
        return self.output / "loss_curve.png"

    @property
    def fallback_log(self) -> Path:
        return self.output / "fallbacks.jsonl"

    @property
    def base_eval(self) -> Path:  # base-model metrics, cached so a resumed run does not redo them
        return self.output / "base_eval.json"
