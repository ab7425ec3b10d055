"""One data path, proved over a matrix: tokenizer styles x chat templates x the layouts real data uses.

For every cell the plan is made through the real planning code (``plan_and_write``), then the executor's
``build_datasets`` tokenizes the plan's rows, and the profile's per-row token lengths (its exact length
histogram) must equal the lengths the executor hands to the trainer, which must equal what transformers'
own ``apply_chat_template`` produces. Where the model's template refuses the data, planning refuses in one
line naming the template's rule and the fix; with the fix, the lengths agree again.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("trl")

from data_layouts import LAYOUTS, REFUSED, write_rows
from tokenizer_matrix import build_model_folder

from planner.errors import FtplanError

TEMPLATES = ("none", "chatml", "chatml_default_system", "llama3", "gemma", "mistral", "chatml_tools")
CELLS = [("bytebpe", t, name) for t in TEMPLATES for name in LAYOUTS] + [
    ("char", t, name) for t in ("chatml", "gemma", "none") for name in LAYOUTS
]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix")


def _plan(model: Path, data: Path, task: str, out: Path, **kw):
    from ftplan.commands.plan import plan_and_write

    options = dict(
        model=str(model), data=str(data), task=task, gpu=None, gpus=None, nodes=1, gpu_memory=None, price=None,
        goal="balanced", max_hours=None, max_cost=None, general_data=None, out_dir=str(out),
        sets=("training.seq_len=4096",), trust_remote_code=False, force=True,
    )  # fmt: skip
    options.update(kw)
    return plan_and_write(**options)


def _trained_lengths(plan_dir: Path) -> tuple[Counter, object, object]:
    from executor.data import build_datasets
    from executor.tokenizer import build_tokenizer
    from planner.plan import load_plan

    plan = load_plan(plan_dir)
    tok = build_tokenizer(plan)
    bundle = build_datasets(plan, tok)
    lengths: Counter[int] = Counter()
    for ds in (bundle.train, bundle.val):
        if ds is None:
            continue
        if "input_ids" in ds.column_names:
            lengths.update(len(ids) for ids in ds["input_ids"])
        else:  # preference pairs: TRL tokenizes prompt+answer with apply_chat_template (dpo_trainer._tokenize)
            for row in ds:
                tools = json.loads(row["tools"]) if row.get("tools") else None
                n = [len(tok.apply_chat_template(row["prompt"] + row[k], tools=tools, tokenize=True)["input_ids"])
                     for k in ("chosen", "rejected")]  # fmt: skip
                lengths[max(n)] += 1
    return lengths, bundle, tok


def _profile_lengths(profile) -> Counter:
    return Counter(profile.length_hist)


def _dedup(counter: Counter, profile) -> Counter:
    """The executor de-duplicates rows; the fixtures have none, so the histograms must match as they are."""
    assert profile.duplicates == 0
    return counter


@pytest.mark.parametrize("tokenizer,template,layout", CELLS)
def test_profile_lengths_are_the_trained_lengths(root, tokenizer, template, layout):
    spec = LAYOUTS[layout]
    model = build_model_folder(root, tokenizer, template)
    data = write_rows(root / f"{layout}.jsonl", spec.rows)
    out = root / "plans" / f"{tokenizer}-{template}-{layout}"
    columns = ",".join(f"{k}={v}" for k, v in spec.columns.items()) or None
    try:
        result, folder = _plan(model, data, spec.task, out, columns=columns)
    except FtplanError as exc:
        # Only a template's refusal may stop the plan here: one line, the template's words, a fix when one exists.
        message = str(exc)
        assert "chat template" in message and "\n" not in message
        refusal = "System role not supported" in message or "must alternate" in message
        tool_calls = "does not render tool calls" in message
        assert refusal or tool_calls, message
        if "System role" in message:
            assert "--system-turn merge" in (exc.hint or "")
            result, folder = _plan(model, data, spec.task, out, columns=columns, system_turn="merge")
        else:
            return
    profile = result.profile
    assert profile.format == spec.format
    assert profile.valid_rows == len(spec.rows) and profile.invalid_count == 0
    assert profile.tokenizer.startswith("model:")
    trained, bundle, tok = _trained_lengths(Path(folder))
    if spec.task == "continued-pretraining":
        # Raw text is chunked by packing; the tokens before chunking are what the profile counts.
        assert sum(trained.elements()) == sum(profile.length_hist and Counter(profile.length_hist).elements())
    assert trained == _dedup(_profile_lengths(profile), profile)
    assert bundle.stats["truncated_rows"] == profile.over(result.plan.training.seq_len)[0] == 0


@pytest.mark.parametrize("template", ["chatml", "llama3", "chatml_tools", "none", "mistral", "gemma"])
@pytest.mark.parametrize("layout", ["openai_chat", "sharegpt", "openai_tools", "alpaca"])
def test_renderer_equals_apply_chat_template(root, template, layout):
    """The planner's renderer (no transformers) gives the text transformers renders, token for token."""
    from transformers import AutoTokenizer

    from planner.dataset.chat import TemplateRefusal, template_from_folder
    from planner.dataset.layouts import normalise

    folder = build_model_folder(root, "bytebpe", template)
    tok = AutoTokenizer.from_pretrained(folder)
    ours = template_from_folder(str(folder))
    if template == "none":
        tok.chat_template = ours.text
    for row in LAYOUTS[layout].rows:
        ex = normalise(row, LAYOUTS[layout].format).example
        try:
            text = ours.render(ex["messages"], ex.get("tools"))
        except TemplateRefusal:
            with pytest.raises(Exception, match="alternate|System role"):
                tok.apply_chat_template(ex["messages"], tools=ex.get("tools"), tokenize=False)
            continue
        assert text == tok.apply_chat_template(ex["messages"], tools=ex.get("tools"), tokenize=False)


