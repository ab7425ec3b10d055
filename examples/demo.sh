#!/usr/bin/env bash
# ftplan demo: fine-tune a tiny model on a 2-core CPU in a few minutes, no download, no GPU.
#
#   bash examples/demo.sh                 # output in demo_out/ (replaced on every run)
#   bash examples/demo.sh --out /tmp/d    # elsewhere
#
# First run on a fresh checkout: creates .venv and installs ftplan with the tested versions
# (constraints.txt); later runs skip that. Then examples/demo.py builds a small random-init model
# locally, runs `ftplan go` on examples/data/dates.jsonl and prints the report's headline numbers.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[demo] creating .venv" >&2
  "$PY" -m venv .venv
fi
# Same stamp as tests/run.sh: re-install only when the project's requirements changed.
stamp=.venv/.ftplan-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if .venv/bin/python -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in
      ("planner", "executor", "torch", "transformers", "trl", "peft", "accelerate", "datasets")))' 2>/dev/null \
     && [ -x .venv/bin/ftplan ]; then
    :  # already installed (e.g. by hand): don't reinstall
  else
    echo "[demo] installing ftplan and its training stack into .venv (once; a few minutes)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[all,dev]' -c constraints.txt
    echo "$want" > "$stamp"
  fi
fi

# Offline by construction: nothing is downloaded (the model is built locally).
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python examples/demo.py "$@"
