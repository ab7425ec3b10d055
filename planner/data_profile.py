"""Dataset profiling: format detection, row counts, token lengths, duplicates, invalid rows. Streams.

INTERFACE: DataProfile below is the contract used by rules/render/wizard.

``profile_data(path)`` reads JSONL, JSON (an array of records, parsed incrementally), CSV and Parquet
(by record batches), optionally gzip-compressed (``.jsonl.gz``...), in one pass with memory that does
not grow with the file: per row it keeps nothing but a 15-byte digest for duplicate detection; token
lengths go into a histogram (one counter per distinct length), so percentiles are exact.

Token counts come from the model's ``tokenizer.json`` (the ``tokenizers`` library, not transformers)
when one is given, else from a character-class heuristic whose error against real tokenizers is
measured by ``benchmarks/profile_heuristic.py`` (see BENCHMARKS.md, "Token-count heuristic").
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Literal

from planner.errors import FtplanError

DataFormat = Literal["alpaca", "chat", "prompt_completion", "text", "preference", "classification"]


@dataclass(frozen=True)
class InvalidRow:
    line: int  # 1-based line in the file where the record starts (JSONL/CSV/JSON); record index (Parquet)
    reason: str


@dataclass(frozen=True)
class DataProfile:
    path: str
    file_format: Literal["jsonl", "json", "csv", "parquet"]
    format: DataFormat  # detected record format
    fields: tuple[str, ...]  # columns seen
    rows: int  # records read (valid + invalid)
    valid_rows: int  # rows a trainer can use (duplicates included)
    duplicates: int  # exact duplicate examples (after the first) among valid rows: same texts, roles, label
    empty_rows: int  # records with every field blank; counted in invalid_count too
    invalid: tuple[InvalidRow, ...]  # first 50 invalid rows with line numbers
    invalid_count: int
    tokens_p50: int
    tokens_p95: int
    tokens_p99: int
    tokens_max: int
    tokens_mean: float
    total_tokens: int  # over valid rows (whole example: prompt + response)
    response_tokens_mean: float  # tokens in the trained part (response) on average
    tokenizer: str  # "model:<path>" or "heuristic:chars/3.6" etc.
    sha256: str  # of the file bytes, for reproducibility
    size_bytes: int
    label_counts: dict[str, int] = field(default_factory=dict)  # classification: label -> rows
    # Additions (compatible defaults):
    # Sequences the trainer builds per row: 2 for preference data (DPO runs prompt+chosen and
    # prompt+rejected; the token figures above are for the longer of the two), else 1.
    sequences_per_row: int = 1
    truncated: bool = False  # True when max_rows stopped the read early (figures are for a sample)
    notes: tuple[str, ...] = ()  # assumptions: heuristic used, chat template overhead, file quirks

    def to_dict(self) -> dict:
        """JSON-ready view (``ftplan profile --json``)."""
        from dataclasses import asdict

        out = asdict(self)
        out["invalid"] = [{"line": r.line, "reason": r.reason} for r in self.invalid]
        out["fields"] = list(self.fields)
        out["notes"] = list(self.notes)
        return out


# ------------------------------------------------------------------------------------ constants

MAX_INVALID_KEPT = 50  # invalid rows listed with their reasons (all are counted)
DETECT_SAMPLE = 200  # records looked at to detect the format
ENCODE_BATCH = 2048  # texts per tokenizers.encode_batch call
CHUNK_CHARS = 1 << 20  # JSON array reader: characters read at a time
MAX_RECORD_CHARS = 64 << 20  # a single JSON record larger than this is treated as malformed

# Chat-template tokens per message, added to the content tokens because the executor applies the
# model's chat template. ChatML (Qwen2.5 tokenizer_config.json chat_template):
#   "<|im_start|>" role "\n" content "<|im_end|>" "\n"  -> 5 tokens around the content;
# Llama 3 (meta-llama/Llama-3.1-8B-Instruct chat_template):
#   "<|start_header_id|>" role "<|end_header_id|>" "\n\n" content "<|eot_id|>" -> 5 tokens.
# OpenAI's cookbook "How to count tokens with tiktoken" uses 3 per message + 3 for the reply for
# gpt-3.5/4. We use 5. Alpaca, prompt/completion and preference rows are two messages (user, assistant).
MESSAGE_OVERHEAD_TOKENS = 5
# One BOS (Llama, Gemma) or EOS (appended by TRL/HF data collators) per sequence.
SEQUENCE_OVERHEAD_TOKENS = 1

# Chat roles the executor accepts, ShareGPT names included (executor/data.py ROLE_ALIASES, after TRL's
# maybe_convert_to_chatml in trl/data_utils.py): role -> trained (assistant) or not.
CHAT_ROLES: dict[str, bool] = {
    "system": False,
    "user": False,
    "human": False,
    "assistant": True,
    "gpt": True,
    "bot": True,
    "model": True,
}


# ----------------------------------------------------------------------------- format rules


@dataclass(frozen=True)
class FormatRule:
    """A record format: it matches a record that has one field of every group in ``required``.

    Each group lists a field and the aliases executor/data.py accepts for it (its normalisers read
    ``output`` or ``response``, ``prompt`` or ``question``...), so what is profiled is what trains.
    """

    name: DataFormat
    required: tuple[tuple[str, ...], ...]
    describe: str  # for error messages

    def matches(self, keys: set[str]) -> bool:
        return all(any(k in keys for k in group) for group in self.required)


# Priority order: the first rule matching most of the sampled records wins. Preference before chat
# (preference rows may hold message lists), alpaca before prompt/completion, classification before text.
FORMAT_RULES: tuple[FormatRule, ...] = (
    FormatRule("preference", (("chosen",), ("rejected",)), "preference (prompt, chosen, rejected)"),
    FormatRule(
        "chat",
        (("messages", "conversations"),),
        "chat (messages: [{role, content}] or ShareGPT conversations: [{from, value}])",
    ),
    FormatRule("alpaca", (("instruction",), ("output", "response")), "alpaca (instruction, input, output)"),
    FormatRule(
        "prompt_completion",
        (("prompt", "question"), ("completion", "answer")),
        "prompt/completion (prompt, completion; or question, answer)",
    ),
    FormatRule("classification", (("text", "sentence", "input"), ("label",)), "classification (text, label)"),
    FormatRule("text", (("text", "content"),), "raw text (text)"),
)
RULES_BY_NAME = {r.name: r for r in FORMAT_RULES}

# A task given by the user (PlanRequest.task) picks among formats the data fits equally well.
TASK_FORMAT = {
    "classification": "classification",
    "preference": "preference",
    "dpo": "preference",
    "continued-pretraining": "text",
    "pretrain": "text",
    "chat": "chat",
}


def detect_format(records: list[dict], task: str | None = None) -> FormatRule | None:
    """The rule that matches the most sampled records (ties: priority order; a task can break them)."""
    if not records:
        return None
    key_sets = [set(r) for r in records]
    coverage = {rule.name: sum(rule.matches(k) for k in key_sets) / len(key_sets) for rule in FORMAT_RULES}
    preferred = TASK_FORMAT.get((task or "").lower())
    if preferred and coverage[preferred] >= 0.5:
        return RULES_BY_NAME[preferred]
    best = max(FORMAT_RULES, key=lambda r: coverage[r.name])  # max keeps the first on ties
    if coverage[best.name] < 0.5:
        return None
    return best


# ---------------------------------------------------------------------------- row extraction


class BadRow(Exception):
    """A record that cannot be trained on; the message is the reason shown with its line number."""

    def __init__(self, reason: str, empty: bool = False):
        super().__init__(reason)
        self.empty = empty


# One sequence the trainer builds: (text, is_response) parts and the number of chat messages.
Sequence = tuple[list[tuple[str, bool]], int]


@dataclass
class Row:
    """One example: the sequences the trainer builds from it, flattened for batch token counting."""

    sequences: list[Sequence]
    label: str | None = None

    def __post_init__(self):
        self.texts: list[str] = [t for parts, _ in self.sequences for t, _ in parts]
        self.is_response = bytes(int(r) for parts, _ in self.sequences for _, r in parts)
        self.shape = [(len(parts), n_msgs) for parts, n_msgs in self.sequences]


def _is_blank(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, dict)):
        return len(value) == 0
    return False


def _string(record: dict, *keys: str, response: bool = False, required: bool = True) -> str:
    """The first of ``keys`` present in the record (a field and its aliases), as a non-blank string."""
    key = next((k for k in keys if record.get(k) is not None), None)
    if key is None:
        if required:
            raise BadRow(f"missing field '{keys[0]}'")
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise BadRow(f"field '{key}' must be a string, got {_type_name(value)}")
    if required and not value.strip():
        raise BadRow(f"empty response: field '{key}' is blank" if response else f"field '{key}' is blank")
    return value


def _type_name(value) -> str:
    return {
        dict: "an object",
        list: "a list",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
    }.get(type(value), type(value).__name__)


def _maybe_json(value):
    """CSV cells hold nested values as JSON text ('[{"role": ...}]')."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _messages(value, field_name: str) -> list[tuple[str, bool]]:
    """(content, is_response) per message, up to the last assistant turn (executor/data.py drops
    trailing user turns: nothing to learn from them)."""
    value = _maybe_json(value)
    if not isinstance(value, list):
        raise BadRow(f"field '{field_name}' must be a list of messages, got {_type_name(value)}")
    if not value:
        raise BadRow(f"field '{field_name}' is an empty conversation")
    out = []
    for i, msg in enumerate(value, 1):
        if not isinstance(msg, dict):
            raise BadRow(f"{field_name}[{i}] must be an object with role and content, got {_type_name(msg)}")
        role = msg.get("role", msg.get("from"))
        if not isinstance(role, str):
            raise BadRow(f"{field_name}[{i}] has no 'role' (or ShareGPT 'from')")
        if role.lower() not in CHAT_ROLES:
            raise BadRow(f"{field_name}[{i}] has unknown role '{role}' (use system, user or assistant)")
        content = msg.get("content", msg.get("value"))
        if not isinstance(content, str):
            raise BadRow(f"{field_name}[{i}] content must be a string, got {_type_name(content)}")
        out.append((content, CHAT_ROLES[role.lower()]))
    while out and not out[-1][1]:
        out.pop()
    if not out:
        raise BadRow(f"no assistant message in '{field_name}' (nothing to train on)")
    if not out[-1][0].strip():
        raise BadRow(f"empty response: the last assistant message in '{field_name}' is blank")
    return out


