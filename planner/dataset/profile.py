"""``profile_data``: one streaming pass over a dataset file through the same path the executor trains.

Each record is read (planner.dataset.readers), renamed by the column mapping, normalised to its
canonical example (planner.dataset.layouts), shaped for the task and, with a local tokenizer, rendered by
the model's chat template and tokenized exactly as the run will (planner.dataset.encode). So the lengths
the plan is sized by are the lengths that train, the template's refusals are found at plan time, and
everything left out (malformed rows, trailing turns, tool content a template does not render) is
counted. Without a local tokenizer the lengths are a heuristic plus the template family's overhead.

Memory does not grow with the file: per row it keeps a 15-byte digest (duplicates) and one count in
two histograms (sequence length, and the position of the first trained token, which tells how many rows
a sequence length would truncate or leave without a trained token: :meth:`DataProfile.over`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain, islice

from planner.dataset import layouts
from planner.dataset.chat import (
    NO_FIXES,
    ChatTemplate,
    TemplateFixes,
    TemplateRefusal,
    fix_options,
    suggest_fix,
    template_from_folder,
)
from planner.dataset.encode import (
    encode_conversations,
    encode_labelled,
    encode_pair,
    encode_text,
)
from planner.dataset.readers import BadRow, describe_file, file_type_of, iter_records
from planner.dataset.tokens import HeuristicCounter, TokenCounter, make_counter, template_overhead
from planner.errors import FtplanError

MAX_INVALID_KEPT = 50  # invalid rows listed with their reasons (all are counted)
DETECT_SAMPLE = 200  # records looked at to detect the format
MEASURE_BATCH = 256  # rows rendered, then tokenized in one encode_batch call


@dataclass(frozen=True)
class InvalidRow:
    line: int  # 1-based line where the record starts (JSONL/CSV/JSON/TXT); record index (Parquet)
    reason: str


@dataclass(frozen=True)
class DataProfile:
    path: str
    file_format: str  # jsonl | json | csv | tsv | parquet | txt
    format: str  # detected record format (planner.vocab.FORMATS)
    fields: tuple[str, ...]  # columns seen
    rows: int  # records read (valid + invalid)
    valid_rows: int  # rows a trainer can use (duplicates included)
    duplicates: int  # exact duplicate examples (after the first) among valid rows
    empty_rows: int  # records with every field blank; counted in invalid_count too
    invalid: tuple[InvalidRow, ...]  # first 50 invalid rows with line numbers
    invalid_count: int
    tokens_p50: int
    tokens_p95: int
    tokens_p99: int
    tokens_max: int
    tokens_mean: float
    total_tokens: int  # over valid rows (the longer sequence of a pair)
    response_tokens_mean: float  # tokens in the trained part on average
    tokenizer: str  # "model:<path>" or "heuristic:<family>-vocab"
    sha256: str  # of the file bytes, checked again before training
    size_bytes: int
    label_counts: dict[str, int] = field(default_factory=dict)  # classification / KTO label -> rows
    sequences_per_row: int = 1  # 2 for preference pairs (chosen and rejected)
    truncated: bool = False  # True when max_rows stopped the read early (figures are for a sample)
    notes: tuple[str, ...] = ()
    task: str = ""  # the task the rows were shaped for
    columns: dict[str, str] = field(default_factory=dict)  # the column mapping applied
    template: str = ""  # chat template used: tokenizer | plan | default | "" (heuristic or no chat)
    system_turn: str = "keep"
    merge_consecutive: bool = False
    template_refusals: int = 0  # rows the chat template refused (counted in invalid_count too)
    template_refusal: str = ""  # the first refusal: "line N: <the template's message>"
    suggested_fix: str = ""  # options under which the refused rows render, e.g. "--system-turn merge"
    skipped: dict[str, int] = field(default_factory=dict)  # content left out of valid rows, by kind
    length_hist: dict[int, int] = field(default_factory=dict)  # sequence length -> rows
    first_trained_hist: dict[int, int] = field(default_factory=dict)  # first trained token index -> rows

    def over(self, seq_len: int) -> tuple[int, int]:
        """(rows longer than seq_len, rows with no trained token within seq_len) among valid rows."""
        longer = sum(n for length, n in self.length_hist.items() if length > seq_len)
        untrained = sum(n for first, n in self.first_trained_hist.items() if first >= seq_len)
        return longer, untrained

    def to_dict(self) -> dict:
        """JSON-ready view (``ftplan profile --json``)."""
        out = asdict(self)
        out["invalid"] = [{"line": r.line, "reason": r.reason} for r in self.invalid]
        out["fields"] = list(self.fields)
        out["notes"] = list(self.notes)
        out["length_hist"] = {str(k): v for k, v in sorted(self.length_hist.items())}
        out["first_trained_hist"] = {str(k): v for k, v in sorted(self.first_trained_hist.items())}
        return out


# --------------------------------------------------------------------------------------- counting


@dataclass
class Measured:
    length: int  # tokens of the (longest) sequence
    trained: int  # tokens in the loss
    first_trained: int  # index of the first trained token
    lost: list[str]


class Measurer:
    """Tokens of one shaped example: exact (tokenizer + chat template) or heuristic."""

    def __init__(self, counter: TokenCounter, template: ChatTemplate | None, fixes: TemplateFixes, model_type):
        self.counter, self.template, self.fixes = counter, template, fixes
        self.tok = getattr(counter, "tokenizer", None)  # a tokenizers.Tokenizer when exact
        self.per_message, self.per_sequence = template_overhead(model_type)

    @property
    def exact(self) -> bool:
        return self.tok is not None

    def measure_batch(self, examples: list[dict]) -> list[Measured | TemplateRefusal]:
        """Each example's tokens (a TemplateRefusal in its place when the template refuses it);
        conversations share one batched tokenizer call, as the executor's ``encode_rows`` does."""
        if not self.exact:
            return [self._heuristic(ex) for ex in examples]
        convs = [ex for ex in examples if "messages" in ex]
        encoded = iter(encode_conversations(self.template, self.tok, convs, self.fixes))
        out: list[Measured | TemplateRefusal] = []
        for ex in examples:
            if "messages" in ex:
                enc = next(encoded)
                out.append(enc if isinstance(enc, TemplateRefusal) else
                           Measured(len(enc.input_ids), sum(enc.completion_mask), enc.first_trained, enc.lost))
                continue
            try:
                out.append(self._exact(ex))
            except TemplateRefusal as exc:
                out.append(exc)
        return out

    def _exact(self, ex: dict) -> Measured:
        """A non-conversation example: a preference pair, an unpaired completion, labelled or raw text."""
        t, tok = self.template, self.tok
        if "chosen" in ex:
            prompt_len, lengths = encode_pair(
                t, tok, ex["prompt"], [ex["chosen"], ex["rejected"]], ex.get("tools"), self.fixes
            )
            return Measured(max(lengths), max(lengths) - prompt_len, prompt_len, [])
        if "completion" in ex:
            prompt_len, lengths = encode_pair(t, tok, ex["prompt"], [ex["completion"]], ex.get("tools"), self.fixes)
            return Measured(lengths[0], lengths[0] - prompt_len, prompt_len, [])
        if "label" in ex:
            enc = encode_labelled(tok, ex["text"])
            return Measured(len(enc.input_ids), 0, 0, [])
        enc = encode_text(tok, ex["text"], t.eos_token if t else "")
        return Measured(len(enc.input_ids), len(enc.input_ids), 0, [])

    def _count_messages(self, msgs: list[dict]) -> tuple[int, int, int]:
        """(total, trained, first trained index) of messages: content tokens + the template's overhead."""
        texts = [m.get("content") or "" for m in msgs]
        texts = [t + "".join(json.dumps(c["function"]) for c in m.get("tool_calls") or []) for t, m in zip(texts, msgs)]
        counts = self.counter.count(texts)
        total, trained, first = self.per_sequence, 0, None
        for m, c in zip(msgs, counts):
            total += c + self.per_message
            if m["role"] == "assistant" and m.get("train") is not False:
                trained += c + 1  # the answer and its end-of-turn token
                first = total - c - 1 if first is None else first
        return total, trained, total if first is None else first

    def _heuristic(self, ex: dict) -> Measured:
        if "messages" in ex:
            extra = self.counter.count([json.dumps(ex["tools"])])[0] if ex.get("tools") else 0
            total, trained, first = self._count_messages(ex["messages"])
            return Measured(total + extra, trained, first + extra, [])
        if "chosen" in ex or "completion" in ex:
            answers = [ex["chosen"], ex["rejected"]] if "chosen" in ex else [ex["completion"]]
            prompt_total, _, _ = self._count_messages(ex["prompt"])
            best = max((self._count_messages(ex["prompt"] + a) for a in answers), key=lambda r: r[0])
            return Measured(best[0], best[0] - prompt_total, prompt_total, [])
        n = self.counter.count([ex["text"]])[0] + 1  # one BOS/EOS
        return Measured(n, 0 if "label" in ex else n, 0, [])


