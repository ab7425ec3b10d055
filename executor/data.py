"""build_datasets(plan, tokenizer): rows -> validated, de-duplicated, split, formatted, tokenized.

Every record is first normalised to one of four shapes, whatever the file format:

* conversation: ``{"messages": [...]}`` ending with the assistant turn (sft, chat, label generation)
* text: ``{"text": ...}`` (continued pre-training, replay data)
* labelled text: ``{"text": ..., "label": ...}`` (classification with a head)
* preference: ``{"prompt": [...], "chosen": ..., "rejected": ...}`` (DPO)

Conversations are rendered with the tokenizer's chat template and tokenized here, with a
``completion_mask`` that is 1 on the assistant turns only (every assistant turn of a multi-turn chat,
plus its end-of-turn marker). TRL's SFTTrainer takes such a pre-tokenized dataset as is, builds the
labels from the mask (``completion_only_loss``), truncates to ``max_length`` and packs.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.errors import FtplanError
from planner.plan import Plan

# Which record formats each task can train on: one table, the planner's, so planning refuses exactly
# what training would refuse.
from planner.rules.inputs import FORMATS_FOR_TASK

# Refuse a file where more than this share of rows is unusable: that is a wrong file or wrong task,
# not a few bad rows (the profiler already reported the count it found at planning time).
MAX_INVALID_SHARE = 0.5
# ShareGPT role names -> chat-template roles (as TRL's maybe_convert_to_chatml does, trl/data_utils.py).
ROLE_ALIASES = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "user": "user",
    "assistant": "assistant",
    "system": "system",
}


@dataclass
class DataBundle:
    """What the trainer and the evaluator need, built once from the plan's files."""

    train: Any  # datasets.Dataset, trainer-ready
    val: Any | None  # datasets.Dataset, trainer-ready (None when no split was planned)
    eval_prompts: list[list[dict]] = field(default_factory=list)  # held-out conversations minus the answer
    eval_references: list[str] = field(default_factory=list)  # the held-out answers
    general_val: Any | None = None  # tokenized general text for the forgetting check
    labels: list[str] | None = None  # classification label set (sorted)
    stats: dict[str, int] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------


def read_records(path: str | Path, what: str = "data.path") -> list[tuple[int, Any]]:
    """(line or record number, record) pairs; a JSONL line that is not JSON becomes (line, error str)."""
    p = Path(path)
    if not p.is_file():
        raise FtplanError(f"{what} '{path}': no such file", hint="fix the path in plan.yaml or re-plan")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(p)
    if suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FtplanError(f"{what} '{path}': not valid JSON ({exc})") from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise FtplanError(f"{what} '{path}': a .json dataset must be a list of records")
        return list(enumerate(data, start=1))
    if suffix in (".csv", ".parquet"):
        import datasets

        try:
            ds = datasets.load_dataset(suffix[1:], data_files=str(p), split="train")
        except Exception as exc:  # noqa: BLE001 - arrow/csv errors of many types: one line for the user
            raise FtplanError(f"{what} '{path}': cannot read ({str(exc).splitlines()[0][:200]})") from None
        # CSV: line 1 is the header, so record i is on line i + 1.
        start = 2 if suffix == ".csv" else 1
        return list(enumerate(ds.to_list(), start=start))
    raise FtplanError(
        f"{what} '{path}': unsupported file type '{suffix}'", hint="use jsonl, json, csv or parquet"
    )


def _read_jsonl(p: Path) -> list[tuple[int, Any]]:
    out = []
    with p.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                out.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                out.append((lineno, f"not valid JSON ({exc.msg})"))
    return out


# ----------------------------------------------------------------------------------------------------
# normalising: record -> one of the four shapes, or a reason it is invalid
# ----------------------------------------------------------------------------------------------------


def _text(rec: dict, *keys: str) -> str | None:
    for k in keys:
        v = rec.get(k)
        if isinstance(v, str) and v.strip():
            return v
    return None


