"""build_tokenizer(plan): the model's own tokenizer, with the plan's chat template and a pad token."""

from __future__ import annotations

from planner.dataset.chat import template_of_tokenizer
from planner.errors import FtplanError
from planner.plan import Plan


def build_tokenizer(plan: Plan):
    """AutoTokenizer for ``plan.model``; chat template = plan's, else the tokenizer's, else the default.

    A tokenizer without a pad token gets EOS as pad (the usual choice for decoder-only models; padding
    positions are masked out of attention and loss, so the choice does not change training).
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(
            plan.model.name_or_path,
            revision=plan.model.revision,
            trust_remote_code=plan.model.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise FtplanError(
            f"model.name_or_path '{plan.model.name_or_path}': cannot load the tokenizer ({_first_line(exc)})",
            hint="point plan.yaml at a local model folder with tokenizer files or a reachable hub id",
        ) from None
    # The template the plan was counted with (planner.dataset.chat): the plan's, else the tokenizer's, else
    # ftplan's default ChatML; set on the tokenizer so TRL's DPO tokenization, evaluation and chat use it too.
    tok.chat_template = template_of_tokenizer(tok, plan.data.chat_template).text
    if tok.eos_token is None:
        raise FtplanError(
            f"model.name_or_path '{plan.model.name_or_path}': the tokenizer has no eos_token",
            hint="set eos_token in tokenizer_config.json",
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if plan.model.added_tokens:
        # model.added_tokens: new vocabulary entries (tokens already in the vocabulary are skipped by the
        # tokenizer); executor.model resizes the embeddings to match
        tok.add_tokens(list(plan.model.added_tokens))
    return tok


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