# ------------------------------------------------------------------------------------- statistics


class _Stats:
    """Streaming statistics over valid rows: histograms, totals, 15-byte digests by bucket."""

    def __init__(self) -> None:
        self.hist: Counter[int] = Counter()
        self.first: Counter[int] = Counter()
        self.total = self.trained = self.rows = 0
        # Duplicates: blake2b-128 digest of the canonical example; the first byte picks one of 256
        # bytearrays holding the other 15 bytes, so memory is 15 bytes per row (no Python objects).
        self.buckets = [bytearray() for _ in range(256)]

    def add(self, example: dict, m: Measured) -> None:
        digest = hashlib.blake2b(example_key(example).encode("utf-8", "surrogatepass"), digest_size=16).digest()
        self.buckets[digest[0]] += digest[1:]
        self.hist[m.length] += 1
        self.first[m.first_trained] += 1
        self.total += m.length
        self.trained += m.trained
        self.rows += 1

    def duplicates(self) -> int:
        dups = 0
        for bucket in self.buckets:
            view = memoryview(bucket)
            seen = {bytes(view[i : i + 15]) for i in range(0, len(bucket), 15)}
            dups += len(bucket) // 15 - len(seen)
        return dups

    def percentile(self, p: float) -> int:
        """Nearest-rank percentile: the smallest length with at least p% of rows at or below it."""
        rank = max(1, math.ceil(p / 100 * self.rows))
        cum = 0
        for length in sorted(self.hist):
            cum += self.hist[length]
            if cum >= rank:
                return length
        return 0