def test_char_tokenizer_finer_than_any_heuristic_still_trains_every_row(root):
    """A character-level tokenizer makes rows ~4x longer than a heuristic thinks; the plan's seq_len comes
    from the exact counts, so nothing is cut or dropped and training sees the planned lengths."""
    model = build_model_folder(root, "char", "chatml")
    data = write_rows(root / "long_chat.jsonl", [r for r in LAYOUTS["openai_chat"].rows] * 1)
    from ftplan.commands.plan import plan_and_write

    result, folder = plan_and_write(
        model=str(model), data=str(data), task="chat", gpu=None, gpus=None, nodes=1, gpu_memory=None, price=None,
        goal="balanced", max_hours=None, max_cost=None, general_data=None, out_dir=str(root / "char-plan"),
        sets=(), trust_remote_code=False, force=True,
    )  # fmt: skip
    seq_len = result.plan.training.seq_len
    assert seq_len >= result.profile.tokens_max
    trained, bundle, _ = _trained_lengths(Path(folder))
    assert trained == Counter(result.profile.length_hist)
    assert bundle.stats["untrained_dropped"] == 0


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_layouts_say_why_in_one_line(root, name):
    task, rows, word = REFUSED[name]
    model = build_model_folder(root, "bytebpe", "chatml")
    data = write_rows(root / f"refused_{name}.jsonl", rows)
    out = root / "plans" / f"refused-{name}"
    with pytest.raises(FtplanError) as info:
        _plan(model, data, task, out)
    text = f"{info.value} {info.value.hint or ''}"
    assert word in text
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_template_refusal_names_line_rule_and_fix(root):
    model = build_model_folder(root, "bytebpe", "gemma")
    data = write_rows(root / "sys.jsonl", LAYOUTS["openai_chat"].rows)
    with pytest.raises(FtplanError) as info:
        _plan(model, data, "chat", root / "plans" / "gemma-refused")
    assert "line 1: System role not supported" in str(info.value)
    assert "6 of 6 rows" in str(info.value)
    assert "--system-turn merge" in info.value.hint


def test_system_merge_puts_the_system_text_in_the_first_user_turn(root):
    from planner.dataset.chat import TemplateFixes, apply_fixes

    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    assert apply_fixes(msgs, TemplateFixes("merge")) == [
        {"role": "user", "content": "S\n\nU"},
        {"role": "assistant", "content": "A"},
    ]
    assert apply_fixes(msgs, TemplateFixes("drop")) == msgs[1:]
    double = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    assert apply_fixes(double, TemplateFixes(merge_consecutive=True))[0]["content"] == "a\n\nb"
