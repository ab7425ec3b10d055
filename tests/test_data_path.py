"""From profile to training on the layouts people publish: `ftplan go` runs, counts that agree, one-line refusals.

Short `go` runs (the real click entry point) over one layout of each family, including the files the
executor used to refuse after planning (.jsonl.gz, JSON Lines saved as .json, a UTF-16 file) and the
templates that used to crash `go` (no system role, strict alternation). The full layout x template grid
runs under ``-m slow``. With ``../shared/peer-data`` present, every published file of its manifest is
profiled and planned as the manifest expects (skipped when the folder is absent).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("trl")

from data_layouts import LAYOUTS, write_rows
from tokenizer_matrix import build_model_folder

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer-data" / "datasets"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("datapath")


def _go_args(model: Path, data: Path, task: str, out: Path, *extra: str) -> list[str]:
    return ["go", "--model", str(model), "--data", str(data), "--task", task, "--out", str(out), "--yes",
            "--force", "--set", "training.max_steps=2", "--set", "evaluation.max_eval_samples=2", *extra]  # fmt: skip


def _go(model: Path, data: Path, task: str, out: Path, *extra: str):
    from ftplan.cli import cli

    return CliRunner().invoke(cli, _go_args(model, data, task, out, *extra))


def _go_main(capsys, *args) -> tuple[int, str]:
    """`ftplan go` through the real entry point (main: FtplanError -> one line, exit 2)."""
    from ftplan.cli import main

    code = main(_go_args(*args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _summary(out: Path) -> dict:
    return json.loads((out / "output" / "run_summary.json").read_text())


# One layout of each family, on a template that exercises it (tools on a tool-capable template, system turns
# on templates that refuse them), plus file encodings the executor used to refuse after planning.
GO_CASES = [
    ("openai_tools", "chatml_tools", ()),
    ("sharegpt_tools", "none", ()),  # ftplan's default template renders tool calls
    ("openai_chat", "gemma", ("--system-turn", "merge")),
    ("sharegpt", "mistral", ()),
    ("preference_openai", "llama3", ()),
    ("preference_hh", "chatml", ()),
    ("classification_mapped", "chatml_default_system", ("--columns", "text=utterance,label=intent")),
    ("text", "none", ()),
    ("alpaca_system_history", "chatml_default_system", ()),
]


@pytest.mark.parametrize("layout,template,extra", GO_CASES, ids=[c[0] for c in GO_CASES])
def test_go_trains_every_layout_family(root, layout, template, extra):
    spec = LAYOUTS[layout]
    model = build_model_folder(root, "bytebpe", template)
    data = write_rows(root / f"{layout}.jsonl", spec.rows * 4)
    out = root / f"go-{layout}-{template}"
    result = _go(model, data, spec.task, out, *extra)
    assert result.exit_code == 0, result.output
    summary = _summary(out)
    assert summary["status"] == "completed" and summary["global_step"] == 2
    plan_yaml = (out / "plan.yaml").read_text()
    assert f"format: {spec.format}" in plan_yaml
    d = summary["data"]
    assert d["invalid_dropped"] == 0 and d["untrained_dropped"] == 0
    assert d["rows_read"] == len(spec.rows) * 4


@pytest.mark.parametrize("encoding", ["gzip", "json-lines-in-json", "utf-16"])
def test_go_reads_the_files_the_profile_read(root, encoding):
    """The executor reads through the profile's readers: nothing plans that then fails to load."""
    rows = LAYOUTS["openai_chat"].rows * 3
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if encoding == "gzip":
        data = root / "chat.jsonl.gz"
        data.write_bytes(gzip.compress(text.encode()))
    elif encoding == "json-lines-in-json":
        data = root / "chat_lines.json"
        data.write_text(text, encoding="utf-8")
    else:
        data = root / "chat16.jsonl"
        data.write_text(text, encoding="utf-16")  # with a BOM
    model = build_model_folder(root, "bytebpe", "chatml")
    out = root / f"go-{encoding}"
    result = _go(model, data, "chat", out)
    assert result.exit_code == 0, result.output
    assert _summary(out)["data"]["rows_read"] == len(rows)


def test_gemma_template_refuses_system_turns_at_plan_time_not_in_training(root, capsys):
    model = build_model_folder(root, "bytebpe", "gemma")
    data = write_rows(root / "sys.jsonl", LAYOUTS["openai_chat"].rows)
    out = root / "go-gemma-refused"
    code, output = _go_main(capsys, model, data, "chat", out)
    assert code == 2
    last = output.strip().splitlines()[-1]
    assert last.startswith("ftplan: error:") and "System role not supported" in last and "--system-turn merge" in last
    assert "Traceback" not in output
    assert not out.exists() or not any(out.iterdir())


