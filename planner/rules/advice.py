"""Whether to fine-tune at all: the seeds' fine-tuning vs prompting/RAG matrix, applied to what the
data shows (size, task, response length)."""

from __future__ import annotations

from dataclasses import dataclass

from planner.rules.common import SEED_GUIDE, SEED_MATRIX

FEW_SHOT_ROWS = 50  # with this few examples, few-shot prompting can use them directly (seeds/002 §1)
KNOWLEDGE_CORPUS_TOKENS = 2_000_000  # a small corpus of facts is better retrieved than trained in


@dataclass(frozen=True)
class Advice:
    verdict: str  # fine-tune | prompting | rag | hybrid
    message: str
    source: str


def advice_rule(task: str, valid_rows: int, total_tokens: int, response_tokens_mean: float) -> list[Advice]:
    """Advice beside the plan (the plan is still written: the user decides)."""
    out: list[Advice] = []
    if valid_rows < FEW_SHOT_ROWS and task in ("sft", "chat", "classification"):
        out.append(
            Advice(
                "prompting",
                f"only {valid_rows} examples: try few-shot prompting with them first; "
                "fine-tune once you have a few hundred good ones",
                SEED_GUIDE + " 'Start with Prompt Engineering'",
            )
        )
    if task == "continued-pretraining" and total_tokens < KNOWLEDGE_CORPUS_TOKENS:
        out.append(
            Advice(
                "rag",
                f"a {total_tokens / 1e6:.1f}M-token corpus teaches facts poorly through training; "
                "if the goal is answering from these documents (or they change often, or answers need "
                "sources), retrieval (RAG) is the better tool",
                SEED_MATRIX + " 'Frequently changing information', 'Factual question answering'",
            )
        )
    if task in ("sft", "chat") and 0 < response_tokens_mean <= 8 and valid_rows >= FEW_SHOT_ROWS:
        out.append(
            Advice(
                "hybrid",
                "very short answers look like factual lookups: if they are facts that change "
                "or need attribution, combine the tuned model with retrieval (hybrid)",
                SEED_MATRIX,
            )
        )
    if not out and task == "continued-pretraining":
        out.append(
            Advice(
                "fine-tune",
                f"a {total_tokens / 1e6:.0f}M-token domain corpus: continued pretraining "
                "embeds the domain's vocabulary and patterns; add RAG for facts that change",
                SEED_MATRIX + " 'New domain knowledge'",
            )
        )
    elif not out:
        out.append(
            Advice(
                "fine-tune",
                f"{task} with {valid_rows} examples teaches behaviour (format, tone, task "
                "skill), which fine-tuning does best; use RAG beside it for fast-changing facts",
                SEED_MATRIX + " 'Behavioral change'; " + SEED_GUIDE + " §1.3",
            )
        )
    return out