def _extract_chat(record: dict) -> Row:
    key = "messages" if "messages" in record else "conversations"
    msgs = _messages(record.get(key), key)
    return Row([(msgs, len(msgs))])


def _extract_alpaca(record: dict) -> Row:
    instruction = _string(record, "instruction")
    extra = _string(record, "input", required=False)
    output = _string(record, "output", "response", response=True)
    parts = [(instruction, False)] + ([(extra, False)] if extra.strip() else []) + [(output, True)]
    return Row([(parts, 2)])


def _extract_prompt_completion(record: dict) -> Row:
    prompt = _string(record, "prompt", "question")
    completion = _string(record, "completion", "answer", response=True)
    return Row([([(prompt, False), (completion, True)], 2)])


def _preference_answer(record: dict, key: str) -> str:
    """A preference answer: a string, or a conversation whose last assistant turn is the answer
    (what executor/data.py keeps; TRL's implicit-prompt layout)."""
    value = _maybe_json(record.get(key))
    if value is None:
        raise BadRow(f"missing field '{key}'")
    if isinstance(value, str):
        if not value.strip():
            raise BadRow(f"empty response: field '{key}' is blank")
        return value
    msgs = _messages(value, key)
    return msgs[-1][0]


def _extract_preference(record: dict) -> Row:
    prompt = _maybe_json(record.get("prompt"))
    if isinstance(prompt, str) and prompt.strip():
        prompt_parts = [(prompt, False)]
    elif isinstance(prompt, list) and prompt:
        prompt_parts = [(t, False) for t, _ in _messages_any(prompt, "prompt")]
    else:
        raise BadRow("missing prompt: field 'prompt' must be a non-empty string or list of messages")
    sequences = []
    for key in ("chosen", "rejected"):
        answer = _preference_answer(record, key)
        sequences.append((prompt_parts + [(answer, True)], len(prompt_parts) + 1))
    return Row(sequences)


def _messages_any(value: list, field_name: str) -> list[tuple[str, bool]]:
    """Messages with no assistant turn required (a conversational preference prompt)."""
    out = []
    for i, msg in enumerate(value, 1):
        role = msg.get("role", msg.get("from")) if isinstance(msg, dict) else None
        content = msg.get("content", msg.get("value")) if isinstance(msg, dict) else None
        if not isinstance(role, str) or role.lower() not in CHAT_ROLES or not isinstance(content, str):
            raise BadRow(f"{field_name}[{i}] needs a role (system, user, assistant) and a string content")
        out.append((content, False))
    return out


def _extract_text(record: dict) -> Row:
    return Row([([(_string(record, "text", "content"), True)], 0)])


def _extract_classification(record: dict) -> Row:
    text = _string(record, "text", "sentence", "input")
    label = record.get("label")
    # Integer labels become their decimal string, as executor/data.py does (True -> "1", 2.0 -> "2").
    if isinstance(label, (int, bool)) or (isinstance(label, float) and label.is_integer()):
        label = str(int(label))
    if label is None or (isinstance(label, str) and not label.strip()):
        raise BadRow("missing label: field 'label' is blank")
    if not isinstance(label, str):
        raise BadRow(f"field 'label' must be a string or an integer, got {_type_name(label)}")
    label = label.strip()
    return Row([([(text, False), (label, True)], 0)], label=label)