def test_seq_len_override_counts_cut_and_dropped_rows_as_training_does(root):
    """Plan and run agree on what a shorter seq_len cuts and drops, row for row."""
    from executor.data import build_datasets
    from executor.tokenizer import build_tokenizer
    from ftplan.commands.plan import plan_and_write
    from planner.plan import load_plan

    model = build_model_folder(root, "char", "chatml")
    long_prompt = [{"messages": [{"role": "user", "content": "word " * (20 + 10 * i)},
                                 {"role": "assistant", "content": f"answer {i}"}]} for i in range(12)]  # fmt: skip
    data = write_rows(root / "long.jsonl", long_prompt)
    result, folder = plan_and_write(
        model=str(model), data=str(data), task="chat", gpu=None, gpus=None, nodes=1, gpu_memory=None, price=None,
        goal="balanced", max_hours=None, max_cost=None, general_data=None, out_dir=str(root / "cut-plan"),
        sets=("training.seq_len=256",), trust_remote_code=False, force=True,
    )  # fmt: skip
    plan = load_plan(folder)
    assert plan.data.truncated_rows > 0 and plan.data.untrained_rows > 0
    assert any("dropped" in w for w in plan.warnings)
    bundle = build_datasets(plan, build_tokenizer(plan))
    assert bundle.stats["truncated_rows"] == plan.data.truncated_rows
    assert bundle.stats["untrained_dropped"] == plan.data.untrained_rows
    assert len(bundle.train) + len(bundle.val or []) == 12 - plan.data.untrained_rows


def test_no_trainable_row_is_refused_at_plan_time(root):
    from ftplan.commands.plan import plan_and_write
    from planner.errors import FtplanError

    model = build_model_folder(root, "char", "chatml")
    rows = [{"messages": [{"role": "user", "content": "x" * 400}, {"role": "assistant", "content": "y"}]}] * 3
    data = write_rows(root / "too_long.jsonl", rows)
    with pytest.raises(FtplanError, match="no trainable rows"):
        plan_and_write(
            model=str(model), data=str(data), task="chat", gpu=None, gpus=None, nodes=1, gpu_memory=None,
            price=None, goal="balanced", max_hours=None, max_cost=None, general_data=None,
            out_dir=str(root / "none-plan"), sets=("training.seq_len=128",), trust_remote_code=False, force=True,
        )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("template", ["none", "chatml", "chatml_default_system", "llama3", "gemma", "mistral",
                                      "chatml_tools"])  # fmt: skip
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_go_grid(root, capsys, layout, template):
    """Every layout x template: `go` finishes, or refuses in one line with exit 2 (a template's rule)."""
    spec = LAYOUTS[layout]
    model = build_model_folder(root, "bytebpe", template)
    data = write_rows(root / f"grid-{layout}.jsonl", spec.rows * 3)
    columns = ("--columns", ",".join(f"{k}={v}" for k, v in spec.columns.items())) if spec.columns else ()
    out = root / f"grid-{layout}-{template}"
    code, output = _go_main(capsys, model, data, spec.task, out, *columns)
    if code == 2:
        assert output.strip().splitlines()[-1].startswith("ftplan: error:") and "chat template" in output
        assert "Traceback" not in output
        return
    assert code == 0, output
    assert _summary(out)["status"] == "completed"


# ------------------------------------------------------------------------------- published files


def _manifest() -> dict:
    path = PEER / "manifest.json"
    return json.loads(path.read_text())["files"] if path.is_file() else {}


@pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer-data is not present")
@pytest.mark.parametrize("name", sorted(_manifest()))
def test_published_files_plan_as_the_manifest_expects(tmp_path, capsys, name):
    from ftplan.cli import main

    entry = _manifest()[name]
    out = tmp_path / "plan"
    args = ["plan", "--model", "Qwen/Qwen2.5-0.5B", "--data", str(PEER / name), "--task", entry["task"],
            "--gpu", "A100-80GB", "--out", str(out)]  # fmt: skip
    code = main(args)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    if code == 2 and entry["expect"] == "ok-or-clear-error":
        last = output.strip().splitlines()[-1]
        assert last.startswith("ftplan: error:") and "Traceback" not in output
        if "must_say" in entry:
            assert entry["must_say"] in output
        assert not out.exists() or not any(out.iterdir())
        return
    assert code == 0, output
    assert "must_not_say" not in entry or entry["must_not_say"] not in output
    from planner.plan import load_plan

    plan = load_plan(out)
    assert plan.data.format == entry["format"]
    assert plan.data.invalid_rows == 0
    if entry.get("valid"):
        assert plan.data.valid_rows >= entry["valid"]