def _alpaca(rec: dict):
    instruction, output = _text(rec, "instruction"), _text(rec, "output", "response")
    if instruction is None or output is None:
        return None, "needs non-empty 'instruction' and 'output'"
    extra = rec.get("input")
    user = f"{instruction}\n\n{extra}" if isinstance(extra, str) and extra.strip() else instruction
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": output}]}, None


def _prompt_completion(rec: dict):
    prompt, completion = _text(rec, "prompt", "question"), _text(rec, "completion", "answer")
    if prompt is None or completion is None:
        return None, "needs non-empty 'prompt' and 'completion'"
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    }, None


def _messages(value) -> tuple[list[dict] | None, str | None]:
    if not isinstance(value, list) or not value:
        return None, "needs a non-empty 'messages' list"
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            return None, f"message {i} is not an object"
        role = ROLE_ALIASES.get(str(m.get("role", m.get("from", ""))).lower())
        content = m.get("content", m.get("value"))
        if role is None or not isinstance(content, str):
            return None, f"message {i} needs a role (user/assistant/system) and a string content"
        out.append({"role": role, "content": content})
    return out, None


def _chat(rec: dict):
    msgs, err = _messages(rec.get("messages", rec.get("conversations")))
    if err:
        return None, err
    while msgs and msgs[-1]["role"] != "assistant":  # trailing user turns have nothing to learn from
        msgs.pop()
    if not msgs or not msgs[-1]["content"].strip():
        return None, "has no assistant message to learn"
    return {"messages": msgs}, None


def _raw_text(rec: dict):
    text = _text(rec, "text", "content")
    return ({"text": text}, None) if text else (None, "needs a non-empty 'text'")


def _classification(rec: dict):
    text, label = _text(rec, "text", "sentence", "input"), rec.get("label")
    if isinstance(label, (int, bool)) or (isinstance(label, float) and label.is_integer()):
        label = str(int(label))
    if text is None or not isinstance(label, str) or not label.strip():
        return None, "needs non-empty 'text' and 'label'"
    return {"text": text, "label": label.strip()}, None


def _answer(value) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        msgs, err = _messages(value)
        if not err and msgs[-1]["role"] == "assistant" and msgs[-1]["content"].strip():
            return msgs[-1]["content"]
    return None


def _preference(rec: dict):
    prompt = rec.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        prompt_msgs = [{"role": "user", "content": prompt}]
    else:
        prompt_msgs, err = _messages(prompt)
        if err:
            return None, "needs a non-empty 'prompt' (text or messages)"
    chosen, rejected = _answer(rec.get("chosen")), _answer(rec.get("rejected"))
    if chosen is None or rejected is None:
        return None, "needs non-empty 'chosen' and 'rejected'"
    return {"prompt": prompt_msgs, "chosen": chosen, "rejected": rejected}, None


NORMALISERS: dict[str, Callable[[dict], tuple[dict | None, str | None]]] = {
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "chat": _chat,
    "text": _raw_text,
    "classification": _classification,
    "preference": _preference,
}


def _as_task(task: str, mode: str, row: dict) -> dict:
    """A normalised row in the shape the task trains on (classification by generation = a tiny chat)."""
    if task in ("sft", "chat") and "label" in row:
        return {
            "messages": [
                {"role": "user", "content": row["text"]},
                {"role": "assistant", "content": row["label"]},
            ]
        }
    if task == "classification" and mode == "generate":
        return {
            "messages": [
                {"role": "user", "content": row["text"]},
                {"role": "assistant", "content": row["label"]},
            ]
        }
    return row


