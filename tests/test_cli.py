"""The CLI shell: help with examples for every subcommand, lazy imports, packaging of data files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ftplan.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help_with_examples(name, capsys):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    assert "Example" in out, f"'ftplan {name} --help' shows no examples"


def test_unknown_option_is_a_usage_error(capsys):
    assert main(["estimate", "--no-such-flag"]) == 2


def test_models_lists_catalog_as_json(capsys):
    assert main(["models", "qwen2.5", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all("qwen2.5" in r["model"].lower() for r in rows)
    assert all(r["params"] > 0 for r in rows)


def test_help_and_planning_commands_do_not_import_torch():
    code = (
        "import sys; from ftplan.cli import main; "
        "main(['--help']); main(['models', '--json']); "
        "bad = [m for m in ('torch', 'transformers', 'peft', 'textual') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_wheel_ships_templates_and_catalogs(tmp_path):
    """A normal (non-editable) install must find the Jinja templates and the JSON catalogs."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("ftplan-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (ROOT / "templates").glob("*.j2")}
    assert templates, "no templates in the source tree"
    for t in templates:
        assert f"templates/{t}" in names
    assert "planner/catalogs/models.json" in names
    assert "planner/catalogs/gpus.json" in names
    assert "ftplan/wizard/wizard.tcss" in names
    assert not any(n.startswith("tests/") for n in names)


def test_models_at_80_columns_shows_every_hub_id_whole():
    """A normal terminal: no name cut with an ellipsis, no line wider than the terminal."""
    from planner.model_spec import catalog

    env = {**os.environ, "COLUMNS": "80", "LINES": "50"}
    proc = subprocess.run([sys.executable, "-m", "ftplan", "models"], capture_output=True, text=True, cwd=ROOT,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    assert all(hub_id in out for hub_id in catalog())