def example_key(example: dict) -> str:
    """What two rows must share to be duplicates: the canonical example (the executor de-duplicates on it)."""
    return json.dumps(example, sort_keys=True, ensure_ascii=False)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------- the stream


@dataclass
class Row:
    """One record after mapping, normalising and shaping; ``example`` is None when it is invalid."""

    line: int
    example: dict | None
    reason: str = ""
    empty: bool = False
    notes: tuple[str, ...] = ()


def check_file(path: str) -> None:
    if not os.path.exists(path):
        raise FtplanError(f"data file not found: {path}")
    if os.path.isdir(path):
        raise FtplanError(f"{path} is a folder; give a data file (jsonl, json, csv, tsv, parquet, txt)")
    if not os.access(path, os.R_OK):
        raise FtplanError(f"data file is not readable (permissions): {path}")


def detect(path: str, task: str | None, columns: dict[str, str]) -> tuple[str, list, Iterator]:
    """(format, the first items, the rest of the stream) of a data file, or a one-line FtplanError."""
    items = iter_records(path)
    sample = list(islice(items, DETECT_SAMPLE))
    if not sample:
        raise FtplanError(f"empty dataset: {path} has no records")
    records = [layouts.map_columns(r, columns) for _, r in sample if isinstance(r, dict)]
    if not records:
        line, bad = sample[0]
        raise FtplanError(f"no readable records in {path}: line {line}: {bad}")
    missing = [c for c in columns.values() if not any(c in r for _, r in sample if isinstance(r, dict))]
    if missing:
        found = list(dict.fromkeys(k for _, r in sample if isinstance(r, dict) for k in r))[:20]
        raise FtplanError(
            f"--columns: column '{missing[0]}' is not in {path}", hint=f"columns found: {', '.join(found)}"
        )
    fmt = layouts.detect_format(records, task)
    if fmt is None:
        seen = list(dict.fromkeys(k for r in records for k in r))[:20]
        fix = layouts.suggest_columns(records, task)
        raise FtplanError(
            f"no recognisable record format in {path}: columns found: {', '.join(seen) or 'none'}; "
            f"accepted formats: {layouts.describe_formats()}",
            hint=(f"map your columns, e.g. {fix}" if fix else "map your columns with --columns NAME=COLUMN"),
        )
    return fmt, sample, chain(sample, items)