def load_rows(plan: Plan) -> tuple[list[dict], dict[str, int]]:
    """Valid, de-duplicated rows of plan.data.path in the task's shape, and counts of what was dropped."""
    fmt, task, path = plan.data.format, plan.task, plan.data.path
    allowed = FORMATS_FOR_TASK.get(task, ())
    if fmt not in NORMALISERS or fmt not in allowed:
        raise FtplanError(
            f"data.format '{fmt}' cannot train task '{task}'",
            hint=f"task {task} needs rows in one of: {', '.join(allowed)}",
        )
    records = read_records(path)
    rows, seen, invalid, duplicates, first_bad = [], set(), 0, 0, None
    for lineno, rec in records:
        row, reason = (
            (None, rec)
            if isinstance(rec, str)
            else (NORMALISERS[fmt](rec) if isinstance(rec, dict) else (None, "is not an object"))
        )
        if row is None:
            invalid += 1
            first_bad = first_bad or (lineno, reason)
            continue
        key = json.dumps(row, sort_keys=True)
        if plan.data.drop_duplicates and key in seen:
            duplicates += 1
            continue
        seen.add(key)
        rows.append(_as_task(task, plan.training.classification_mode, row))
    total = len(records)
    if not rows or invalid > MAX_INVALID_SHARE * total:
        line, reason = first_bad or (0, "is empty")
        raise FtplanError(
            f"{path} line {line}: row {reason} ({invalid} of {total} rows do not match format '{fmt}' "
            f"for task '{task}')",
            hint="fix the rows or re-run `ftplan plan` so the format is detected again",
        )
    return rows, {"rows_read": total, "invalid_dropped": invalid, "duplicates_dropped": duplicates}


def split_rows(rows: list, plan: Plan) -> tuple[list, list]:
    """Seeded shuffle, then hold out ``val_rows`` (or ``val_split`` of the rows, at least one)."""
    n = len(rows)
    k = plan.data.val_rows if plan.data.val_rows > 0 else math.ceil(plan.data.val_split * n)
    k = min(k, n - 1) if n > 1 else 0
    order = list(range(n))
    random.Random(plan.training.seed).shuffle(order)
    val = [rows[i] for i in order[:k]]
    train = [rows[i] for i in order[k:]]
    return train, val


# ----------------------------------------------------------------------------------------------------
# tokenizing
# ----------------------------------------------------------------------------------------------------


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans the assistant says (answer + end-of-turn).

    Each assistant turn i starts where the rendering of ``messages[:i]`` with the generation prompt
    ends and stops at the end of the rendering of ``messages[:i+1]`` minus trailing whitespace, so the
    end-of-turn token (EOS, <|im_end|>, <|eot_id|>...) is learnt and the newline after it is not.
    """
    full = render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(render(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        upto = render(tokenizer, messages[: i + 1])
        end = len(upto.rstrip())
        if full.startswith(upto[:end]) and start < end:
            spans.append((start, end))
    return full, spans


def tokenize_conversation(tokenizer, messages: list[dict]) -> dict[str, list[int]]:
    """input_ids and a completion_mask (1 = assistant token) via the fast tokenizer's offsets."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= a < e for s, e in spans)) for a, _ in enc["offset_mapping"]]
    return {"input_ids": list(enc["input_ids"]), "completion_mask": mask}


def tokenize_text(tokenizer, text: str) -> dict[str, list[int]]:
    """Raw text + EOS, every token trained (continued pre-training, replay)."""
    ids = list(tokenizer(text + tokenizer.eos_token, add_special_tokens=True)["input_ids"])
    return {"input_ids": ids, "completion_mask": [1] * len(ids)}


def _lm_dataset(tokenizer, rows: list[dict]):
    import datasets

    if not getattr(tokenizer, "is_fast", False):
        raise FtplanError(
            "the tokenizer is not a fast (Rust) tokenizer", hint="save the model with tokenizer.json"
        )
    feats = [
        tokenize_conversation(tokenizer, r["messages"])
        if "messages" in r
        else tokenize_text(tokenizer, r["text"])
        for r in rows
    ]
    return datasets.Dataset.from_list(feats)


def _head_dataset(tokenizer, rows: list[dict], labels: list[str], seq_len: int):
    import datasets

    index = {label: i for i, label in enumerate(labels)}
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=seq_len)
    return datasets.Dataset.from_dict(
        {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": [index.get(r["label"], -100) for r in rows],
        }
    )


