"""build_tokenizer(plan): the model's own tokenizer, with a chat template and a pad token guaranteed."""

from __future__ import annotations

from planner.errors import FtplanError
from planner.plan import Plan

# The documented default when a tokenizer ships no chat template (base models usually don't) and the
# plan sets none: ChatML, the format of Qwen2/OpenAI chat models. ``{% generation %}`` marks what the
# assistant says, so ``apply_chat_template(..., return_assistant_tokens_mask=True)`` (transformers
# tokenization_utils_base) can restrict the loss to it. The end-of-turn marker is the tokenizer's EOS,
# inside the generation block, so the model learns to stop and ``generate`` stops on eos_token_id.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}"
    "{%- generation %}{{- message['content'] + eos_token }}{%- endgeneration %}"
    "{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token + '\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


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
    if plan.data.chat_template:
        tok.chat_template = plan.data.chat_template
    elif not getattr(tok, "chat_template", None):
        tok.chat_template = DEFAULT_CHAT_TEMPLATE
    if tok.eos_token is None:
        raise FtplanError(
            f"model.name_or_path '{plan.model.name_or_path}': the tokenizer has no eos_token",
            hint="set eos_token in tokenizer_config.json",
        )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
