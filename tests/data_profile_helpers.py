"""Shared fixtures for the data-profile tests: sample records per format, writers, a tiny tokenizer."""

from __future__ import annotations

import csv
import json
import os

ASSETS = os.path.join(os.path.dirname(__file__), "assets", "data")

# Valid records for each record format (CSV cells hold nested values as JSON text).
RECORDS: dict[str, list[dict]] = {
    "alpaca": [
        {"instruction": "Add 12 and 30.", "input": "", "output": "42"},
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a primary colour.", "input": "", "output": "Red"},
    ],
    "chat": [
        {
            "messages": [
                {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello! How can I help?"},
            ]
        },
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Capital of Spain?"},
                {"role": "assistant", "content": "Madrid"},
            ]
        },
    ],
    "prompt_completion": [
        {"prompt": "The sky is", "completion": " blue."},
        {"prompt": "Water boils at", "completion": " 100 degrees Celsius at sea level."},
        {"prompt": "Two plus two is", "completion": " four."},
    ],
    "text": [
        {"text": "A long time ago in a galaxy far, far away."},
        {"text": "It was the best of times, it was the worst of times."},
        {"text": "Call me Ishmael."},
    ],
    "preference": [
        {"prompt": "Say something kind.", "chosen": "You are doing great work.", "rejected": "Whatever."},
        {
            "prompt": "Explain gravity briefly.",
            "chosen": "Masses attract each other.",
            "rejected": "Things fall.",
        },
        {"prompt": "Greet me.", "chosen": "Hello, nice to meet you!", "rejected": "Hi."},
    ],
    "classification": [
        {"text": "I loved it", "label": "positive"},
        {"text": "Awful service", "label": "negative"},
        {"text": "Best meal of the year", "label": "positive"},
    ],
}


def write_jsonl(path, records: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return str(path)


def write_json(path, records: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=2)
    return str(path)


def write_csv(path, records: list[dict]) -> str:
    fields = list(dict.fromkeys(k for r in records for k in r))
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in records:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return str(path)


def write_parquet(path, records: list[dict]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), str(path), row_group_size=2)
    return str(path)


WRITERS = {"jsonl": write_jsonl, "json": write_json, "csv": write_csv, "parquet": write_parquet}


def train_tokenizer(folder) -> str:
    """A small byte-level BPE trained on the fly with `tokenizers`, saved as folder/tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [
        r.get("text") or r.get("output") or json.dumps(r) for recs in RECORDS.values() for r in recs
    ] * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(str(folder), "tokenizer.json")
    tok.save(path)
    return path