def _preference_dataset(rows: list[dict]):
    import datasets

    # Conversational preference format (TRL docs, "Dataset formats"): DPOTrainer applies the chat template.
    return datasets.Dataset.from_list(
        [
            {
                "prompt": r["prompt"],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    )


def general_texts(plan: Plan, tokenizer) -> list[str]:
    """The general (replay / forgetting) corpus as plain text: text rows as is, other rows rendered."""
    out = []
    for _, rec in read_records(plan.data.general_path, what="data.general_path"):
        if not isinstance(rec, dict):
            continue
        for fmt in ("text", "chat", "alpaca", "prompt_completion"):
            row, _ = NORMALISERS[fmt](rec)
            if row is not None:
                out.append(row["text"] if "text" in row else render(tokenizer, row["messages"]))
                break
    if not out:
        raise FtplanError(f"data.general_path '{plan.data.general_path}': no usable text rows")
    return out


def _replay(plan: Plan, tokenizer, n_train: int) -> tuple[list[dict], list[dict]]:
    """(rows mixed into training, held-out rows for the forgetting check) from the general corpus.

    ``replay_ratio`` r is the general share of the mix, so r/(1-r) general rows per task row
    (e.g. 0.2 -> 80/20, the replay recipe of the continual-learning literature, Scialom et al. 2022).
    """
    if not plan.data.general_path:
        return [], []
    texts = general_texts(plan, tokenizer)
    random.Random(plan.training.seed + 1).shuffle(texts)
    held = texts[: min(len(texts) // 5 or 1, plan.evaluation.max_eval_samples or 1)]
    pool = texts[len(held) :] or texts
    r = plan.data.replay_ratio
    want = round(n_train * r / (1 - r)) if r > 0 else 0
    mixed = [{"text": pool[i % len(pool)]} for i in range(want)]
    return mixed, [{"text": t} for t in held]


def build_datasets(plan: Plan, tokenizer) -> DataBundle:
    """Read, validate, de-duplicate, split, mix replay data and tokenize, as the plan says."""
    import datasets

    datasets.disable_progress_bars()  # one bar per map() call drowns the training progress bar
    rows, stats = load_rows(plan)
    train_rows, val_rows = split_rows(rows, plan)
    stats.update(train_rows=len(train_rows), val_rows=len(val_rows))
    head = plan.task == "classification" and plan.training.classification_mode == "head"
    if plan.data.general_path and (plan.task == "preference" or head):
        # Replay and the forgetting check are language-modelling losses on general text; DPO pairs and a
        # classification head have no such loss, so the general corpus is not used for these tasks.
        print(f"ftplan: data.general_path is not used for task '{plan.task}' (no language-modelling loss)")
    if plan.task == "preference":
        return DataBundle(
            train=_preference_dataset(train_rows),
            val=_preference_dataset(val_rows) if val_rows else None,
            stats=stats,
        )
    if plan.task == "classification" and plan.training.classification_mode == "head":
        labels = sorted({r["label"] for r in rows})
        seq = plan.training.seq_len
        return DataBundle(
            train=_head_dataset(tokenizer, train_rows, labels, seq),
            val=_head_dataset(tokenizer, val_rows, labels, seq) if val_rows else None,
            eval_references=[r["label"] for r in val_rows],
            labels=labels,
            stats=stats,
        )
    replay, general_held = _replay(plan, tokenizer, len(train_rows))
    stats["replay_rows"] = len(replay)
    mixed = train_rows + replay
    random.Random(plan.training.seed + 2).shuffle(mixed)
    limit = plan.evaluation.max_eval_samples
    convs = [r for r in val_rows if "messages" in r][:limit]
    labels = sorted({r["messages"][-1]["content"] for r in rows}) if plan.task == "classification" else None
    return DataBundle(
        train=_lm_dataset(tokenizer, mixed),
        val=_lm_dataset(tokenizer, val_rows) if val_rows else None,
        eval_prompts=[r["messages"][:-1] for r in convs],
        eval_references=[r["messages"][-1]["content"] for r in convs],
        general_val=_lm_dataset(tokenizer, general_held) if general_held else None,
        labels=labels,
        stats=stats,
    )
