"""build_datasets(plan, tokenizer): the plan's rows, read and tokenized by the planner's own data path.

Reading, column mapping, normalisation and task shaping are ``planner.dataset`` (the code ``ftplan
profile``/``plan`` counted with); conversations are rendered by the planner's chat-template renderer and
tokenized by ``planner.dataset.encode`` with this tokenizer's Rust backend, so every row trains with the
token length the plan was sized by. Here the rows are de-duplicated, split, mixed with replay data,
cut to ``training.seq_len`` (counted) and handed over: pre-tokenized ``input_ids`` + ``completion_mask``
to TRL's SFTTrainer (it packs), conversational pairs to DPOTrainer, ids + labels to the HF Trainer.
Rows with no trained token within ``seq_len`` are dropped and counted; none left is an error before
training starts.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from planner.dataset.chat import ChatTemplate, TemplateFixes, TemplateRefusal, apply_fixes, template_of_tokenizer
from planner.dataset.encode import Encoded, encode_conversations, encode_labelled, encode_pair, encode_text, truncate
from planner.dataset.layouts import format_of, normalise
from planner.dataset.profile import example_key, shaped_rows
from planner.dataset.readers import BadRow, iter_records
from planner.errors import FtplanError
from planner.plan import Plan

# Which record formats each task can train on: one table, the planner's, so planning refuses exactly
# what training would refuse.
from planner.rules.inputs import FORMATS_FOR_TASK

# Refuse a file where more than this share of rows is unusable: that is a wrong file or wrong task,
# not a few bad rows (the profiler already reported the count it found at planning time).
MAX_INVALID_SHARE = 0.5
ENCODE_BATCH = 256  # rows per batched tokenizer call (planner.dataset.profile measures in the same batches)


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
# reading: the planner's data path (planner.dataset), so the rows that train are the rows the plan counted
# ----------------------------------------------------------------------------------------------------


def fixes_of(plan: Plan) -> TemplateFixes:
    return TemplateFixes(plan.data.system_turn, plan.data.merge_consecutive)


def _records(path: str, what: str):
    """The records of a plan's data file (planner.dataset.readers), or one line naming the plan field."""
    if not Path(path).is_file():
        raise FtplanError(f"{what} '{path}': no such file", hint="fix the path in plan.yaml or re-plan")
    return iter_records(path)


def read_rows(plan: Plan):
    """plan.data.path's rows shaped for the plan's task (planner.dataset.profile.shaped_rows: the profile's)."""
    records = _records(plan.data.path, "data.path")
    return shaped_rows(records, plan.data.format, plan.task, plan.data.columns, plan.training.classification_mode)


def load_rows(plan: Plan) -> tuple[list[dict], dict[str, int]]:
    """Valid, de-duplicated rows of plan.data.path in the task's shape, and counts of what was dropped."""
    fmt, task, path = plan.data.format, plan.task, plan.data.path
    allowed = FORMATS_FOR_TASK.get(task, ())
    if fmt not in allowed:
        raise FtplanError(
            f"data.format '{fmt}' cannot train task '{task}'",
            hint=f"task {task} needs rows in one of: {', '.join(allowed)}",
        )
    rows, seen, invalid, duplicates, total, first_bad = [], set(), 0, 0, 0, None
    skipped: Counter[str] = Counter()
    for row in read_rows(plan):
        total += 1
        if row.example is None:
            invalid += 1
            first_bad = first_bad or (row.line, row.reason)
            continue
        key = example_key(row.example)
        if plan.data.drop_duplicates and key in seen:
            duplicates += 1
            continue
        seen.add(key)
        skipped.update(row.notes)
        rows.append(row.example)
    if not rows or invalid > MAX_INVALID_SHARE * total:
        line, reason = first_bad or (0, "is empty")
        raise FtplanError(
            f"{path} line {line}: {reason} ({invalid} of {total} rows do not match format '{fmt}' for task '{task}')",
            hint="fix the rows or re-run `ftplan plan` so the format is detected again",
        )
    stats = {"rows_read": total, "invalid_dropped": invalid, "duplicates_dropped": duplicates}
    stats.update({f"skipped: {k}": v for k, v in skipped.items()})
    return rows, stats


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
# tokenizing: planner.dataset.encode with the tokenizer's own Rust backend (the profile's code path)
# ----------------------------------------------------------------------------------------------------