def shaped_rows(
    items: Iterable, fmt: str, task: str, columns: dict[str, str], classification_mode: str = "generate"
) -> Iterator[Row]:
    """Every record as a Row: mapped, normalised and shaped for the task (the executor's rows too)."""
    for line, record in items:
        if isinstance(record, BadRow):
            yield Row(line, None, str(record), record.empty)
            continue
        try:
            norm = layouts.normalise(layouts.map_columns(record, columns), fmt)
        except BadRow as bad:
            yield Row(line, None, str(bad), bad.empty)
            continue
        ex = layouts.shape_for_task(norm.example, fmt, task, classification_mode)
        yield Row(line, ex, notes=tuple(norm.notes))


def profile_data(
    path: str,
    *,
    tokenizer_path: str | None = None,
    task: str | None = None,
    max_rows: int | None = None,
    vocab_size: int | None = None,
    columns: dict[str, str] | str | None = None,
    fixes: TemplateFixes = NO_FIXES,
    chat_template: str | None = None,
    model_type: str | None = None,
    classification_mode: str = "generate",
) -> DataProfile:
    """Profile a dataset file in one streaming pass (see the module docstring).

    ``tokenizer_path``: a tokenizer.json or the model folder holding it (exact counts with the folder's
    chat template, or ``chat_template`` when the plan sets one); without it the heuristic is used for a
    ``vocab_size`` vocabulary with ``model_type``'s template overhead. ``task`` shapes the rows as that
    task trains them and breaks format ties; ``columns`` renames file columns (``label=category``);
    ``fixes`` are the template fixes the run will apply; ``max_rows`` profiles only the first rows.
    """
    path = os.fspath(path)
    check_file(path)
    file_type_of(path)  # an unknown extension fails here, before any reading
    if max_rows is not None and max_rows <= 0:
        raise FtplanError(f"--max-rows must be positive, got {max_rows}")
    columns = layouts.parse_columns(columns)
    counter = make_counter(tokenizer_path, vocab_size)
    fmt, sample, items = detect(path, task, columns)
    shape_task = task if task else layouts.DEFAULT_TASK[fmt]
    template = None
    if getattr(counter, "tokenizer", None) is not None:
        folder = tokenizer_path if os.path.isdir(tokenizer_path) else os.path.dirname(tokenizer_path)
        template = template_from_folder(folder, chat_template)
    measurer = Measurer(counter, template, fixes, model_type)
    if max_rows is not None:
        items = islice(items, max_rows + 1)  # one more tells whether the file goes on
    rows = shaped_rows(items, fmt, shape_task, columns, classification_mode)
    return _profile(path, fmt, shape_task, rows, measurer, max_rows, columns, sample)


