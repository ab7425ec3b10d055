"""The published GPU memory measurements (benchmarks/published/gpu_measurements.yaml) are well-formed.

Form only: every row names its source, split, model, measured quantity and either maps to a TrainSetup or
carries an exclusion reason. Accuracy targets live in benchmarks/published_gpu.py, not here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "published_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("published_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def data(bench):
    return bench.load()


def test_sources_are_complete(data):
    assert data["sources"]
    for key, src in data["sources"].items():
        assert src["split"] in ("dev", "heldout"), key
        assert src["url"].startswith("https://"), key
        assert src.get("title"), key


def test_rows_are_well_formed(bench, data):
    rows = data["rows"]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "row ids must be unique"
    for r in rows:
        assert r["source"] in data["sources"], r["id"]
        # whole sources sit on one side of the split
        assert r["split"] == data["sources"][r["source"]]["split"], r["id"]
        assert r["model"] and r.get("quote"), r["id"]
        assert isinstance(r.get("gpus"), int) and r["gpus"] >= 1, r["id"]
        m = r["measured"]
        assert m["kind"] in bench.KINDS, r["id"]
        assert m["unit"] in bench.UNITS, r["id"]
        assert m["per"] == "gpu", r["id"]
        lo, hi = bench.measured_bytes(m)
        assert 0 < lo <= hi, r["id"]


def test_every_row_maps_to_a_setup_or_is_excluded(bench, data):
    for r in data["rows"]:
        setup = bench.to_setup(r, data["sources"])
        if setup is None:
            assert r.get("exclude"), f"{r['id']}: no setup and no exclusion reason"
            continue
        assert setup.gpus == r["gpus"], r["id"]
        if setup.distribution in ("ddp", "fsdp", "zero1", "zero2", "zero3"):
            assert setup.gpus >= 2 or setup.distribution.startswith("zero"), r["id"]


def test_split_is_roughly_one_third_dev(data):
    rows = data["rows"]
    dev = sum(r["split"] == "dev" for r in rows)
    assert 0.2 <= dev / len(rows) <= 0.45
    assert len(rows) >= 30


def test_flags_are_short_strings_and_printed_as_footnotes(bench, data):
    for key, src in data["sources"].items():
        assert all(isinstance(f, str) and f for f in src.get("flags") or []), key
    for r in data["rows"]:
        assert all(isinstance(f, str) and f for f in r.get("flags") or []), r["id"]
    rows = data["rows"]
    results = [{"id": r["id"], "source": r["source"], "split": r["split"], "model": r["model"], "gpus": r["gpus"],
                "kind": r["measured"]["kind"], "measured_gib": 1.0, "excluded": r.get("exclude"),
                "flags": bench.row_flags(r, data["sources"]), "method": "?", "distribution": "?", "seq_len": None,
                "micro_batch": None} for r in rows]
    md = bench.markdown(results, bench.summarize(results))
    flags = {f for res in results for f in res["flags"]}
    assert flags, "the set carries framework-difference flags"
    for f in flags:
        assert f"] {f}" in md, f
    # a source's flags reach every one of its rows
    for r, res in zip(rows, results):
        assert set(data["sources"][r["source"]].get("flags") or []) <= set(res["flags"]), r["id"]
