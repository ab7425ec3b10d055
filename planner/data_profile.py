"""Dataset profiling: format detection, row counts, token lengths, duplicates, invalid rows. Streams.

INTERFACE: DataProfile below is the contract used by rules/render/wizard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DataFormat = Literal["alpaca", "chat", "prompt_completion", "text", "preference", "classification"]


@dataclass(frozen=True)
class InvalidRow:
    line: int  # 1-based line (JSONL/CSV) or record index (JSON/Parquet) in the file
    reason: str


@dataclass(frozen=True)
class DataProfile:
    path: str
    file_format: Literal["jsonl", "json", "csv", "parquet"]
    format: DataFormat  # detected record format
    fields: tuple[str, ...]  # columns seen
    rows: int  # records read (valid + invalid)
    valid_rows: int
    duplicates: int  # exact duplicate records (after the first)
    empty_rows: int
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