def chat_template(plan: Plan, tokenizer) -> ChatTemplate:
    return template_of_tokenizer(tokenizer, plan.data.chat_template)


def _backend(tokenizer):
    if not getattr(tokenizer, "is_fast", False):
        raise FtplanError("the tokenizer is not a fast (Rust) tokenizer", hint="save the model with tokenizer.json")
    return tokenizer.backend_tokenizer


def encode_rows(plan: Plan, template: ChatTemplate, tok, rows: list[dict]) -> list[Encoded]:
    """Language-modelling rows as the trainer sees them (before truncation), conversations tokenized in
    batches by the profile's own function (planner.dataset.encode.encode_conversations)."""
    out: list[Encoded] = []
    for start in range(0, len(rows), ENCODE_BATCH):
        batch = rows[start : start + ENCODE_BATCH]
        convs = iter(encode_conversations(template, tok, [r for r in batch if "messages" in r], fixes_of(plan)))
        for row in batch:
            enc = next(convs) if "messages" in row else encode_text(tok, row["text"], template.eos_token)
            if isinstance(enc, TemplateRefusal):
                raise FtplanError(
                    f"{plan.data.path}: the chat template refuses a conversation ({enc})",
                    hint="re-plan: `ftplan plan` names the rows and the fix (--system-turn, --merge-consecutive)",
                )
            out.append(enc)
    return out


def _lm_dataset(plan: Plan, tokenizer, rows: list[dict], counts: Counter | None = None):
    """input_ids + completion_mask per row, cut to seq_len (raw text is chunked by packing instead);
    rows with no trained token left are dropped and counted in ``counts``."""
    import datasets

    counts = Counter() if counts is None else counts
    seq_len, chunked = plan.training.seq_len, plan.task == "continued-pretraining"
    feats = []
    for enc in encode_rows(plan, chat_template(plan, tokenizer), _backend(tokenizer), rows):
        counts.update(f"skipped: {kind} not rendered by the chat template" for kind in enc.lost)
        if not chunked and len(enc.input_ids) > seq_len:
            enc = truncate(enc, seq_len)
            counts["truncated_rows"] += 1
        if not any(enc.completion_mask):
            counts["untrained_dropped"] += 1
            continue
        feats.append({"input_ids": enc.input_ids, "completion_mask": enc.completion_mask})
    return datasets.Dataset.from_list(feats)


def _head_dataset(plan: Plan, tokenizer, rows: list[dict], labels: list[str], counts: Counter | None = None):
    import datasets

    tok, seq_len = _backend(tokenizer), plan.training.seq_len
    index = {label: i for i, label in enumerate(labels)}
    ids = []
    for r in rows:
        enc = encode_labelled(tok, r["text"])
        if len(enc.input_ids) > seq_len and counts is not None:
            counts["truncated_rows"] += 1
        ids.append(enc.input_ids[:seq_len])
    return datasets.Dataset.from_dict(
        {
            "input_ids": ids,
            "attention_mask": [[1] * len(i) for i in ids],
            "labels": [index.get(r["label"], -100) for r in rows],
        }
    )


def _preference_dataset(plan: Plan, tokenizer, rows: list[dict], counts: Counter | None = None):
    """Conversational preference rows for DPOTrainer (it renders them with the same chat template);
    rows whose prompt alone fills seq_len are dropped here and counted (TRL would drop them silently)."""
    import datasets

    template, tok, fixes = chat_template(plan, tokenizer), _backend(tokenizer), fixes_of(plan)
    out = []
    for r in rows:
        prompt = apply_fixes(r["prompt"], fixes)
        shared, lengths = encode_pair(template, tok, prompt, [r["chosen"], r["rejected"]], r.get("tools"))
        if shared >= plan.training.seq_len:
            if counts is not None:
                counts["untrained_dropped"] += 1
            continue
        if max(lengths) > plan.training.seq_len and counts is not None:
            counts["truncated_rows"] += 1
        row = {"prompt": prompt, "chosen": r["chosen"], "rejected": r["rejected"]}
        if r.get("tools"):
            row["tools"] = json.dumps(r["tools"])  # TRL json.loads a string (one Arrow type for every row)
        out.append(row)
    return datasets.Dataset.from_list(out)


