"""planner.dataset.profile and `ftplan profile`: formats, detection, bad rows, streaming, tokenizers, CLI."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from ftplan.cli import main
from planner.dataset.profile import profile_data
from planner.dataset.tokens import HEURISTIC_COEFFS, HeuristicCounter, heuristic_tokens, template_overhead
from planner.errors import FtplanError
from tests.data_profile_helpers import ASSETS, RECORDS, WRITERS, train_tokenizer, write_jsonl

# Without a tokenizer: the template tokens of an unknown model family, per message and per sequence.
MESSAGE_OVERHEAD_TOKENS, SEQUENCE_OVERHEAD_TOKENS = template_overhead(None)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def asset(name: str) -> str:
    return os.path.join(ASSETS, name)


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize("file_format", ["jsonl", "json", "csv", "parquet"])
@pytest.mark.parametrize("fmt", list(RECORDS))
def test_every_format_in_every_file_type(tmp_path, fmt, file_format):
    records = RECORDS[fmt]
    path = WRITERS[file_format](tmp_path / f"data.{file_format}", records)
    prof = profile_data(path)
    assert prof.format == fmt
    assert prof.file_format == file_format
    assert prof.rows == prof.valid_rows == len(records)
    assert prof.invalid_count == 0 and prof.duplicates == 0
    assert set(prof.fields) == {k for r in records for k in r}
    assert 0 < prof.tokens_p50 <= prof.tokens_p95 <= prof.tokens_p99 <= prof.tokens_max
    assert prof.total_tokens >= prof.tokens_max
    assert prof.size_bytes == os.path.getsize(path)
    assert prof.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert prof.sequences_per_row == (2 if fmt == "preference" else 1)


def test_same_records_give_the_same_profile_whatever_the_file_type(tmp_path):
    profiles = [profile_data(w(tmp_path / f"d.{ext}", RECORDS["chat"])) for ext, w in WRITERS.items()]
    keys = {(p.format, p.rows, p.total_tokens, p.tokens_max, p.response_tokens_mean) for p in profiles}
    assert len(keys) == 1


def test_alpaca_jsonl_invalid_rows_have_their_line_numbers():
    prof = profile_data(asset("alpaca_bad.jsonl"))
    assert prof.format == "alpaca"
    by_line = {r.line: r.reason for r in prof.invalid}
    assert sorted(by_line) == [5, 6, 7, 8, 9]  # line 3 is blank: not a record
    assert "empty response" in by_line[5] and "'output'" in by_line[5]
    assert by_line[6].startswith("bad JSON")
    assert by_line[7] == "missing field 'output'"
    assert "empty row" in by_line[8]
    assert "expected a JSON object" in by_line[9]
    # line 10: a numeric output (123) is a valid answer, trained as its decimal text
    assert prof.rows == 10 and prof.valid_rows == 5 and prof.invalid_count == 5
    assert prof.empty_rows == 1
    assert prof.duplicates == 1  # line 4 repeats line 1


def test_json_array_reports_the_line_where_each_bad_record_starts():
    prof = profile_data(asset("chat.json"))
    assert prof.format == "chat" and prof.valid_rows == 3  # incl. the ShareGPT row and the text-parts row
    by_line = {r.line: r.reason for r in prof.invalid}
    assert sorted(by_line) == [11, 13]
    assert "no assistant message" in by_line[11]
    assert "unknown role 'robot'" in by_line[13]


def test_sharegpt_conversations_are_chat():
    prof = profile_data(asset("sharegpt.jsonl"))
    assert prof.format == "chat" and prof.valid_rows == 2


def test_csv_multiline_cells_and_line_numbers():
    prof = profile_data(asset("prompt_completion.csv"))
    assert prof.format == "prompt_completion"
    assert prof.rows == 4 and prof.valid_rows == 3
    assert [(r.line, r.reason) for r in prof.invalid] == [(5, "empty response: field 'completion' is blank")]


def test_classification_counts_labels_and_flags_missing_labels():
    prof = profile_data(asset("classification.csv"))
    assert prof.format == "classification"
    assert prof.label_counts == {"positive": 2, "negative": 1}
    by_line = {r.line: r.reason for r in prof.invalid}
    assert "empty row" in by_line[5] and "label" in by_line[6]


def test_preference_with_strings_and_message_lists():
    prof = profile_data(asset("preference.jsonl"))
    assert prof.format == "preference" and prof.valid_rows == 3  # line 3: TRL's implicit prompt
    by_line = {r.line: r.reason for r in prof.invalid}
    assert sorted(by_line) == [4]
    assert "'rejected'" in by_line[4]
    assert prof.sequences_per_row == 2


def test_text_rows():
    prof = profile_data(asset("text.jsonl"))
    assert prof.format == "text" and prof.valid_rows == 2 and prof.empty_rows == 1


@pytest.mark.parametrize(
    "record, fmt",
    [
        ({"question": "2+2?", "answer": "4"}, "prompt_completion"),
        ({"instruction": "Add", "response": "4"}, "alpaca"),
        ({"sentence": "great", "label": "pos"}, "classification"),
        ({"content": "plain text"}, "text"),
    ],
)
def test_field_aliases_the_executor_accepts(tmp_path, record, fmt):
    prof = profile_data(write_jsonl(tmp_path / "d.jsonl", [record]))
    assert prof.format == fmt and prof.valid_rows == 1


def test_integer_and_boolean_labels_become_strings(tmp_path):
    rows = [
        {"text": "a", "label": 1},
        {"text": "b", "label": True},
        {"text": "c", "label": 0},
        {"text": "d", "label": 2.0},
    ]
    prof = profile_data(write_jsonl(tmp_path / "d.jsonl", rows))
    assert prof.label_counts == {"1": 2, "0": 1, "2": 1}


def test_chat_trailing_user_turns_are_not_counted(tmp_path):
    base = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi there"}]
    trailing = base + [{"role": "user", "content": "a long trailing question " * 20}]
    a = profile_data(write_jsonl(tmp_path / "a.jsonl", [{"messages": base}]))
    b = profile_data(write_jsonl(tmp_path / "b.jsonl", [{"messages": trailing}]))
    assert a.tokens_max == b.tokens_max


def test_json_object_with_data_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": RECORDS["alpaca"]}, indent=1))
    prof = profile_data(str(path))
    assert prof.format == "alpaca" and prof.valid_rows == 3


def test_task_breaks_ties_between_formats(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS["classification"])
    assert profile_data(path).format == "classification"
    assert profile_data(path, task="continued-pretraining").format == "text"


def test_duplicates_ignore_key_order_and_extra_ids(tmp_path):
    rows = [{"text": "same", "id": 1}, {"id": 2, "text": "same"}, {"text": "other"}, {"text": "same"}]
    prof = profile_data(write_jsonl(tmp_path / "d.jsonl", rows))
    assert prof.duplicates == 2


def test_percentiles_are_nearest_rank_over_rows(tmp_path):
    # One row per length 1..100 characters of 'x' (no spaces): heuristic lengths are monotone in n.
    rows = [{"text": "x" * n} for n in range(1, 101)]
    prof = profile_data(write_jsonl(tmp_path / "d.jsonl", rows))
    lengths = sorted(HeuristicCounter().count([r["text"] for r in rows]))
    lengths = [n + SEQUENCE_OVERHEAD_TOKENS for n in lengths]
    assert (
        prof.tokens_p50 == lengths[49] and prof.tokens_p95 == lengths[94] and prof.tokens_p99 == lengths[98]
    )
    assert prof.tokens_max == lengths[-1] and prof.total_tokens == sum(lengths)
    assert prof.tokens_mean == pytest.approx(sum(lengths) / 100)


def test_chat_lengths_include_template_overhead_per_message(tmp_path):
    row = {"messages": [{"role": "user", "content": "abcd"}, {"role": "assistant", "content": "efgh"}]}
    prof = profile_data(write_jsonl(tmp_path / "d.jsonl", [row]))
    content = heuristic_tokens("abcd") + heuristic_tokens("efgh")
    assert prof.tokens_max == content + 2 * MESSAGE_OVERHEAD_TOKENS + SEQUENCE_OVERHEAD_TOKENS
    assert prof.response_tokens_mean == heuristic_tokens("efgh") + 1  # the answer and its end-of-turn token


def test_max_rows_profiles_a_sample(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS["text"] * 10)
    prof = profile_data(path, max_rows=5)
    assert prof.rows == 5 and prof.truncated
    whole = profile_data(path, max_rows=30)  # exactly the file's size: not a sample
    assert whole.rows == 30 and not whole.truncated


def test_gzip_jsonl(tmp_path):
    path = str(tmp_path / "d.jsonl.gz")
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in RECORDS["alpaca"]:
            f.write(json.dumps(r) + "\n")
    prof = profile_data(path)
    assert prof.format == "alpaca" and prof.valid_rows == 3 and prof.file_format == "jsonl"


def test_csv_with_long_cells(tmp_path):
    path = WRITERS["csv"](tmp_path / "d.csv", [{"text": "word " * 100_000}])
    assert profile_data(path).valid_rows == 1


def test_dot_json_file_holding_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "d.json", RECORDS["alpaca"])
    assert profile_data(path).valid_rows == 3


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "content, name, message",
    [
        ("", "empty.jsonl", "empty dataset"),
        ("\n\n", "blank.jsonl", "empty dataset"),
        ("[]", "empty.json", "empty dataset"),
        ("text,label\n", "header.csv", "empty dataset"),
        ('{"foo": 1, "bar": 2}\n', "unknown.jsonl", "columns found: foo, bar"),
        ("{bad\n{worse\n", "garbage.jsonl", "line 1"),
        ('[{"text": "a"}, {"text": ', "cut.json", "truncated"),
        ('[{"text": "a"}, {"text": "b"}', "open.json", "not closed"),
        ('[{"text": "a"} {"text": "b"}]', "nocomma.json", "expected ','"),
        ('"just a string"', "scalar.json", "expected a JSON array"),
        ("hello", "data.docx", "unknown data file type"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(FtplanError) as err:
        profile_data(str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unrecognised_format_lists_accepted_formats(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"query": "q", "reply": "a"}])
    with pytest.raises(FtplanError, match="columns found: query, reply; accepted formats: ") as err:
        profile_data(path)
    assert all(f in str(err.value) for f in ("alpaca (instruction", "chat (messages", "preference (prompt"))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FtplanError, match="not found"):
        profile_data(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FtplanError, match="is a folder"):
        profile_data(str(tmp_path))


def test_not_utf8_jsonl_row_is_invalid(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    prof = profile_data(str(path))
    assert prof.valid_rows == 1 and prof.invalid[0].line == 2


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(FtplanError, match="not a readable Parquet"):
        profile_data(str(path))


def test_all_rows_invalid_returns_a_profile_with_no_valid_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": ""}] * 3)
    prof = profile_data(path)
    assert prof.valid_rows == 0 and prof.invalid_count == 3 and prof.tokens_max == 0


# ------------------------------------------------------------------------------ tokens


def test_tokenizer_json_counts_exactly(tmp_path):
    from tokenizers import Tokenizer

    tok_file = train_tokenizer(tmp_path / "tok")
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS["text"])
    prof = profile_data(path, tokenizer_path=str(tmp_path / "tok"))
    tok = Tokenizer.from_file(tok_file)
    lengths = [
        # raw text is tokenized with the tokenizer's own special tokens (+ EOS when the folder names one)
        len(tok.encode(r["text"], add_special_tokens=True).ids)
        for r in RECORDS["text"]
    ]
    assert prof.tokens_max == max(lengths) and prof.total_tokens == sum(lengths)
    assert prof.tokenizer.startswith("model:")
    # The file itself works too.
    assert profile_data(path, tokenizer_path=tok_file).total_tokens == sum(lengths)


def test_folder_without_tokenizer_json_falls_back_to_heuristic(tmp_path):
    (tmp_path / "model").mkdir()
    path = write_jsonl(tmp_path / "d.jsonl", RECORDS["text"])
    prof = profile_data(path, tokenizer_path=str(tmp_path / "model"))
    assert prof.tokenizer.startswith("heuristic") and any("no tokenizer.json" in n for n in prof.notes)
    with pytest.raises(FtplanError, match="tokenizer not found"):
        profile_data(path, tokenizer_path=str(tmp_path / "missing" / "tokenizer.json"))


def test_heuristic_by_character_class():
    small, large = HEURISTIC_COEFFS["small"], HEURISTIC_COEFFS["large"]
    assert heuristic_tokens("") == 0
    # Digits cost about one token each (Llama-2/Qwen/Mistral split numbers into digits).
    assert heuristic_tokens("1234567890") == round(10 * small[1])
    # CJK characters cost about a token each, far more than chars/4 would say.
    assert heuristic_tokens("\u4f60\u597d\u4e16\u754c" * 10) > 40 / 4
    # A large vocabulary needs fewer tokens for English than a 32k one.
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert heuristic_tokens(text, "large") < heuristic_tokens(text, "small")
    assert large[0] < small[0]
    counter = HeuristicCounter(vocab_size=151_643)
    assert counter.family == "large" and counter.count([text]) == [heuristic_tokens(text, "large")]


# --------------------------------------------------------------------------- streaming


def _write_big_json_array(path, target_bytes: int) -> int:
    rows = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        while f.tell() < target_bytes:
            rec = {
                "instruction": f"Question {rows}: what is {rows} + {rows * 7 % 1000}? "
                + "context " * (rows % 50),
                "input": "",
                "output": f"The answer is {rows + rows * 7 % 1000}. " + "because " * (rows % 30),
            }
            f.write(("," if rows else "") + json.dumps(rec) + "\n")
            rows += 1
        f.write("]\n")
    return rows


@pytest.mark.slow
def test_50mb_json_array_streams_with_small_memory(tmp_path):
    """Peak RSS growth (in a fresh process, so no tracemalloc slow-down) while profiling 50 MB."""
    path = str(tmp_path / "big.json")
    rows = _write_big_json_array(path, 50_000_000)
    small = asset("chat.json")
    code = (
        "import resource; from planner.dataset import profile_data\n"
        f"profile_data({small!r})\n"  # imports and caches first
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"p = profile_data({path!r})\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(p.rows, p.valid_rows, (peak - base) * 1024)\n"  # ru_maxrss is in KiB on Linux
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    n, valid, growth = map(int, proc.stdout.split())
    assert n == valid == rows
    assert growth < 30_000_000, f"RSS grew {growth / 1e6:.1f} MB while profiling a 50 MB file"


def test_json_array_buffer_stays_at_about_one_chunk(tmp_path, monkeypatch):
    """With 64 KB chunks, a 4 MB JSON array is profiled with less memory than the file itself."""
    import planner.dataset.readers as dp

    monkeypatch.setattr(dp, "CHUNK_CHARS", 64 * 1024)
    path = str(tmp_path / "mid.json")
    rows = _write_big_json_array(path, 4_000_000)
    tracemalloc.start()
    try:
        prof = profile_data(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert prof.valid_rows == rows
    # Bounded by one chunk plus one token-counting batch (~2.6 MB measured), not by the file:
    # json.load of the same file holds over 12 MB of objects.
    assert peak < 4_000_000, f"peak {peak / 1e6:.2f} MB"


def test_jsonl_memory_does_not_grow_with_rows(tmp_path):
    """Twice the rows, about the same peak: nothing per row is kept but a 15-byte digest."""
    peaks = []
    for n in (8_000, 16_000):
        path = write_jsonl(
            tmp_path / f"d{n}.jsonl", [{"text": f"row {i} " + "word " * (i % 40)} for i in range(n)]
        )
        tracemalloc.start()
        try:
            profile_data(path)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] + 8_000 * 64, peaks  # < 64 bytes per extra row


# ------------------------------------------------------------------------------- CLI


def test_cli_profile_json(capsys):
    assert main(["profile", asset("alpaca_bad.jsonl"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "alpaca" and out["invalid"][0] == {
        "line": 5,
        "reason": out["invalid"][0]["reason"],
    }


def test_cli_profile_table(capsys):
    assert main(["profile", asset("alpaca_bad.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "alpaca" in out and "line 6: bad JSON" in out and "p95" in out


def test_cli_profile_with_tokenizer_and_local_model_folder(tmp_path, capsys):
    train_tokenizer(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text(json.dumps({"vocab_size": 400}))
    assert main(["profile", asset("text.jsonl"), "--model", str(tmp_path / "model"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tokenizer"].startswith("model:")
    assert (
        main(
            [
                "profile",
                asset("text.jsonl"),
                "--tokenizer",
                str(tmp_path / "model" / "tokenizer.json"),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["tokenizer"].startswith("model:")


@pytest.mark.parametrize("args", [["nope.jsonl"], [os.path.join(ASSETS, "..")], ["--max-rows", "0"]])
def test_cli_bad_input_exits_2(tmp_path, capsys, args):
    if args == ["--max-rows", "0"]:
        args = [asset("text.jsonl"), "--max-rows", "0"]
    assert main(["profile", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftplan: error:") and err.count("\n") == 1


def test_cli_no_valid_rows_exits_2(tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": ""}] * 2)
    assert main(["profile", path]) == 2
    assert "none of the 2 rows" in capsys.readouterr().err


def test_profile_does_not_import_torch_or_transformers():
    code = (
        "import sys; from ftplan.cli import main; "
        f"rc = main(['profile', {asset('chat.json')!r}, '--json']); "
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes', 'deepspeed', 'accelerate') "
        "if m in sys.modules]; print('HEAVY', heavy, file=sys.stderr); sys.exit(rc or (1 if heavy else 0))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr
