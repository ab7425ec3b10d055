"""The layers a newcomer sees in the tree are the layers the imports follow (issue 11):

    ftplan/    front ends (the click commands, the Textual wizard)  -> may import executor and planner
    executor/  training backend (torch, transformers, TRL, peft)    -> may import planner
    planner/   the pure core (no torch, transformers, peft, UI)      -> imports neither

Checked on the source (every import statement, also the ones inside functions) and at run time (importing
the whole planning path pulls in no heavy or UI library)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "planner": ("executor", "ftplan", "torch", "transformers", "peft", "trl", "accelerate", "deepspeed",
                "bitsandbytes", "textual"),
    "executor": ("ftplan", "textual"),
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_the_layers_below_it(layer):
    bad = {}
    for path in sorted((ROOT / layer).rglob("*.py")):
        hit = _imports(path) & set(FORBIDDEN[layer])
        if hit:
            bad[str(path.relative_to(ROOT))] = sorted(hit)
    assert not bad, bad


def test_the_planner_core_has_no_front_end():
    """The click CLI and the wizard live in ftplan/, not in the pure core."""
    uses_click = [str(p.relative_to(ROOT)) for p in (ROOT / "planner").rglob("*.py") if "click" in _imports(p)]
    assert not uses_click
    assert not (ROOT / "planner" / "cli.py").exists() and not (ROOT / "planner" / "wizard").exists()


def test_the_training_package_ships_no_test_fixture():
    assert not (ROOT / "executor" / "tiny_model.py").exists()


def test_the_planning_path_imports_no_heavy_library():
    code = (
        "import sys\n"
        "import planner.plan, planner.estimate, planner.memory, planner.sharding, planner.overhead\n"
        "import planner.rules.engine, planner.render, planner.dataset, planner.model_spec, planner.hardware\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trl', 'accelerate', 'textual', 'executor', "
        "'ftplan') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
