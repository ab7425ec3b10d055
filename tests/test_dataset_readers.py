"""planner.dataset.readers: every file type x compression x encoding, the shapes of .json files, line
numbers of bad rows, one-line errors, and reading with memory that does not grow with the file."""

from __future__ import annotations

import ast
import bz2
import codecs
import csv
import gzip
import io
import json
import lzma
import sys
import tracemalloc
from pathlib import Path

import pytest

from planner.dataset import readers
from planner.dataset.readers import (
    FILE_TYPES,
    BadRow,
    compression_of,
    describe_file,
    file_type_of,
    iter_records,
    open_binary,
    open_text,
)
from planner.errors import FtplanError

try:
    import zstandard
except ImportError:  # the `data` extra is not installed: zstd cases skip
    zstandard = None

# Non-ASCII in every field (accents, CJK, an emoji outside the BMP: a surrogate pair in UTF-16) and a
# double quote, which CSV quotes and TSV (QUOTE_NONE) keeps as it is.
RECORDS = [
    {"instruction": "Café au lait, s'il vous plaît", "output": "Voilà: 很好 🙂"},
    {"instruction": 'Say "hi"', "output": "hi"},
    {"instruction": "Ünïcödé ñ", "output": "∑ = 42"},
]


def _csv_text(records: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


def _tsv_text(records: list[dict]) -> str:
    """Tab-separated and unquoted, as GLUE writes it."""
    return "".join("\t".join(r) + "\n" for r in [list(records[0])] + [list(r.values()) for r in records])


TEXT_OF = {
    "jsonl": lambda rs: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs),
    "json": lambda rs: json.dumps(rs, ensure_ascii=False, indent=2),
    "csv": _csv_text,
    "tsv": _tsv_text,
    "txt": lambda rs: "".join(r["instruction"] + "\n" for r in rs),
}
EXPECTED = {t: RECORDS for t in TEXT_OF} | {"txt": [{"text": r["instruction"]} for r in RECORDS]}

COMPRESS = {
    "none": ("", lambda b: b),
    "gzip": (".gz", gzip.compress),
    "bz2": (".bz2", bz2.compress),
    "xz": (".xz", lzma.compress),
    "zstd": (".zst", lambda b: zstandard.ZstdCompressor().compress(b)),
}
COMPRESSIONS = [
    pytest.param(c, marks=pytest.mark.skipif(zstandard is None, reason="zstandard not installed")) if c == "zstd" else c
    for c in COMPRESS
]
BOMS = {
    "utf-8": b"",
    "utf-8-sig": codecs.BOM_UTF8,
    "utf-16-le": codecs.BOM_UTF16_LE,
    "utf-16-be": codecs.BOM_UTF16_BE,
    "utf-32-le": codecs.BOM_UTF32_LE,
    "utf-32-be": codecs.BOM_UTF32_BE,
}


def encode(text: str, encoding: str, bom: bool = True) -> bytes:
    codec = "utf-8" if encoding == "utf-8-sig" else encoding
    return (BOMS[encoding] if bom else b"") + text.encode(codec)


def write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def read(path) -> list[tuple[int, dict | str]]:
    """Items with BadRows as their message, for comparisons."""
    return [(line, rec if isinstance(rec, dict) else f"BadRow: {rec}") for line, rec in iter_records(str(path))]


