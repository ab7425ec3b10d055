"""Regenerate the sample datasets in examples/data/ (deterministic: same bytes on every run).

    python examples/make_data.py

The files are committed, so nobody needs to run this; it documents how they were made and lets the
sizes change. Every dataset is synthetic and small enough for a CPU:

- ``dates.jsonl`` (chat): ISO date <-> date in words, both directions. The demo task: a 2-layer model
  from random init gets held-out exact match from 0% to nearly 100% in a few hundred optimizer steps,
  because the answer is a learnable rewrite of the question (copy digits, look up one of 12 months).
  Every calendar date appears at most once, so the held-out split never contains a date seen in training.
- ``chat.jsonl`` (chat, with system prompts and multi-turn), ``alpaca.jsonl`` (instruction/input/output),
  ``text.jsonl`` (raw text for continued pre-training), ``classification.jsonl`` (text/label) and
  ``preference.jsonl`` (prompt/chosen/rejected for DPO): one small file per format, for docs and tests.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
DATES_ROWS = 2200  # 2000 to train on + the planner's 10% validation split (about 200)
SMALL_ROWS = 64


def _dates(rng: random.Random, n: int) -> list[tuple[int, int, int]]:
    """n distinct (year, month, day) triples; days up to 28 so every month is valid."""
    seen: set[tuple[int, int, int]] = set()
    out = []
    while len(out) < n:
        ymd = (rng.randint(1950, 2049), rng.randint(1, 12), rng.randint(1, 28))
        if ymd not in seen:
            seen.add(ymd)
            out.append(ymd)
    return out


def _iso(y: int, m: int, d: int) -> str:
    return f"{y:04d}-{m:02d}-{d:02d}"


def _words(y: int, m: int, d: int) -> str:
    return f"{MONTHS[m - 1]} {d}, {y}"


def _date_pair(rng: random.Random, ymd: tuple[int, int, int]) -> tuple[str, str]:
    if rng.random() < 0.5:
        return f"Write {_iso(*ymd)} as a date in words.", _words(*ymd)
    return f"Write {_words(*ymd)} in ISO format.", _iso(*ymd)


def dates(rng: random.Random) -> list[dict]:
    rows = []
    for ymd in _dates(rng, DATES_ROWS):
        question, answer = _date_pair(rng, ymd)
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": answer}]})
    return rows


def chat(rng: random.Random) -> list[dict]:
    rows = []
    for ymd in _dates(rng, SMALL_ROWS):
        q1, a1 = _date_pair(rng, ymd)
        y = ymd[0]
        msgs = [{"role": "system", "content": "You convert dates. Answer with the date only."},
                {"role": "user", "content": q1}, {"role": "assistant", "content": a1}]
        if rng.random() < 0.5:  # a second turn about the same date
            msgs += [{"role": "user", "content": "And the year only?"}, {"role": "assistant", "content": str(y)}]
        rows.append({"messages": msgs})
    return rows


def alpaca(rng: random.Random) -> list[dict]:
    rows = []
    for ymd in _dates(rng, SMALL_ROWS):
        if rng.random() < 0.5:
            rows.append({"instruction": "Write this date in words.", "input": _iso(*ymd), "output": _words(*ymd)})
        else:
            rows.append({"instruction": f"Write {_words(*ymd)} in ISO format.", "input": "",
                         "output": _iso(*ymd)})
    return rows


_FACTS = [
    "The ISO 8601 standard writes dates as year, month and day, separated by hyphens.",
    "A leap year has 366 days; February then has 29 days instead of 28.",
    "Months in the Gregorian calendar have 28 to 31 days.",
    "The year 2000 was a leap year because it is divisible by 400.",
    "Writing the month as a word avoids confusing day-month and month-day orders.",
]


def text(rng: random.Random) -> list[dict]:
    rows = []
    for ymd in _dates(rng, SMALL_ROWS):
        fact = rng.choice(_FACTS)
        rows.append({"text": f"{fact} For example, {_iso(*ymd)} is {_words(*ymd)}. "
                             f"It falls in {MONTHS[ymd[1] - 1]}, month {ymd[1]} of {ymd[0]}."})
    return rows


def classification(rng: random.Random) -> list[dict]:
    """Season of a date in words (northern hemisphere, meteorological seasons): a 4-way label."""
    season = {12: "winter", 1: "winter", 2: "winter", 3: "spring", 4: "spring", 5: "spring",
              6: "summer", 7: "summer", 8: "summer", 9: "autumn", 10: "autumn", 11: "autumn"}
    return [{"text": f"The meeting is on {_words(*ymd)}.", "label": season[ymd[1]]}
            for ymd in _dates(rng, SMALL_ROWS)]


def preference(rng: random.Random) -> list[dict]:
    """The right conversion is chosen; a wrong one (month off by one, or digits swapped) is rejected."""
    rows = []
    for y, m, d in _dates(rng, SMALL_ROWS):
        wrong_m = m % 12 + 1
        rows.append({"prompt": f"Write {_iso(y, m, d)} as a date in words.",
                     "chosen": _words(y, m, d),
                     "rejected": _words(y, wrong_m, d) if rng.random() < 0.5 else f"{MONTHS[m - 1]} {d}, {y + 1}"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


MAKERS = {"dates": dates, "chat": chat, "alpaca": alpaca, "text": text, "classification": classification,
          "preference": preference}


def main() -> None:
    for i, (name, make) in enumerate(MAKERS.items()):
        write_jsonl(DATA / f"{name}.jsonl", make(random.Random(1000 + i)))
        print(DATA / f"{name}.jsonl")


if __name__ == "__main__":
    main()