def general_texts(plan: Plan, tokenizer) -> list[str]:
    """The general (replay / forgetting) corpus as plain text: text rows as is, other rows rendered."""
    path = plan.data.general_path
    template = chat_template(plan, tokenizer)
    out = []
    for _, rec in _records(path, "data.general_path"):
        if not isinstance(rec, dict):
            continue
        fmt = format_of(rec)
        if fmt not in ("text", "chat", "alpaca", "prompt_completion"):
            continue
        try:
            ex = normalise(rec, fmt).example
            out.append(ex["text"] if "text" in ex else template.render(apply_fixes(ex["messages"], fixes_of(plan))))
        except (BadRow, TemplateRefusal):
            continue
    if not out:
        raise FtplanError(f"data.general_path '{path}': no usable text rows")
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


def _no_trainable_rows(plan: Plan, counts: Counter) -> FtplanError:
    return FtplanError(
        f"{plan.data.path}: no trainable rows: {counts['untrained_dropped']} rows have no trained token "
        f"within training.seq_len {plan.training.seq_len} (their prompt fills it)",
        hint="raise training.seq_len in plan.yaml or re-plan",
    )


def build_datasets(plan: Plan, tokenizer) -> DataBundle:
    """Read, validate, de-duplicate, split, mix replay data and tokenize, as the plan says."""
    import datasets

    datasets.disable_progress_bars()  # one bar per map() call drowns the training progress bar
    rows, stats = load_rows(plan)
    train_rows, val_rows = split_rows(rows, plan)
    stats.update(train_rows=len(train_rows), val_rows=len(val_rows))
    counts: Counter[str] = Counter()
    head = plan.task == "classification" and plan.training.classification_mode == "head"
    if plan.data.general_path and (plan.task == "preference" or head):
        # Replay and the forgetting check are language-modelling losses on general text; DPO pairs and a
        # classification head have no such loss, so the general corpus is not used for these tasks.
        print(f"ftplan: data.general_path is not used for task '{plan.task}' (no language-modelling loss)")
    if plan.task == "preference":
        bundle = DataBundle(
            train=_preference_dataset(plan, tokenizer, train_rows, counts),
            val=_preference_dataset(plan, tokenizer, val_rows, counts) if val_rows else None,
            stats=stats,
        )
    elif head:
        labels = sorted({r["label"] for r in rows})
        bundle = DataBundle(
            train=_head_dataset(plan, tokenizer, train_rows, labels, counts),
            val=_head_dataset(plan, tokenizer, val_rows, labels, counts) if val_rows else None,
            eval_references=[r["label"] for r in val_rows],
            labels=labels,
            stats=stats,
        )
    else:
        replay, general_held = _replay(plan, tokenizer, len(train_rows))
        stats["replay_rows"] = len(replay)
        mixed = train_rows + replay
        random.Random(plan.training.seed + 2).shuffle(mixed)
        limit = plan.evaluation.max_eval_samples
        convs = [r for r in val_rows if "messages" in r][:limit]
        labels = sorted({r["messages"][-1]["content"] for r in rows}) if plan.task == "classification" else None
        bundle = DataBundle(
            train=_lm_dataset(plan, tokenizer, mixed, counts),
            val=_lm_dataset(plan, tokenizer, val_rows, counts) if val_rows else None,
            eval_prompts=[apply_fixes(r["messages"][:-1], fixes_of(plan)) for r in convs],
            eval_references=[r["messages"][-1]["content"] for r in convs],
            general_val=_lm_dataset(plan, tokenizer, general_held) if general_held else None,
            labels=labels,
            stats=stats,
        )
    stats.update(truncated_rows=counts["truncated_rows"], untrained_dropped=counts["untrained_dropped"])
    stats.update({k: v for k, v in counts.items() if k.startswith("skipped: ")})
    if len(bundle.train) == 0:
        raise _no_trainable_rows(plan, counts)
    stats["train_sequences"] = len(bundle.train)
    return bundle