def one_line_error(fn, *args) -> str:
    with pytest.raises(FtplanError) as err:
        fn(*args)
    message = str(err.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------- types x compression x encoding


@pytest.mark.parametrize("encoding", list(BOMS))
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("file_type", list(TEXT_OF))
def test_every_type_compression_and_encoding_reads_the_same_records(tmp_path, file_type, compression, encoding):
    suffix, compress = COMPRESS[compression]
    data = compress(encode(TEXT_OF[file_type](RECORDS), encoding))
    path = write(tmp_path / f"data.{file_type}{suffix}", data)
    assert [rec for _, rec in iter_records(path)] == EXPECTED[file_type]
    assert file_type_of(path) == file_type
    assert compression_of(path) == (None if compression == "none" else compression)
    notes = [n for n in (compression, encoding) if n not in ("none", "utf-8")]
    assert describe_file(path) == (f"{file_type} ({', '.join(notes)})" if notes else file_type)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("file_type", ["jsonl", "json", "csv"])
def test_utf16_and_utf32_without_a_bom_are_recognised_by_their_nul_bytes(tmp_path, file_type, encoding):
    path = write(tmp_path / f"d.{file_type}", encode(TEXT_OF[file_type](RECORDS), encoding, bom=False))
    assert [rec for _, rec in iter_records(path)] == RECORDS
    assert describe_file(path) == f"{file_type} ({encoding})"


def test_open_text_and_open_binary(tmp_path):
    path = write(tmp_path / "d.txt.gz", gzip.compress(encode("héllo\r\nworld\n", "utf-16-le")))
    with open_text(path) as f:
        assert f.read() == "héllo\nworld\n"  # BOM gone, universal newlines by default
    with open_text(path, newline="") as f:
        assert list(f) == ["héllo\r\n", "world\n"]
    with open_binary(path) as f:
        assert f.read() == encode("héllo\r\nworld\n", "utf-16-le")  # decompressed, not decoded


@pytest.mark.parametrize("file_type", list(TEXT_OF))
@pytest.mark.parametrize("content", [b"", b"\n\n", codecs.BOM_UTF8, gzip.compress(b"")])
def test_empty_files_yield_nothing(tmp_path, file_type, content):
    assert read(write(tmp_path / f"d.{file_type}", content)) == []


def test_header_only_csv_and_empty_json_array_yield_nothing(tmp_path):
    assert read(write(tmp_path / "d.csv", "text,label\n")) == []
    assert read(write(tmp_path / "d.json", "[ ]\n")) == []
    assert read(write(tmp_path / "e.json", '{"data": []}')) == []


# ------------------------------------------------------------------------------ compression


def test_compression_is_decided_by_magic_bytes_not_the_name(tmp_path):
    gz_named_plain = write(tmp_path / "plain.jsonl.gz", TEXT_OF["jsonl"](RECORDS))
    plain_named_gz = write(tmp_path / "packed.jsonl", gzip.compress(TEXT_OF["jsonl"](RECORDS).encode()))
    xz_named_zst = write(tmp_path / "packed.csv.zst", lzma.compress(TEXT_OF["csv"](RECORDS).encode()))
    assert compression_of(gz_named_plain) is None and describe_file(gz_named_plain) == "jsonl"
    assert compression_of(plain_named_gz) == "gzip" and describe_file(plain_named_gz) == "jsonl (gzip)"
    assert compression_of(xz_named_zst) == "xz"
    for path in (gz_named_plain, plain_named_gz, xz_named_zst):
        assert [rec for _, rec in iter_records(path)] == RECORDS


def test_text_that_starts_like_bzip2_is_still_text(tmp_path):
    path = write(tmp_path / "d.txt", "BZh9 is how a bzip2 file starts\n")
    assert compression_of(path) is None
    assert read(path) == [(1, {"text": "BZh9 is how a bzip2 file starts"})]


def test_concatenated_compressed_streams_are_read_to_the_end(tmp_path):
    a, b = TEXT_OF["jsonl"](RECORDS[:1]).encode(), TEXT_OF["jsonl"](RECORDS[1:]).encode()
    cases = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}
    if zstandard is not None:
        cases["zst"] = zstandard.ZstdCompressor().compress  # two frames, as `cat a.zst b.zst` makes
    for suffix, compress in cases.items():
        path = write(tmp_path / f"d.jsonl.{suffix}", compress(a) + compress(b))
        assert [rec for _, rec in iter_records(path)] == RECORDS, suffix


