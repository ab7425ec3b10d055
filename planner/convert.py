"""The one converter between a Plan (plan.yaml, what the executor runs) and the estimator's TrainSetup.

Invariant: ``setup_from_plan`` is the only place a plan becomes a setup, and ``plan_values`` the only place
a setup becomes plan values; for every field the plan decides, ``plan_values(setup_from_plan(plan))``
reads back the plan's own values (tests/test_plan_setup_converter.py checks it on every golden plan and
the round trip the other way on varied setups). The names are the same on both sides (plan.yaml's win):
``strategy.precision`` is ``TrainSetup.precision``, ``lora.target_modules`` is
``TrainSetup.lora_target_modules`` (the LoRA section flattened with a ``lora_`` prefix), and
``training.micro_batch`` counts rows on both sides (a DPO row is one chosen/rejected pair; the setup's
``sequences_per_row`` says the trainer runs two sequences for it).

What the plan does not store but the estimator must model comes from what the executor's trainer does
for the plan's task (:func:`trainer_traits`).
"""

from __future__ import annotations

from planner.memory import TrainSetup
from planner.plan import LoraSection, Plan, world_size
from planner.vocab import ADAPTER_METHODS

# plan.yaml strategy: fields that are TrainSetup fields of the same name
STRATEGY_FIELDS = ("method", "distribution", "precision", "mixed_precision", "offload_optimizer", "offload_params",
                   "attn_implementation", "gradient_checkpointing", "optimizer", "num_virtual_tokens",
                   "qlora_upcast", "double_quant")
TRAINING_FIELDS = ("seq_len", "micro_batch", "grad_accum", "fused_loss")
# plan.yaml lora: field -> TrainSetup field (the section flattened with a lora_ prefix, but for the two
# that peft itself names without one)
LORA_FIELDS = {"r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout",
               "target_modules": "lora_target_modules", "modules_to_save": "modules_to_save",
               "adapter_dtype": "adapter_dtype"}


def trainer_traits(task: str, packing: bool, classification_mode: str = "generate", gpu: bool = True,
                   fused_loss: bool = True) -> dict:
    """What the executor's trainer does that the estimator must model (executor/trainer.py): TRL
    SFTTrainer/DPOTrainer compute the loss through TRL's fused LM head (no T x V logits); a head
    classifier uses plain transformers Trainer (``model(**batch).loss``); DPO keeps a reference policy
    (a frozen copy of the weights when the whole model is trained; memory.py counts it for full only) and
    runs chosen and rejected of each row in one forward (two sequences per row); unpacked batches are
    padded and carry an attention mask (packed ones are padding-free).
    ``fused_loss`` False (training.fused_loss) takes the SFT loss from the model's own forward instead."""
    head = task == "classification" and classification_mode == "head"
    packed = packing and task != "preference" and not head
    return {"fused_loss": fused_loss and not head, "reference_model": task == "preference",
            "sequences_per_row": 2 if task == "preference" else 1,
            "padding_mask": not packed, "device": "cuda" if gpu else "cpu"}


def setup_from_plan(plan: Plan) -> TrainSetup:
    """The TrainSetup the executor will run for this plan (what the estimator models)."""
    s, t, lo = plan.strategy, plan.training, plan.lora or LoraSection()
    adapter = s.method in ADAPTER_METHODS  # other methods train no adapter: no dropout mask, nothing saved
    return TrainSetup(
        **{name: getattr(s, name) for name in STRATEGY_FIELDS},
        seq_len=t.seq_len,
        micro_batch=t.micro_batch,
        grad_accum=t.grad_accum,
        gpus=world_size(plan),
        added_tokens=len(plan.model.added_tokens),
        gpu_kind=plan.hardware.gpu or "",
        lora_r=lo.r,
        lora_alpha=lo.alpha,
        lora_target_modules=tuple(lo.target_modules),
        lora_dropout=lo.dropout if adapter else 0.0,
        adapter_dtype=lo.adapter_dtype if adapter else "fp32",
        modules_to_save=tuple(lo.modules_to_save) if adapter else (),
        **trainer_traits(plan.task, t.packing, t.classification_mode, gpu=bool(plan.hardware.gpu),
                         fused_loss=t.fused_loss),
    )


def plan_values(setup: TrainSetup, *, lora: bool | None = None) -> dict[str, object]:
    """The plan.yaml values (dotted path -> value) a setup decides: the inverse of :func:`setup_from_plan`
    for every field the plan stores. ``training.fused_loss`` is the setup's (a head classifier's setup has
    it False whatever the plan says: the plan's value is kept there by the caller). The lora section is
    included for the adapter methods (or when ``lora`` says so)."""
    out: dict[str, object] = {f"strategy.{name}": getattr(setup, name) for name in STRATEGY_FIELDS}
    out.update({f"training.{name}": getattr(setup, name) for name in TRAINING_FIELDS})
    if setup.method in ADAPTER_METHODS if lora is None else lora:
        for name, setup_name in LORA_FIELDS.items():
            value = getattr(setup, setup_name)
            out[f"lora.{name}"] = list(value) if isinstance(value, tuple) else value
    return out



# the memory figures of plan.yaml's estimate section, as planner.memory.MemoryBreakdown names them
MEMORY_FIELDS = ("weights", "gradients", "optimizer", "activations", "temporary", "peak_allocated", "overhead",
                 "total", "cpu_bytes")


def memory_values(m) -> dict[str, int]:
    """A MemoryBreakdown's figures as plan.yaml's estimate section stores them (bytes, int)."""
    return {name: int(getattr(m, name)) for name in MEMORY_FIELDS}


def with_memory_estimate(plan: Plan, spec) -> Plan:
    """``plan`` with its estimate's memory figures recomputed for the settings it now has (after an OOM
    fallback or a hand edit), through the same converter and estimator the rules used; time, cost and
    the verdict are left as planned."""
    from dataclasses import replace

    from planner.memory import estimate_memory

    memory = memory_values(estimate_memory(spec, setup_from_plan(plan)))
    return replace(plan, estimate=replace(plan.estimate, **memory))
