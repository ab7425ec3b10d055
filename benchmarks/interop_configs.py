"""``ftplan estimate --config`` over the axolotl and LLaMA-Factory configs those projects publish.

Reads ``../shared/peer-data/configs`` (see its README: the configs byte-identical to the two repositories at
a pinned revision, ``manifest.json`` with the processes each is launched with and what ftplan should do, and
``hub_configs.json`` with the architecture fields of the hub models outside ftplan's catalog). For every config:
the estimate on H100-SXM GPUs (80 GB) with the manifest's process count, as the config's trainer runs it, or
the one-line refusal; the keys not modelled; the keys ignored; the export round trip is exercised by
tests/test_interop.py, not here. The configs are never copied into the repository.

    .venv/bin/python benchmarks/interop_configs.py [--peer ../shared/peer-data/configs] [--json FILE]

Expectation (the manifest's ``expect``): ``estimate`` configs must be estimated; ``estimate-or-refuse``
configs (exotic setups) may be refused, in one line naming the key. The script exits 1 when that fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU = "H100-SXM"


def run(peer: Path) -> list[dict]:
    from planner.errors import FtplanError
    from planner.hardware import resolve_hardware
    from planner.interop import estimate_config, read_config
    from planner.model_spec import load_model_spec

    hub = json.loads((peer / "hub_configs.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in json.loads((peer / "manifest.json").read_text()):
            tool_dir = peer / ("axolotl" if entry["tool"] == "axolotl" else "llamafactory")
            path = tool_dir / entry["path"]
            acc = tool_dir / "examples/accelerate/fsdp_config.yaml" if "fsdp_qlora" in entry["path"] else None
            row = {"tool": entry["tool"], "path": entry["path"], "gpus": entry["gpus"], "expect": entry["expect"]}
            start = time.perf_counter()
            cwd = os.getcwd()
            os.chdir(tool_dir)  # the trainers resolve relative paths (DeepSpeed JSON) from their repository root
            try:
                hardware = resolve_hardware(gpu=GPU, gpus=entry["gpus"])
                ci = read_config(path, gpus=entry["gpus"], bf16_ok=True, accelerate_config=acc)
                model = ci.model
                if model in hub:  # a hub model outside the catalog: its published config.json fields, offline
                    folder = Path(tmp) / model.replace("/", "__")
                    folder.mkdir(exist_ok=True)
                    (folder / "config.json").write_text(json.dumps(hub[model]))
                    model = str(folder)
                est = estimate_config(ci, load_model_spec(model, offline=True), hardware, tokens=10_000_000)
                s = est.setup
                row.update(result="estimate", gib=round(est.memory.total / 2**30, 1), verdict=est.verdict,
                           setup=f"{s.method} {s.distribution} {s.precision}, mb {s.micro_batch} x seq {s.seq_len}"
                                 f"{', ckpt' if s.gradient_checkpointing else ''}"
                                 f"{'' if s.fused_loss else ', full logits'}",
                           unsupported=sorted(ci.unsupported_keys), ignored=len(ci.ignored_keys))
            except FtplanError as exc:
                row.update(result="refused", message=str(exc))
            finally:
                os.chdir(cwd)
            row["ms"] = round((time.perf_counter() - start) * 1000, 1)
            row["ok"] = row["result"] == "estimate" or row["expect"] == "estimate-or-refuse"
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    out = [f"| tool | config | GPUs | answer ({GPU}, GiB per GPU) | setup as the trainer runs it | not modelled |",
           "|---|---|---:|---|---|---|"]
    for r in rows:
        if r["result"] == "estimate":
            answer = f"{r['gib']} ({r['verdict']})"
            setup, unsup = r["setup"], ", ".join(r["unsupported"]) or "-"
        else:
            answer, setup, unsup = "refused", r["message"].split(": ", 1)[-1][:90], "-"
        flag = "" if r["ok"] else " **unexpected**"
        out.append(f"| {r['tool']} | `{r['path']}` | {r['gpus']} | {answer}{flag} | {setup} | {unsup} |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", type=Path, default=ROOT.parent / "shared" / "peer-data" / "configs")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if not (args.peer / "manifest.json").is_file():
        print(f"no published configs at {args.peer}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows = run(args.peer.resolve())
    print(markdown(rows))
    estimated = sum(r["result"] == "estimate" for r in rows)
    print(f"\n{estimated} of {len(rows)} configs estimated, {len(rows) - estimated} refused in one line; "
          f"{time.perf_counter() - start:.1f} s in all")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