@pytest.mark.parametrize("compression", COMPRESSIONS[1:])
@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_corrupt_compressed_data_is_a_one_line_error(tmp_path, compression, damage):
    suffix, compress = COMPRESS[compression]
    lines = "".join(json.dumps({"text": f"row {i} {i * 7919 % 10007}"}) + "\n" for i in range(5_000))
    data = compress(lines.encode())
    data = data[: len(data) // 2] if damage == "truncated" else data[:40] + bytes(200) + data[240:]
    path = write(tmp_path / f"d.jsonl{suffix}", data)
    message = one_line_error(lambda: list(iter_records(path)))
    assert message.startswith(f"{path}: corrupt {compression} data near byte ")
    assert "download or compress it again" in message


def test_zstd_without_zstandard_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # `import zstandard` now raises ImportError
    path = write(tmp_path / "d.jsonl.zst", b"\x28\xb5\x2f\xfd" + bytes(16))
    message = one_line_error(lambda: list(iter_records(path)))
    assert "needs the 'zstandard' package" in message and "pip install zstandard" in message
    assert compression_of(path) == "zstd"  # the magic bytes need no package


# ---------------------------------------------------------------------------------- .json


SHAREGPT = {
    "conversations": [
        {"from": "human", "value": "What is the capital of France?"},
        {"from": "gpt", "value": "Paris."},
    ],
    "system": "Be brief.",
}


def test_single_pretty_printed_object_is_one_record(tmp_path):
    path = write(tmp_path / "conv.json", json.dumps(SHAREGPT, indent=2) + "\n")
    assert read(path) == [(1, SHAREGPT)]
    path = write(tmp_path / "late.json", "\n\n" + json.dumps(SHAREGPT, indent=4))
    assert read(path) == [(3, SHAREGPT)]
    path = write(tmp_path / "oneline.json", json.dumps(SHAREGPT))
    assert read(path) == [(1, SHAREGPT)]


def test_data_wrapper_gives_its_records_with_their_lines(tmp_path):
    path = write(tmp_path / "d.json", json.dumps({"data": RECORDS}, indent=1))
    assert read(path) == [(3, RECORDS[0]), (7, RECORDS[1]), (11, RECORDS[2])]
    path = write(tmp_path / "later.json", json.dumps({"version": "1.0", "data": RECORDS}, indent=1))
    assert [rec for _, rec in iter_records(path)] == RECORDS  # "data" not first: decoded whole


def test_json_lines_saved_as_json(tmp_path):
    path = write(tmp_path / "d.json", TEXT_OF["jsonl"](RECORDS))
    assert read(path) == [(1, RECORDS[0]), (2, RECORDS[1]), (3, RECORDS[2])]
    # A broken first line does not make it "one broken object": the other lines are still read.
    path = write(tmp_path / "bad.json", '{"text": "a\n{"text": "b"}\n\n{"text": "c"}\n')
    items = read(path)
    assert items[0][0] == 1 and items[0][1].startswith("BadRow: bad JSON: Unterminated string")
    assert items[1:] == [(2, {"text": "b"}), (4, {"text": "c"})]


def test_json_array_records_start_lines_and_non_objects(tmp_path):
    path = write(tmp_path / "d.json", '[\n  {"text": "a"},\n\n  [1, 2],\n  {"text":\n   "b"}\n]\n')
    assert read(path) == [(2, {"text": "a"}), (4, "BadRow: expected a JSON object, got a list"), (5, {"text": "b"})]


@pytest.mark.parametrize(
    "content, message",
    [
        ('[{"text": "a"}, {"text": ', "bad JSON at line 1 column 26: Expecting value; the file ends inside"),
        ('[{"text": "a"},\n {"text": "b"}', "the JSON array is not closed"),
        ('[{"text": "a"}\n {"text": "b"}]', "line 2: expected ',' or ']' between records, found '{'"),
        ('[{"text": "a"},\n {"text" "b"},\n {"text": "c"}]', "bad JSON at line 2 column 10: Expecting ':' delimiter"),
        ('"just a string"', "expected a JSON array of records"),
        ('{\n  "conversations": [\n    {"from": "human",}\n  ]\n}', "bad JSON at line 3 column 22"),
        ('{\n "a": 1\n}\n{\n "a": 2\n}\n', "several JSON values one after another (lines 1-3, then line 4)"),
    ],
)
def test_broken_json_files_are_one_line_errors_with_a_line(tmp_path, content, message):
    path = write(tmp_path / "d.json", content)
    assert message in one_line_error(lambda: list(iter_records(path)))


def test_json_array_is_read_a_window_at_a_time(tmp_path, monkeypatch):
    """With 64 KiB chunks, a 4 MB array is read with a fraction of the file in memory."""
    monkeypatch.setattr(readers, "CHUNK_CHARS", 64 * 1024)
    rec = {"text": "x" * 300}
    path = write(tmp_path / "big.json", "[\n" + ",\n".join([json.dumps(rec)] * 12_000) + "\n]\n")
    tracemalloc.start()
    try:
        rows = sum(1 for _ in iter_records(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 12_000 and peak < 1_000_000, f"peak {peak / 1e6:.2f} MB"


def test_records_larger_than_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "MAX_RECORD_CHARS", 1000)
    monkeypatch.setattr(readers, "CHUNK_CHARS", 100)
    path = write(tmp_path / "d.json", json.dumps({"text": "x" * 5000}, indent=1))
    assert "larger than 0 MiB" in one_line_error(lambda: list(iter_records(path)))
    path = write(tmp_path / "d.jsonl", '{"text": "' + "x" * 5000 + '"}\n{"text": "ok"}\n')
    assert read(path) == [
        (1, "BadRow: line longer than 0 MiB (is the file really one record per line?)"),
        (2, {"text": "ok"}),
    ]
    path = write(tmp_path / "d.csv", 'text,label\n"' + "x" * 5000 + '",1\n')
    assert "field larger than field limit" in one_line_error(lambda: list(iter_records(path)))


# ---------------------------------------------------------------------------------- .jsonl


def test_jsonl_bad_lines_keep_their_line_numbers(tmp_path):
    lines = ['{"text": "a"}', "", '{"text": oops}', "[1, 2]", '"a string"', "   ", '{"text": "b"}\r', '{"text": "c"}']
    items = read(write(tmp_path / "d.jsonl", "\n".join(lines)))
    assert items == [
        (1, {"text": "a"}),
        (3, "BadRow: bad JSON: Expecting value (column 10)"),
        (4, "BadRow: expected a JSON object, got a list"),
        (5, "BadRow: expected a JSON object, got a string"),
        (7, {"text": "b"}),
        (8, {"text": "c"}),
    ]


def test_jsonl_line_that_is_not_utf8_is_a_bad_row_with_its_byte(tmp_path):
    path = write(
        tmp_path / "d.jsonl", codecs.BOM_UTF8 + b'{"text": "ok"}\n{"text": "\xff\xfe"}\n{"text": "\xc3\xa9"}\n'
    )
    assert read(path) == [
        (1, {"text": "ok"}),
        (2, "BadRow: not valid UTF-8 text (invalid start byte at byte 28)"),  # 3 (BOM) + 15 + 10
        (3, {"text": "é"}),
    ]


def test_text_that_is_not_utf8_names_the_file_and_byte(tmp_path):
    head = "a,b\n" + "x,y\n" * 30_000  # past several 64 KiB decoding chunks
    path = write(tmp_path / "d.csv", head.encode() + b"caf\xe9,1\n")
    message = one_line_error(lambda: list(iter_records(path)))
    assert (
        message == f"{path} is not UTF-8 text (invalid continuation byte at byte {len(head) + 3}); re-save it as UTF-8"
    )
    path = write(tmp_path / "d.csv.gz", gzip.compress(head.encode() + b"caf\xe9,1\n"))
    assert f"at byte {len(head) + 3} of the decompressed data" in one_line_error(lambda: list(iter_records(path)))
    path = write(tmp_path / "odd.jsonl", encode('{"text": "a"}\n', "utf-16-le") + b"{")  # odd byte count
    assert "is not UTF-16-LE text (truncated data at byte 30)" in one_line_error(lambda: list(iter_records(path)))


# ---------------------------------------------------------------------------- .csv / .tsv / .txt


def test_csv_multiline_cells_blank_lines_and_field_counts(tmp_path):
    content = (
        " prompt , completion\r\n"  # header names are stripped
        '"Line one\r\nline two\r\nline three",done\r\n'
        "\r\n"
        "short,row\r\n"
        "one,two,three\r\n"
        '"a ""quoted"" word",x\r\n'
    )
    assert read(write(tmp_path / "d.csv", content)) == [
        (2, {"prompt": "Line one\r\nline two\r\nline three", "completion": "done"}),
        (6, {"prompt": "short", "completion": "row"}),
        (7, "BadRow: has 3 fields, the header has 2"),
        (8, {"prompt": 'a "quoted" word', "completion": "x"}),
    ]


def test_tsv_cells_with_quotes_are_taken_as_they_are(tmp_path):
    # GLUE SST-2 train.tsv style: unquoted cells, some starting with or holding a lone '"'.
    content = 'sentence\tlabel\n" the film \'s best moment \t1\nit \'s " great " fun \t1\nbad , "\t0\n\nx\t1\t2\n'
    assert read(write(tmp_path / "train.tsv", content)) == [
        (2, {"sentence": "\" the film 's best moment ", "label": "1"}),
        (3, {"sentence": 'it \'s " great " fun ', "label": "1"}),
        (4, {"sentence": 'bad , "', "label": "0"}),
        (6, "BadRow: has 3 fields, the header has 2"),
    ]
    assert file_type_of("glue/SST-2/dev.tab") == "tsv"


def test_txt_is_one_record_per_non_blank_line(tmp_path):
    content = "First document.\r\n\r\n   \nSecond  document, spaces kept  \nThird\n\n"
    assert read(write(tmp_path / "wiki_demo.txt", content)) == [
        (1, {"text": "First document."}),
        (4, {"text": "Second  document, spaces kept  "}),
        (5, {"text": "Third"}),
    ]
    assert file_type_of("README.md") == file_type_of("notes.text.bz2") == "txt"


def test_parquet_records_are_numbered_and_cannot_be_compressed(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = str(tmp_path / "d.parquet")
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    assert read(path) == [(1, RECORDS[0]), (2, RECORDS[1]), (3, RECORDS[2])]
    assert describe_file(path) == "parquet"
    packed = write(tmp_path / "d.parquet.gz", gzip.compress(Path(path).read_bytes()))
    assert "is gzip-compressed: Parquet is read in place" in one_line_error(lambda: list(iter_records(packed)))
    bad = write(tmp_path / "bad.pq", b"PAR1 not really parquet")
    assert "not a readable Parquet file" in one_line_error(lambda: list(iter_records(bad)))


# ------------------------------------------------------------------------------ file types


def test_file_types_by_extension_after_the_compression_suffix():
    assert {file_type_of(f"d{ext}") for ext in readers.EXTENSIONS} == set(FILE_TYPES)
    assert file_type_of("D.JSONL.GZ") == "jsonl" and file_type_of("x.ndjson.zstd") == "jsonl"
    assert file_type_of("a.b.csv.xz") == "csv" and file_type_of("t.TSV.gzip") == "tsv"


def test_unknown_extension_lists_the_accepted_ones(tmp_path):
    message = one_line_error(file_type_of, "data.xlsx")
    assert message.startswith("unknown data file type 'data.xlsx': use .jsonl, .ndjson, .json, .csv, .tsv")
    assert ".parquet" in message and ".txt" in message and ".zst" in message
    assert "unknown data file type 'data.gz'" in one_line_error(file_type_of, "data.gz")
    assert "use one of jsonl, json" in one_line_error(iter_records, "d.jsonl", "yaml")


def test_file_type_can_be_given(tmp_path):
    path = write(tmp_path / "records.dat", TEXT_OF["csv"](RECORDS))
    assert [rec for _, rec in iter_records(path, "csv")] == RECORDS


def test_missing_file_and_folder_are_one_line_errors(tmp_path):
    assert one_line_error(lambda: list(iter_records(str(tmp_path / "nope.jsonl")))).startswith("data file not found")
    assert "is a folder" in one_line_error(compression_of, str(tmp_path))


# ------------------------------------------------------------------------------- streaming


def test_20mb_gzipped_jsonl_streams_with_small_memory(tmp_path):
    path = tmp_path / "big.jsonl.gz"
    line = json.dumps({"text": "word " * 400}) + "\n"  # ~2 KB
    rows = 20_000_000 // len(line)
    with gzip.open(path, "wt", compresslevel=1) as f:
        f.write(line * rows)
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_records(str(path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    assert peak < 2_000_000, f"peak {peak / 1e6:.2f} MB while reading {rows * len(line) / 1e6:.0f} MB"


def test_module_imports_only_the_standard_library():
    """Pure: importable without torch/transformers; pyarrow and zstandard only inside the readers."""
    tree = ast.parse(Path(readers.__file__).read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
    assert top - {"__future__", "planner"} <= sys.stdlib_module_names
    lazy = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} - top
    assert lazy == {"pyarrow", "zstandard"}


def test_bad_rows_are_exceptions_with_an_empty_flag():
    bad = BadRow("empty row", empty=True)
    assert str(bad) == "empty row" and bad.empty and not BadRow("x").empty