EXTRACTORS: dict[str, Callable[[dict], Row]] = {
    "chat": _extract_chat,
    "alpaca": _extract_alpaca,
    "prompt_completion": _extract_prompt_completion,
    "preference": _extract_preference,
    "text": _extract_text,
    "classification": _extract_classification,
}


def extract_row(record: dict, fmt: DataFormat) -> Row:
    """The texts of one record for a format; BadRow (with the reason) when it cannot be trained on."""
    if all(_is_blank(v) for v in record.values()):
        raise BadRow("empty row: every field is blank", empty=True)
    return EXTRACTORS[fmt](record)


# ---------------------------------------------------------------------------------- readers

# A reader yields (line, record) where record is a dict, or (line, BadRow) for unreadable rows.
Item = tuple[int, "dict | BadRow"]


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _read_jsonl(path: str) -> Iterator[Item]:
    with _open_binary(path) as f:
        for n, raw in enumerate(f, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue  # blank lines (a trailing newline, spacing) are not records
            try:
                record = json.loads(raw)
            except UnicodeDecodeError:
                yield n, BadRow("not valid UTF-8 text")
                continue
            except ValueError as exc:
                yield n, BadRow(f"bad JSON: {getattr(exc, 'msg', exc)} (column {getattr(exc, 'colno', '?')})")
                continue
            yield (
                n,
                record
                if isinstance(record, dict)
                else BadRow(f"expected a JSON object, got {_type_name(record)}"),
            )


def _read_json(path: str) -> Iterator[Item]:
    """A JSON array of records, decoded one record at a time (memory: one chunk + one record)."""
    decoder = json.JSONDecoder()
    with _open_binary(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8-sig")
        state = {"buf": "", "eof": False}

        def fill() -> bool:
            try:
                chunk = f.read(CHUNK_CHARS)
            except UnicodeDecodeError as exc:
                raise FtplanError(f"{path} is not UTF-8 text ({exc.reason} near byte {exc.start})") from None
            if not chunk:
                state["eof"] = True
                return False
            state["buf"] += chunk
            return True

        pos, line = 0, 1

        def skip_ws() -> str:
            """Advance past whitespace (reading more as needed); the next character or '' at EOF."""
            nonlocal pos, line
            while True:
                buf = state["buf"]
                m = _WS.match(buf, pos)
                line += buf.count("\n", pos, m.end())
                pos = m.end()
                if pos < len(buf):
                    return buf[pos]
                if not fill():
                    return ""

        first = skip_ws()
        if first == "{":
            wrapped = _DATA_KEY.match(state["buf"], pos)
            if wrapped is None:  # a .json file that is really JSON Lines (common on the Hugging Face hub)
                yield from _read_jsonl(path)
                return
            # {"data": [...]}: the records are the array under "data" (executor/data.py reads it too).
            line += state["buf"].count("\n", pos, wrapped.end() - 1)
            pos = wrapped.end() - 1
            first = "["
        if first != "[":
            raise FtplanError(
                f"{path}: expected a JSON array of records ('[{{...}}, ...]') or JSON Lines, "
                f"found {first!r} at line {line}"
                if first
                else f"{path} is empty"
            )
        pos += 1
        expect_comma = False
        while True:
            ch = skip_ws()
            if ch == "]":
                return
            if ch == "":
                raise FtplanError(
                    f"{path}: the JSON array is not closed (missing ']' at the end of the file)"
                )
            if expect_comma:
                if ch != ",":
                    raise FtplanError(
                        f"{path}: line {line}: expected ',' or ']' between records, found {ch!r}"
                    )
                pos += 1
                skip_ws()
            start_line = line
            while True:
                buf = state["buf"]
                try:
                    record, end = decoder.raw_decode(buf, pos)
                    if end == len(buf) and not state["eof"] and not isinstance(record, (dict, list)):
                        raise ValueError("a scalar may continue in the next chunk")
                    break
                except ValueError as exc:
                    if not state["eof"] and len(buf) - pos < MAX_RECORD_CHARS and fill():
                        continue
                    err_line = line + buf.count("\n", pos, getattr(exc, "pos", pos))
                    truncated = state["eof"] and not buf.rstrip().endswith("]")
                    why = (
                        "the file ends inside this record (truncated?)"
                        if truncated
                        else "a JSON array cannot be read past a broken record (JSON Lines can)"
                    )
                    raise FtplanError(
                        f"{path}: bad JSON at line {err_line}: {getattr(exc, 'msg', exc)}; {why}"
                    ) from None
            line += buf.count("\n", pos, end)
            pos = end
            expect_comma = True
            if pos > CHUNK_CHARS:  # drop what was consumed so memory stays at about one chunk
                state["buf"] = buf[pos:]
                pos = 0
            yield (
                start_line,
                record
                if isinstance(record, dict)
                else BadRow(f"expected a JSON object, got {_type_name(record)}"),
            )


_WS = re.compile(r"\s*")
_DATA_KEY = re.compile(r'\{\s*"data"\s*:\s*\[')


def _read_csv(path: str) -> Iterator[Item]:
    with _open_binary(path) as fb:
        f = io.TextIOWrapper(fb, encoding="utf-8-sig", newline="")
        csv.field_size_limit(1 << 30)  # the default 128 KiB per cell is too small for long documents
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            start = reader.line_num + 1
            for values in reader:
                line, start = start, reader.line_num + 1
                if not values or all(not v.strip() for v in values) and len(values) <= 1:
                    continue  # blank line
                if len(values) != len(header):
                    yield line, BadRow(f"has {len(values)} fields, the header has {len(header)}")
                    continue
                yield line, dict(zip(header, values))
        except UnicodeDecodeError as exc:
            raise FtplanError(
                f"{path} is not UTF-8 text ({exc.reason}) after line {reader.line_num}"
            ) from None
        except csv.Error as exc:
            raise FtplanError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None


def _read_parquet(path: str) -> Iterator[Item]:
    try:
        import pyarrow.parquet as pq  # optional extra `ftplan[data]`
    except ImportError:
        raise FtplanError(f"reading {path} needs pyarrow", hint="pip install 'ftplan[data]'") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow.ArrowInvalid, OSError, ...
        raise FtplanError(f"{path} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    index = 0
    batches = pf.iter_batches(batch_size=1024)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a corrupt row group
            raise FtplanError(f"{path}: cannot read Parquet rows after record {index} ({exc})") from None
        for record in batch.to_pylist():
            index += 1
            yield index, record


READERS: dict[str, Callable[[str], Iterator[Item]]] = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": _read_csv,
    "parquet": _read_parquet,
}
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def file_format_of(path: str) -> str:
    name = path.lower()
    name = name.removesuffix(".gz")
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    raise FtplanError(
        f"unknown data file type '{os.path.basename(path)}': use .jsonl, .json, .csv or .parquet "
        "(optionally .gz for the text formats)"
    )


# --------------------------------------------------------------------------- token counting


class TokenCounter:
    """Counts tokens of many texts at once; ``name`` goes into DataProfile.tokenizer."""

    name: str
    notes: tuple[str, ...] = ()

    def count(self, texts: list[str]) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError


class HFTokenizerCounter(TokenCounter):
    """A model's tokenizer.json through the `tokenizers` library (Rust, no transformers/torch)."""

    def __init__(self, path: str):
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FtplanError(
                f"no tokenizer.json at {path}", hint="give the folder or file of a fast tokenizer"
            )
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise FtplanError(
                "counting with a tokenizer needs the 'tokenizers' package", hint="pip install tokenizers"
            ) from None
        try:
            self.tokenizer = Tokenizer.from_file(file)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
            raise FtplanError(f"cannot load tokenizer {file}: {exc}") from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.name = f"model:{path}"

    def count(self, texts: list[str]) -> list[int]:
        # encode_batch runs on all cores (Rust); special tokens are added once per sequence instead
        # (SEQUENCE_OVERHEAD_TOKENS), as the chat template or collator would.
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


# Heuristic token counts without a tokenizer: a linear model over character classes, tokens =
# sum(coefficient x characters of that class). The coefficients were fitted (non-negative least squares,
# relative error) by benchmarks/profile_heuristic.py on half of a local corpus (Python reference manual,
# licences, git release notes, stdlib code, package READMEs, CJK text, arithmetic Q&A) against real
# tokenizers, and its error on the other half is in BENCHMARKS.md, "Token-count heuristic".
# "small": 32k SentencePiece vocabularies (Llama 2, Mistral 7B, TinyLlama, Phi-3), fitted on Mistral-7B's
# tokenizer.model; "large": >= 100k BPE vocabularies (Llama 3, Qwen2.5/3, Mistral NeMo, Gemma), fitted on
# the mean of Qwen2.5, Qwen3.5 and Mistral Tekken. Unknown vocabulary: "small" (more tokens: the safe side
# for memory and time).
HEURISTIC_FEATURES = (
    "ascii_letters",
    "digits",
    "punctuation",
    "spaces",
    "newlines",
    "cjk",
    "other_non_ascii",
)
HEURISTIC_COEFFS: dict[str, tuple[float, ...]] = {
    "small": (0.230, 1.360, 0.433, 0.095, 2.051, 1.201, 1.403),
    "large": (0.219, 1.376, 0.282, 0.087, 1.394, 0.708, 2.337),
}
LARGE_VOCAB = 64_000  # vocabularies at least this big use the "large" coefficients
_CJK = re.compile(r"[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]")
# One translate maps each ASCII class onto one character (digits -> "0", punctuation -> "!"); counting
# those is 2 C-level passes per text (CPython's ASCII fast path for str.translate).
_CLASS_TABLE = str.maketrans(
    {**{d: "0" for d in "0123456789"}, **{c: "!" for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"}}
)


def vocab_family(vocab_size: int | None) -> str:
    return "large" if vocab_size and vocab_size >= LARGE_VOCAB else "small"


def heuristic_features(text: str) -> tuple[int, ...]:
    """Character counts per class (HEURISTIC_FEATURES), with C-speed str methods only."""
    classes = text.translate(_CLASS_TABLE)
    digits, punct = classes.count("0"), classes.count("!")
    spaces, newlines = text.count(" "), text.count("\n")
    if text.isascii():
        return (len(text) - digits - punct - spaces - newlines, digits, punct, spaces, newlines, 0, 0)
    ascii_chars = len(text.encode("ascii", "ignore"))
    cjk = len(_CJK.findall(text))
    return (
        ascii_chars - digits - punct - spaces - newlines,
        digits,
        punct,
        spaces,
        newlines,
        cjk,
        len(text) - ascii_chars - cjk,
    )


def heuristic_tokens(text: str, family: str = "small") -> int:
    """Token estimate without a tokenizer (see HEURISTIC_COEFFS)."""
    if not text:
        return 0
    a, d, p, s, n, c, o = heuristic_features(text)
    ka, kd, kp, ks, kn, kc, ko = HEURISTIC_COEFFS[family]
    return max(1, round(ka * a + kd * d + kp * p + ks * s + kn * n + kc * c + ko * o))


class HeuristicCounter(TokenCounter):
    def __init__(self, vocab_size: int | None = None):
        self.family = vocab_family(vocab_size)
        self.name = f"heuristic:{self.family}-vocab"

    def count(self, texts: list[str]) -> list[int]:
        """heuristic_tokens for each text, with one translate over the whole batch (the per-call
        overhead of str.translate dominates on short texts)."""
        ka, kd, kp, ks, kn, kc, ko = HEURISTIC_COEFFS[self.family]
        classes = "".join(texts).translate(_CLASS_TABLE)
        out, pos = [], 0
        for text in texts:
            n = len(text)
            if n == 0:
                out.append(0)
                continue
            seg = classes[pos : pos + n]
            pos += n
            d, p, s, nl = seg.count("0"), seg.count("!"), text.count(" "), text.count("\n")
            if text.isascii():
                est = ka * (n - d - p - s - nl) + kd * d + kp * p + ks * s + kn * nl
            else:
                ascii_chars = len(text.encode("ascii", "ignore"))
                cjk = len(_CJK.findall(text))
                est = (
                    ka * (ascii_chars - d - p - s - nl)
                    + kd * d
                    + kp * p
                    + ks * s
                    + kn * nl
                    + kc * cjk
                    + ko * (n - ascii_chars - cjk)
                )
            out.append(max(1, round(est)))
        return out


def make_counter(tokenizer_path: str | None, vocab_size: int | None = None) -> TokenCounter:
    """The model's tokenizer.json when there is one, else the heuristic.

    A folder without tokenizer.json (a model that ships only a slow SentencePiece tokenizer.model)
    falls back to the heuristic with a note; a path that does not exist is an error.
    """
    if not tokenizer_path:
        return HeuristicCounter(vocab_size)
    if os.path.isdir(tokenizer_path) and not os.path.isfile(os.path.join(tokenizer_path, "tokenizer.json")):
        counter = HeuristicCounter(vocab_size)
        counter.notes = (f"{tokenizer_path} has no tokenizer.json (fast tokenizer): heuristic used",)
        return counter
    if not os.path.exists(tokenizer_path):
        raise FtplanError(
            f"tokenizer not found: {tokenizer_path}",
            hint="give a tokenizer.json file or the model folder that holds it",
        )
    return HFTokenizerCounter(tokenizer_path)


# ------------------------------------------------------------------------------- statistics


class _Stats:
    """Streaming statistics over valid rows: a length histogram, totals, 15-byte digests by bucket."""

    def __init__(self, counter: TokenCounter, per_message: int):
        self.counter = counter
        self.per_message = per_message
        self.hist: Counter[int] = Counter()
        self.total = 0
        self.response_total = 0
        self.rows = 0
        self.pending: list[Row] = []
        self.pending_texts = 0
        # Duplicates: blake2b-128 digest of the canonical JSON; the first byte picks one of 256
        # bytearrays holding the other 15 bytes, so memory is 15 bytes per row (no Python objects).
        self.buckets = [bytearray() for _ in range(256)]

    def add(self, row: Row) -> None:
        # Duplicate key: the example's texts, roles and label (what the executor de-duplicates on:
        # executor/data.py keys on the normalised row), not incidental fields such as ids.
        key = "\x1f".join(row.texts).encode("utf-8", "surrogatepass") + b"\x1e" + row.is_response
        if row.label is not None:
            key += b"\x1e" + row.label.encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(key, digest_size=16).digest()
        self.buckets[digest[0]] += digest[1:]
        self.pending.append(row)
        self.pending_texts += len(row.texts)
        if self.pending_texts >= ENCODE_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        texts = [t for row in self.pending for t in row.texts]
        counts = self.counter.count(texts)
        i = 0
        for row in self.pending:
            best_len = best_resp = j = 0
            for n_parts, n_msgs in row.shape:
                length = resp = 0
                for k in range(n_parts):
                    c = counts[i + j + k]
                    length += c
                    if row.is_response[j + k]:
                        resp += c
                j += n_parts
                length += n_msgs * self.per_message + SEQUENCE_OVERHEAD_TOKENS
                if length > best_len:
                    best_len, best_resp = length, resp
            i += j
            self.hist[best_len] += 1
            self.total += best_len
            self.response_total += best_resp
            self.rows += 1
        self.pending.clear()
        self.pending_texts = 0

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


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------- profiling


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise FtplanError(f"data file not found: {path}")
    if os.path.isdir(path):
        raise FtplanError(f"{path} is a folder; give a .jsonl, .json, .csv or .parquet file")
    if not os.access(path, os.R_OK):
        raise FtplanError(f"data file is not readable (permissions): {path}")


def _unrecognised(path: str, sample: list[dict]) -> FtplanError:
    seen = list(dict.fromkeys(k for r in sample for k in r))[:12]
    accepted = "; ".join(r.describe for r in FORMAT_RULES)
    return FtplanError(
        f"no recognisable record format in {path}: fields found: {', '.join(seen) or 'none'}; "
        f"accepted formats: {accepted}"
    )


def profile_data(
    path: str,
    *,
    tokenizer_path: str | None = None,
    task: str | None = None,
    max_rows: int | None = None,
    vocab_size: int | None = None,
) -> DataProfile:
    """Profile a dataset file in one streaming pass (see the module docstring).

    ``tokenizer_path``: a tokenizer.json file or a folder holding one (exact counts); without it the
    heuristic is used, with coefficients for ``vocab_size`` (the model's vocabulary) when known.
    ``task`` breaks ties in format detection; ``max_rows`` profiles only the first rows (a sample).
    """
    path = os.fspath(path)
    _check_file(path)
    file_format = file_format_of(path)
    if max_rows is not None and max_rows <= 0:
        raise FtplanError(f"--max-rows must be positive, got {max_rows}")
    counter = make_counter(tokenizer_path, vocab_size)
    try:
        items = READERS[file_format](path)
        if max_rows is not None:
            items = islice(items, max_rows + 1)  # one more tells whether the file goes on
        sample: list[Item] = list(islice(items, DETECT_SAMPLE))
        records = [r for _, r in sample if isinstance(r, dict)]
        if not sample:
            raise FtplanError(f"empty dataset: {path} has no records")
        if not records:
            line, bad = sample[0]
            raise FtplanError(f"no readable records in {path}: line {line}: {bad}")
        rule = detect_format(records, task)
        if rule is None:
            raise _unrecognised(path, records)
        return _profile_rows(path, file_format, rule, chain(sample, items), counter, max_rows)
    except OSError as exc:
        raise FtplanError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (EOFError, gzip.BadGzipFile) as exc:
        raise FtplanError(f"{path}: corrupt gzip file ({exc})") from None


def _profile_rows(
    path, file_format, rule: FormatRule, items: Iterable[Item], counter: TokenCounter, max_rows: int | None
) -> DataProfile:
    templated = rule.name not in ("text", "classification")
    stats = _Stats(counter, MESSAGE_OVERHEAD_TOKENS if templated else 0)
    invalid: list[InvalidRow] = []
    invalid_count = empty = rows = 0
    labels: Counter[str] = Counter()
    fields: dict[str, None] = {}
    truncated = False
    for line, record in items:
        if rows == max_rows:
            truncated = True
            break
        rows += 1
        if isinstance(record, dict):
            if len(fields) < 200:
                fields.update(dict.fromkeys(record))
            try:
                row = extract_row(record, rule.name)
            except BadRow as bad:
                record = bad
            else:
                stats.add(row)
                if row.label is not None:
                    labels[row.label] += 1
                continue
        invalid_count += 1
        empty += record.empty
        if len(invalid) < MAX_INVALID_KEPT:
            invalid.append(InvalidRow(line, str(record)))
    stats.flush()
    notes = list(counter.notes)
    if isinstance(counter, HeuristicCounter):
        notes.append(
            f"token counts are a heuristic ({counter.family}-vocabulary coefficients; no local "
            "tokenizer): pass --model with a local tokenizer or --tokenizer for exact counts"
        )
    if templated:
        notes.append(f"lengths include {MESSAGE_OVERHEAD_TOKENS} chat-template tokens per message")
    if truncated:
        notes.append(f"stopped after --max-rows {max_rows}: figures describe a sample")
    return DataProfile(
        path=path,
        file_format=file_format,
        format=rule.name,
        fields=tuple(fields),
        rows=rows,
        valid_rows=stats.rows,
        duplicates=stats.duplicates(),
        empty_rows=empty,
        invalid=tuple(invalid),
        invalid_count=invalid_count,
        tokens_p50=stats.percentile(50),
        tokens_p95=stats.percentile(95),
        tokens_p99=stats.percentile(99),
        tokens_max=max(stats.hist, default=0),
        tokens_mean=stats.total / max(stats.rows, 1),
        total_tokens=stats.total,
        response_tokens_mean=stats.response_total / max(stats.rows, 1),
        tokenizer=counter.name,
        sha256=file_sha256(path),
        size_bytes=os.path.getsize(path),
        label_counts=dict(labels.most_common()),
        sequences_per_row=2 if rule.name == "preference" else 1,
        truncated=truncated,
        notes=tuple(notes),
    )
