"""Load a trained plan's model for ``ftplan chat`` / ``ftplan generate`` (and tests)."""

from __future__ import annotations

import os

from executor.model import is_head_classification, torch_dtype
from executor.paths import FINAL_MARKER, RunPaths
from planner.errors import FtplanError
from planner.plan import load_plan


def load_trained(plan_dir: str | os.PathLike):
    """(model, tokenizer) from ``<output>/final``: base + PEFT adapter, or the full fine-tuned model.

    The base of a QLoRA adapter is loaded unquantized in bf16 (inference needs no 4-bit savings on a
    tiny model, and it is what ``merged/`` contains).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plan = load_plan(plan_dir)
    if is_head_classification(plan):
        raise FtplanError(
            "this plan trains a classification head; chat/generate need a generative model",
            hint="use classification_mode: generate, or load output/final with transformers",
        )
    paths = RunPaths.of(plan_dir, plan.output_dir)
    final = paths.final
    if not final.is_dir():
        raise FtplanError(f"{final}: no trained model yet", hint=f"run `ftplan run {plan_dir}` first")
    if not (final / FINAL_MARKER).is_file():
        raise FtplanError(
            f"{final}: incomplete (the run stopped while saving the final model)",
            hint=f"run `ftplan run {plan_dir}` again: it resumes from the last checkpoint and saves it",
        )
    tokenizer = AutoTokenizer.from_pretrained(str(final))
    dtype = torch_dtype("bf16" if plan.strategy.method == "qlora" else plan.strategy.precision)
    if (final / "adapter_config.json").is_file():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(
            plan.model.name_or_path,
            dtype=dtype,
            use_safetensors=True,
            trust_remote_code=plan.model.trust_remote_code,
            revision=plan.model.revision,
        )
        model = PeftModel.from_pretrained(base, str(final))
    else:
        model = AutoModelForCausalLM.from_pretrained(
            str(final), dtype=dtype, use_safetensors=True, trust_remote_code=plan.model.trust_remote_code
        )
    import torch

    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, tokenizer


def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 128, temperature: float = 0.0) -> str:
    """One assistant turn for ``messages`` with the tokenizer's chat template (greedy when temperature=0)."""
    import torch

    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    sample = temperature > 0
    with torch.no_grad():
        ids = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
