"""ftplan's memory estimate against published GPU memory measurements of fine-tuning runs.

Reads benchmarks/published/gpu_measurements.yaml (rows with their source, settings and split), maps each
row to a ``TrainSetup`` + ``ModelSpec`` and runs ``planner.memory.estimate_memory``. The like quantity is
compared:

* ``max_memory_allocated``            -> ``peak_allocated``
* ``max_memory_reserved`` -> ``peak_allocated`` + the caching allocator's reserve and the cuBLAS workspaces
  it holds (``planner.overhead.reserved_beyond_peak``: no CUDA context, no NCCL buffers, which torch does
  not count as reserved)
* ``device_used`` (nvidia-smi, NVML) -> ``total`` (peak + overhead)
* ``unknown`` ("peak memory" of unstated kind) -> ``total``, flagged with ``?``

A stated range (``value: [low, high]``) counts as 0 error inside the range, else the error to the nearer
end. Rows with an ``exclude`` reason (a setting ftplan cannot express) are listed, estimated where a
setup is given, and left out of the statistics (counted). ``flags`` (the source's, then the row's) mark
framework differences ftplan approximates; the markdown report prints them as numbered footnotes. No CUDA
needed: the estimator is analytic.

Run:  python benchmarks/published_gpu.py [--data FILE] [--json benchmarks/results/published_gpu.json]
          [--markdown FILE] [--split dev|heldout]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import fields
from pathlib import Path

import yaml

from planner.memory import TrainSetup, estimate_memory
from planner.model_spec import load_model_spec
from planner.overhead import reserved_beyond_peak

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "published" / "gpu_measurements.yaml"
JSON_OUT = ROOT / "results" / "published_gpu.json"
GIB = 2**30
UNITS = {"B": 1, "MiB": 2**20, "GiB": 2**30, "GB": 10**9}
KINDS = ("max_memory_allocated", "max_memory_reserved", "device_used", "unknown")
SETUP_FIELDS = {f.name for f in fields(TrainSetup)}
# keys a source's `setup` may carry that are not TrainSetup fields
NON_SETUP_KEYS = {"model"}


def load(path: Path = DATA) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def measured_bytes(m: dict) -> tuple[float, float]:
    """(low, high) bytes; equal for a single value."""
    v = m["value"]
    lo, hi = (v, v) if not isinstance(v, list) else (v[0], v[1])
    u = UNITS[m["unit"]]
    return lo * u, hi * u


def setup_dict(row: dict, sources: dict) -> dict | None:
    """The TrainSetup keyword arguments of a row (source defaults, then the row's own), or None."""
    if "setup" not in row:
        return None
    merged = {k: v for k, v in (sources[row["source"]].get("setup") or {}).items() if k not in NON_SETUP_KEYS}
    merged.update(row["setup"])
    merged.setdefault("gpus", row.get("gpus", 1))
    if "lora_target_modules" in merged:
        merged["lora_target_modules"] = tuple(merged["lora_target_modules"])
    return merged


def row_flags(row: dict, sources: dict) -> list[str]:
    """The source's flags (framework differences common to its rows), then the row's own."""
    return list(sources[row["source"]].get("flags") or []) + list(row.get("flags") or [])


def to_setup(row: dict, sources: dict) -> TrainSetup | None:
    d = setup_dict(row, sources)
    if d is None:
        return None
    unknown = set(d) - SETUP_FIELDS
    if unknown:
        raise ValueError(f"{row['id']}: not TrainSetup fields: {sorted(unknown)}")
    return TrainSetup(**d)


def group(setup: TrainSetup | None, row: dict) -> str:
    if setup is None:
        return "n/a"
    if setup.distribution in ("fsdp", "zero1", "zero2", "zero3"):
        return "sharded"
    if setup.method == "full":
        return "full"
    if setup.gpus == 1 and setup.method in ("lora", "dora", "qlora"):
        return "single-GPU LoRA/QLoRA"
    return "data-parallel LoRA/QLoRA"


def evaluate(row: dict, sources: dict) -> dict:
    m = row["measured"]
    lo, hi = measured_bytes(m)
    out = {
        "id": row["id"], "source": row["source"], "split": row["split"], "model": row["model"],
        "gpu": row.get("gpu", ""), "gpus": row.get("gpus", 1), "kind": m["kind"],
        "measured_gib": [lo / GIB, hi / GIB] if lo != hi else lo / GIB,
        "excluded": row.get("exclude"), "flags": row_flags(row, sources),
    }
    try:
        setup = to_setup(row, sources)
    except Exception as e:  # a malformed row is reported, not fatal
        setup = None
        out["excluded"] = out["excluded"] or f"setup error: {e}"
    out["group"] = group(setup, row)
    if setup is not None:
        out.update(method=setup.method, distribution=setup.distribution, seq_len=setup.seq_len,
                   micro_batch=setup.micro_batch)
    else:
        out.update(method=(row.get("stated") or {}).get("method", "?"), distribution="?", seq_len=None,
                   micro_batch=None)
    if setup is None:
        return out
    try:
        spec = load_model_spec(row["model"])
        mb = estimate_memory(spec, setup)
    except Exception as e:
        out["excluded"] = out["excluded"] or f"estimator error: {type(e).__name__}: {e}"
        return out
    compared = {"max_memory_allocated": "peak_allocated", "max_memory_reserved": "reserved"}.get(m["kind"], "total")
    est = {"peak_allocated": mb.peak_allocated, "total": mb.total,
           "reserved": mb.peak_allocated + reserved_beyond_peak(mb.peak_allocated, setup)}[compared]
    if est < lo:
        err = (est - lo) / lo
    elif est > hi:
        err = (est - hi) / hi
    else:
        err = 0.0
    out.update(compared_with=compared, estimated_gib=est / GIB, peak_allocated_gib=mb.peak_allocated / GIB,
               total_gib=mb.total / GIB, error=err, phase=mb.phase)
    return out


def _stats(errs: list[float]) -> dict:
    a = [abs(e) for e in errs]
    return {"n": len(a), "median_abs": statistics.median(a) if a else None, "max_abs": max(a) if a else None,
            "median_signed": statistics.median(errs) if errs else None}


def summarize(results: list[dict]) -> dict:
    scored = [r for r in results if "error" in r and not r["excluded"]]
    summary: dict = {"rows": len(results), "scored": len(scored),
                     "excluded": sum(1 for r in results if r["excluded"]), "by_split": {}, "by_group": {}}
    for split in ("dev", "heldout"):
        summary["by_split"][split] = _stats([r["error"] for r in scored if r["split"] == split])
        for g in sorted({r["group"] for r in scored}):
            summary["by_group"].setdefault(g, {})[split] = _stats(
                [r["error"] for r in scored if r["split"] == split and r["group"] == g])
    summary["by_kind"] = {k: _stats([r["error"] for r in scored if r["kind"] == k]) for k in KINDS}
    return summary


def _fmt_gib(v) -> str:
    if isinstance(v, list):
        return f"{v[0]:.1f}-{v[1]:.1f}"
    return f"{v:.2f}"


def markdown(results: list[dict], summary: dict) -> str:
    kind_mark = {"max_memory_allocated": "A", "max_memory_reserved": "R", "device_used": "D", "unknown": "?"}
    notes: dict[str, int] = {}  # flag text -> footnote number, in order of first appearance
    for r in results:
        for f in r["flags"]:
            notes.setdefault(f, len(notes) + 1)
    lines = ["| row | model | method | GPUs | distribution | seq | batch | measured GiB (kind) | estimated GiB "
             "| error | split | flags |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        model = r["model"].split("/")[-1]
        est = f"{r['estimated_gib']:.2f}" if "estimated_gib" in r else "-"
        if r["excluded"]:
            err = "excluded: " + r["excluded"]
        elif "error" in r:
            err = f"{100 * r['error']:+.0f}%"
        else:
            err = "-"
        lines.append(f"| {r['id']} | {model} | {r['method']} | {r['gpus']} | {r['distribution']} | "
                     f"{r['seq_len'] or '-'} | {r['micro_batch'] or '-'} | {_fmt_gib(r['measured_gib'])} "
                     f"({kind_mark[r['kind']]}) | {est} | {err} | {r['split']} | "
                     f"{' '.join(f'[{notes[f]}]' for f in r['flags']) or '-'} |")
    lines += ["", "Flags (framework differences ftplan approximates; the row stays scored unless excluded):"]
    lines += [f"[{n}] {f}" + ("  " if n < len(notes) else "") for f, n in notes.items()]
    lines += ["", "Kinds: A = max_memory_allocated (vs peak_allocated); R = max_memory_reserved (vs peak + allocator "
              "reserve + cuBLAS workspaces); D = device used (nvidia-smi), ? = unstated kind (both vs total = peak "
              "+ overhead).", "",
              f"{summary['scored']} rows scored, {summary['excluded']} excluded (not expressible), "
              f"{summary['rows']} in all.", "",
              "| split | group | n | median abs error | max abs error | median signed |", "|---|---|---|---|---|---|"]

    def row(split, g, s):
        if not s["n"]:
            return None
        return (f"| {split} | {g} | {s['n']} | {100 * s['median_abs']:.0f}% | {100 * s['max_abs']:.0f}% | "
                f"{100 * s['median_signed']:+.0f}% |")

    for split in ("dev", "heldout"):
        for line in [row(split, "all", summary["by_split"][split])] + [
                row(split, g, summary["by_group"][g][split]) for g in summary["by_group"]]:
            if line:
                lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, default=JSON_OUT)
    ap.add_argument("--markdown", type=Path, default=None, help="also write the markdown table to this file")
    ap.add_argument("--split", choices=("dev", "heldout"), default=None, help="only rows of this split")
    args = ap.parse_args(argv)
    data = load(args.data)
    rows = [r for r in data["rows"] if args.split is None or r["split"] == args.split]
    results = [evaluate(r, data["sources"]) for r in rows]
    summary = summarize(results)
    md = markdown(results, summary)
    sys.stdout.write(md)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"summary": summary, "rows": results}, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
