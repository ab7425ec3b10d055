"""Held-out evaluation: loss, perplexity and the planned task metric (greedy generation), forgetting.

ROUGE-L is the LCS-based F-measure of Lin (2004), on whitespace tokens, beta = 1 (as
``rouge_score``'s default rougeL F1); implemented here because ``evaluate``/``rouge_score`` are not
dependencies.
"""

from __future__ import annotations

import contextlib
import math
import re

# Cap on generated tokens per eval answer: the longest reference plus a margin, never more than this.
MAX_EVAL_NEW_TOKENS = 256
GEN_BATCH = 16


def normalize(text: str) -> str:
    """Case- and whitespace-insensitive comparison form (SQuAD-style normalisation, minus articles)."""
    return re.sub(r"\s+", " ", text.strip().lower())


def exact_match(pred: str, ref: str) -> float:
    return float(normalize(pred) == normalize(ref))


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 (Lin 2004): LCS over tokens, harmonic mean of LCS/len(pred) and LCS/len(ref)."""
    p, r = normalize(pred).split(), normalize(ref).split()
    if not p or not r:
        return float(p == r)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


TASK_METRICS = {"exact_match": exact_match, "accuracy": exact_match, "rouge_l": rouge_l}


def perplexity(loss: float | None) -> float | None:
    if loss is None or not math.isfinite(loss):
        return None
    return math.exp(loss) if loss < 50 else float("inf")


def _unwrap(model):
    return getattr(model, "module", model)


def generate(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
    """Greedy answers to chat prompts (the tokenizer's chat template + generation prompt), batched."""
    import torch

    model = _unwrap(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only batched generation pads on the left
    out: list[str] = []
    try:
        for i in range(0, len(prompts), GEN_BATCH):
            texts = [
                tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                for p in prompts[i : i + GEN_BATCH]
            ]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    use_cache=True,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out


def task_metric(name: str, model, tokenizer, prompts, references) -> dict:
    """{metric: score, "samples": n, "examples": first few (prompt, reference, prediction)}."""
    if name not in TASK_METRICS or not prompts:
        return {}
    longest = max(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references)
    preds = generate(model, tokenizer, prompts, min(longest + 8, MAX_EVAL_NEW_TOKENS))
    fn = TASK_METRICS[name]
    score = sum(fn(p, r) for p, r in zip(preds, references)) / len(preds)
    examples = [
        {"prompt": pr[-1]["content"], "reference": r, "prediction": p}
        for pr, r, p in list(zip(prompts, references, preds))[:3]
    ]
    return {name: score, "samples": len(preds), "examples": examples}


@contextlib.contextmanager
def adapter_disabled(model):
    """The base model's behaviour: PEFT adapters off (peft PeftModel.disable_adapter), else unchanged."""
    inner = _unwrap(model)
    if hasattr(inner, "disable_adapter"):
        with inner.disable_adapter():
            yield
    else:
        yield


def evaluate_model(plan, trainer, tokenizer, data, *, generation: bool = True) -> dict:
    """Loss, perplexity, task metric and forgetting loss of ``trainer.model`` as it is now."""
    metrics: dict = {}
    if data.val is not None:
        res = trainer.evaluate(eval_dataset=data.val, metric_key_prefix="eval")
        metrics["loss"] = res.get("eval_loss")
        metrics["perplexity"] = perplexity(metrics["loss"])
        for key in ("eval_accuracy", "eval_rewards/accuracies", "eval_rewards/margins"):
            if key in res:
                metrics[key.removeprefix("eval_")] = res[key]
        if "accuracy" in res or "eval_accuracy" in res:
            metrics["accuracy"] = res.get("eval_accuracy")
    if data.general_val is not None and plan.evaluation.forgetting_check:
        res = trainer.evaluate(eval_dataset=data.general_val, metric_key_prefix="general")
        metrics["general_loss"] = res.get("general_loss")
        metrics["general_perplexity"] = perplexity(metrics["general_loss"])
    if generation and data.eval_prompts:
        metrics.update(
            task_metric(
                plan.evaluation.metric, trainer.model, tokenizer, data.eval_prompts, data.eval_references
            )
        )
    return metrics