def _profile(path, fmt, task, rows: Iterable[Row], measurer: Measurer, max_rows, columns, sample) -> DataProfile:
    stats = _Stats()
    invalid: list[InvalidRow] = []
    invalid_count = empty = n = refusals = 0
    first_refusal, fix = "", None
    labels: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    truncated = False
    pending: list[Row] = []

    def bad(row: Row, reason: str) -> None:
        nonlocal invalid_count, empty
        invalid_count += 1
        empty += row.empty
        if len(invalid) < MAX_INVALID_KEPT:
            invalid.append(InvalidRow(row.line, reason))

    def flush() -> None:
        nonlocal refusals, first_refusal, fix
        for row, m in zip(pending, measurer.measure_batch([r.example for r in pending])):
            if isinstance(m, TemplateRefusal):
                refusals += 1
                if not first_refusal:
                    first_refusal = f"line {row.line}: {m}"
                    fix = _suggest(measurer, row.example)
                bad(row, f"the chat template refuses this conversation: {m}")
                continue
            stats.add(row.example, m)
            skipped.update(row.notes)
            skipped.update(f"{kind} not rendered by the chat template" for kind in m.lost)
            label = row.example.get("label")  # classification label, or KTO's desirable true/false
            if label is not None:
                labels[str(label).lower() if isinstance(label, bool) else str(label)] += 1
        pending.clear()

    for row in rows:
        if n == max_rows:
            truncated = True
            break
        n += 1
        if row.example is None:
            bad(row, row.reason)
            continue
        pending.append(row)
        if len(pending) >= MEASURE_BATCH:
            flush()
    flush()
    fields = tuple(dict.fromkeys(k for _, r in sample if isinstance(r, dict) for k in r))[:200]
    notes = _notes(path, measurer, truncated, max_rows, columns)
    mapped = dict.fromkeys(k for _, r in sample if isinstance(r, dict) for k in layouts.map_columns(r, columns))
    unused = layouts.unused_fields(list(mapped), fmt)
    if unused:
        notes.append(f"columns not used by the {fmt} format: {', '.join(unused[:10])}")
    return DataProfile(
        path=path,
        file_format=file_type_of(path),
        format=fmt,
        fields=fields,
        rows=n,
        valid_rows=stats.rows,
        duplicates=stats.duplicates(),
        empty_rows=empty,
        invalid=tuple(sorted(invalid, key=lambda r: r.line)),
        invalid_count=invalid_count,
        tokens_p50=stats.percentile(50),
        tokens_p95=stats.percentile(95),
        tokens_p99=stats.percentile(99),
        tokens_max=max(stats.hist, default=0),
        tokens_mean=stats.total / max(stats.rows, 1),
        total_tokens=stats.total,
        response_tokens_mean=stats.trained / max(stats.rows, 1),
        tokenizer=measurer.counter.name,
        sha256=file_sha256(path),
        size_bytes=os.path.getsize(path),
        label_counts=dict(labels.most_common()),
        sequences_per_row=2 if fmt == "preference" else 1,
        truncated=truncated,
        notes=tuple(notes),
        task=task,
        columns=dict(columns),
        template=measurer.template.source if measurer.template and fmt not in ("text",) else "",
        system_turn=measurer.fixes.system_turn,
        merge_consecutive=measurer.fixes.merge_consecutive,
        template_refusals=refusals,
        template_refusal=first_refusal,
        suggested_fix=fix_options(fix) if fix is not None else "",
        skipped=dict(skipped.most_common()),
        length_hist=dict(stats.hist),
        first_trained_hist=dict(stats.first),
    )


def _suggest(measurer: Measurer, example: dict) -> TemplateFixes | None:
    msgs = example.get("messages") or (example.get("prompt", []) + example.get("chosen", example.get("completion", [])))
    return suggest_fix(measurer.template, msgs, example.get("tools"), measurer.fixes)


def _notes(path: str, measurer: Measurer, truncated: bool, max_rows, columns) -> list[str]:
    notes = list(measurer.counter.notes)
    described = describe_file(path)
    if "(" in described:
        notes.append(f"read as {described}")
    if columns:
        notes.append("columns mapped: " + ", ".join(f"{k}={v}" for k, v in columns.items()))
    if isinstance(measurer.counter, HeuristicCounter):
        notes.append(
            f"token counts are a heuristic ({measurer.counter.family}-vocabulary coefficients, "
            f"{measurer.per_message} template tokens per message; no local tokenizer): pass --model with a "
            "local tokenizer for exact counts and a check against its chat template"
        )
    elif measurer.template is not None:
        source = {
            "tokenizer": "the tokenizer's own chat template",
            "plan": "the plan's chat template",
            "default": "ftplan's default ChatML template (the tokenizer has none)",
        }[measurer.template.source]
        notes.append(f"exact token counts: every row rendered with {source} and tokenized as training will")
    if truncated:
        notes.append(f"stopped after --max-rows {max_rows}: figures describe a sample")
    return notes
