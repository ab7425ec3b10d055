"""Canonical examples -> the token ids the trainer sees. One code path for the profile and the run.

``profile`` counts with these functions and a ``tokenizers.Tokenizer`` loaded from the model's
tokenizer.json; the executor trains what the same functions return for the transformers tokenizer's own
backend (``tokenizer.backend_tokenizer``, the same Rust object). So the plan's lengths are the trained
lengths, by construction; tests also compare them with ``apply_chat_template`` and with TRL's own
tokenization of preference pairs.

Conversations: the text is the chat template's rendering of the (fixed) messages and tools, tokenized
without special tokens (as ``apply_chat_template(tokenize=True)`` does); the completion mask covers what
each trained assistant turn says plus its end-of-turn marker (found by rendering the prefix with the
generation prompt, as TRL's ``assistant_only_loss`` masks do; when a template renders a prefix
differently, the turn's own text is searched). Sequences longer than ``seq_len`` are cut at the end
(TRL's ``keep_start``); an example with no trained token left is not trainable (counted by the caller).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

from planner.dataset.chat import NO_FIXES, ChatTemplate, TemplateFixes, TemplateRefusal, apply_fixes


@dataclass
class Encoded:
    """One training sequence (or the longer of a preference pair) and what it trains."""

    input_ids: list[int]
    completion_mask: list[int]  # 1 = token in the loss
    first_trained: int  # index of the first trained token (len(input_ids) when none)
    lost: list[str]  # content the template did not render (tool list, tool calls, reasoning)


def _encode(tok, text: str, special: bool = False):
    return tok.encode(text, add_special_tokens=special)


def _missing_content(rendered: str, messages: list[dict], tools) -> list[str]:
    """Content the template dropped without a word: tools, tool calls, reasoning not in the text."""
    lost = []
    for tool in tools or []:
        fn = tool.get("function", tool) if isinstance(tool, dict) else {}
        if isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"] not in rendered:
            lost.append("tool list")
            break
    for m in messages:
        for call in m.get("tool_calls") or []:
            if call["function"]["name"] not in rendered:
                lost.append("tool call")
                break
        reasoning = m.get("reasoning_content")
        if isinstance(reasoning, str) and reasoning.strip()[:40] not in rendered:
            lost.append("reasoning")
    return lost


def assistant_spans(template: ChatTemplate, messages: list[dict], tools, full: str) -> list[tuple[int, int]]:
    """Character spans of ``full`` that the trained assistant turns say, end-of-turn marker included."""
    spans: list[tuple[int, int]] = []
    search_from = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        span = None
        try:
            start = len(template.render(messages[:i], tools, add_generation_prompt=True)) if i else 0
            upto = full if i == len(messages) - 1 else template.render(messages[: i + 1], tools)
            end = len(upto.rstrip())
            if start < end and full.startswith(upto[:end]):
                span = (start, end)
        except Exception:  # noqa: BLE001 - a template refusing a prefix: fall back to searching the text
            span = None
        if span is None and m.get("content"):
            at = full.find(m["content"], search_from)
            if at >= 0:
                end = at + len(m["content"])
                eos = template.eos_token
                if eos and full.startswith(eos, end):
                    end += len(eos)
                span = (at, end)
        if span is not None:
            search_from = span[1]
            if m.get("train") is not False:
                spans.append(span)
    return spans


def _mask(offsets, spans: list[tuple[int, int]]) -> list[int]:
    """1 for every token whose first character lies in a span. Token start offsets never decrease, so each
    span is one slice found by bisection (a Python loop over tokens is the profile's slowest step)."""
    starts = [a for a, _ in offsets]
    mask = [0] * len(starts)
    for s, e in spans:
        lo, hi = bisect_left(starts, s), bisect_left(starts, e)
        mask[lo:hi] = [1] * (hi - lo)
    return mask


def render_conversation(
    template: ChatTemplate, messages: list[dict], tools=None, fixes: TemplateFixes = NO_FIXES
) -> tuple[str, list[tuple[int, int]], list[str]]:
    """(text, trained character spans, content the template dropped); TemplateRefusal when it refuses."""
    msgs = apply_fixes(messages, fixes)
    full = template.render(msgs, tools)
    spans = sorted(assistant_spans(template, msgs, tools, full))
    return full, spans, _missing_content(full, msgs, tools)


def _encoded(enc, spans: list[tuple[int, int]], lost: list[str]) -> Encoded:
    mask = _mask(enc.offsets, spans)
    first = mask.index(1) if 1 in mask else len(mask)
    return Encoded(list(enc.ids), mask, first, lost)


def encode_conversation(
    template: ChatTemplate, tok, messages: list[dict], tools=None, fixes: TemplateFixes = NO_FIXES
) -> Encoded:
    """input_ids and completion mask of one conversation; TemplateRefusal when the template refuses it."""
    full, spans, lost = render_conversation(template, messages, tools, fixes)
    return _encoded(_encode(tok, full), spans, lost)


def encode_conversations(
    template: ChatTemplate, tok, examples: list[dict], fixes: TemplateFixes = NO_FIXES
) -> list[Encoded | TemplateRefusal]:
    """encode_conversation for many ``{"messages", "tools"}`` examples with one ``encode_batch`` call (the
    Rust tokenizer uses every core); a refused example gives its TemplateRefusal in its place."""
    rendered: list = []
    for ex in examples:
        try:
            rendered.append(render_conversation(template, ex["messages"], ex.get("tools"), fixes))
        except TemplateRefusal as exc:
            rendered.append(exc)
    ok = [r for r in rendered if not isinstance(r, TemplateRefusal)]
    encs = iter(tok.encode_batch([r[0] for r in ok], add_special_tokens=False) if ok else [])
    return [r if isinstance(r, TemplateRefusal) else _encoded(next(encs), r[1], r[2]) for r in rendered]


def encode_text(tok, text: str, eos_token: str) -> Encoded:
    """Raw text + EOS with the tokenizer's own special tokens (BOS); every token trained."""
    ids = list(_encode(tok, text + (eos_token or ""), special=True).ids)
    return Encoded(ids, [1] * len(ids), 0, [])


def encode_labelled(tok, text: str) -> Encoded:
    """Text for a classification head, with the tokenizer's special tokens; the label is not a token."""
    ids = list(_encode(tok, text, special=True).ids)
    return Encoded(ids, [0] * len(ids), len(ids), [])


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def encode_pair(
    template: ChatTemplate, tok, prompt: list[dict], answers: list[list[dict]], tools=None,
    fixes: TemplateFixes = NO_FIXES,
) -> tuple[int, list[int]]:  # fmt: skip
    """(prompt tokens, prompt+answer lengths) as TRL's DPO/KTO tokenization counts them.

    TRL (trainer/dpo_trainer.py ``_prepare_dataset``) renders the prompt with the generation prompt and
    each prompt+answer conversation, tokenizes both and starts the answer where they diverge.
    """
    p = apply_fixes(prompt, fixes)  # the fixes concern the prompt (system turn); answers are kept as given
    prompt_ids = _encode(tok, template.render(p, tools, add_generation_prompt=True)).ids
    lengths, shared = [], len(prompt_ids)
    for answer in answers:
        ids = _encode(tok, template.render(p + answer, tools)).ids
        shared = min(shared, common_prefix(prompt_ids, ids))
        lengths.append(len(ids))
    return shared, lengths


def truncate(enc: Encoded, seq_len: int) -> Encoded:
    """The first ``seq_len`` tokens (TRL truncation_mode keep_start)."""
    if len(enc.input_ids) <= seq_len:
        return enc
    mask = enc.completion_mask[:seq_len]
    return Encoded(enc.input_ids[:seq_len], mask, min(enc.first_trained, seq_len), enc.lost)
