"""Dataset file readers: JSON Lines, JSON, CSV, TSV, Parquet and plain text, compressed or not, in any
Unicode encoding that has a byte order mark. Every reader in the project reads data through this module.

Invariants:

* Pure: the standard library only, plus ``pyarrow`` for Parquet and ``zstandard`` for zstd, both imported
  when such a file is read (``pip install 'ftplan[data]'``). No torch, no transformers, no datasets.
* Streaming: memory does not grow with the file. Text is decoded a chunk at a time, a JSON array one record
  at a time (``raw_decode`` over a window of about ``CHUNK_CHARS``), Parquet one record batch at a time. A
  single record may use up to ``MAX_RECORD_CHARS``; a larger one is an error (or a BadRow for a JSON Lines
  line), never an unbounded read.
* One-line errors: whatever goes wrong (a missing file, corrupt gzip data, bytes that are not UTF-8, a JSON
  array broken in the middle) is an :class:`FtplanError` whose message names the file, where (line, column
  or byte) and the fix, on one line. No traceback reaches the user. A record that cannot be used but does
  not stop the read (a bad JSON Lines line, a CSV row with the wrong number of cells) is yielded as a
  :class:`BadRow` with its line, so the caller can count and list it.

A reader yields ``(line, record)`` items: ``line`` is the 1-based line where the record starts (the
record's index for Parquet), ``record`` a dict or a BadRow. The compression is decided by the file's magic
bytes, not its name; the encoding by its byte order mark (see ``_sniff_encoding``).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import re
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, TextIO

from planner.errors import FtplanError

# A reader yields (line, record) where record is a dict, or (line, BadRow) for unreadable rows.
Item = tuple[int, "dict | BadRow"]

FILE_TYPES = ("jsonl", "json", "csv", "tsv", "parquet", "txt")
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
    ".text": "txt",
    ".md": "txt",
}
COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd", ".zstd": "zstd"}

CHUNK_CHARS = 1 << 20  # text read at a time by the JSON reader (read at call time: tests shrink it)
MAX_RECORD_CHARS = 64 << 20  # one record (a JSON value, a line, a CSV cell) larger than this is an error
_ZSTD_INPUT = 1 << 16  # compressed bytes fed to the zstd decoder at a time


class BadRow(Exception):
    """A record that cannot be trained on; the message is the reason shown with its line number."""

    def __init__(self, reason: str, empty: bool = False):
        super().__init__(reason)
        self.empty = empty


# ------------------------------------------------------------------------------ file types


def _accepted() -> str:
    exts = ", ".join(EXTENSIONS)
    packed = ", ".join(s for s in COMPRESSION_SUFFIXES if s not in (".gzip", ".zstd"))
    return f"use {exts} (text types may also end in {packed})"


def file_type_of(path: str) -> str:
    """The file type (one of FILE_TYPES) from the extension, after a compression suffix (.gz, .zst...)."""
    name = os.path.basename(os.fspath(path))
    stem, ext = os.path.splitext(name.lower())
    if ext in COMPRESSION_SUFFIXES:
        stem, ext = os.path.splitext(stem)
    if ext in EXTENSIONS:
        return EXTENSIONS[ext]
    raise FtplanError(f"unknown data file type '{name}': {_accepted()}")


# ----------------------------------------------------------------------------- compression

_MAGIC = (
    (b"\x1f\x8b\x08", "gzip"),  # RFC 1952 section 2.3.1: ID1 ID2, then CM 8 (deflate)
    (b"\xfd7zXZ\x00", "xz"),  # The .xz File Format 1.0.4, section 2.1.1.1 (Header Magic Bytes)
    (b"\x28\xb5\x2f\xfd", "zstd"),  # RFC 8878 section 3.1.1: Magic_Number 0xFD2FB528, little-endian
)
# bzip2: "BZh", the block size '1'..'9', then the block magic (BCD pi) or, for an empty stream, the
# end-of-stream magic (BCD sqrt(pi)). Ten bytes, so a text file that starts with "BZh" is not mistaken.
_BZ2 = re.compile(rb"BZh[1-9](\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")


def _open_file(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise FtplanError(f"data file not found: {path}") from None
    except IsADirectoryError:
        raise FtplanError(f"{path} is a folder; give a data file ({_accepted()})") from None
    except OSError as exc:
        raise FtplanError(f"cannot read {path}: {exc.strerror or exc}") from None


def _compression_of_head(head: bytes) -> str | None:
    if _BZ2.match(head):
        return "bz2"
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def compression_of(path: str) -> str | None:
    """The compression ("gzip", "bz2", "xz", "zstd") or None, from the magic bytes: a .gz file that holds
    plain text reads as plain text, and gzip data reads as gzip whatever the file is called."""
    path = os.fspath(path)
    with _open_file(path) as f:
        try:
            return _compression_of_head(f.read(10))
        except OSError as exc:
            raise FtplanError(f"cannot read {path}: {exc.strerror or exc}") from None


def _zstandard(path: str):
    try:
        import zstandard  # optional extra `ftplan[data]`
    except ImportError:
        raise FtplanError(
            f"{path} is zstd-compressed and reading it needs the 'zstandard' package",
            hint="pip install zstandard, or pip install 'ftplan[data]'",
        ) from None
    return zstandard


class _ZstdFrames:
    """zstd frames one after another (``cat a.zst b.zst`` and pzstd make several), each checked for its
    end: zstandard's ``stream_reader`` stops silently at a truncated frame, so it is not used."""

    def __init__(self, fh: BinaryIO, decompressor):
        self.fh, self.decompressor = fh, decompressor
        self.frame = None
        self.unused = b""
        self.out, self.at = b"", 0

    def read(self, size: int) -> bytes:
        while self.at >= len(self.out):
            data, self.unused = self.unused or self.fh.read(_ZSTD_INPUT), b""
            if not data:
                if self.frame is not None and not self.frame.eof:
                    raise EOFError("the file ends inside a zstd frame")
                return b""
            if self.frame is None or self.frame.eof:
                self.frame = self.decompressor.decompressobj()
            self.out, self.at = self.frame.decompress(data), 0
            if self.frame.eof:
                self.unused = self.frame.unused_data
        out = self.out[self.at : self.at + size]
        self.at += len(out)
        return out

    def close(self) -> None:
        self.out = b""


class _Decompressed(io.RawIOBase):
    """The decompressed bytes of a file, with ``offset`` (bytes delivered so far) for error messages.
    Errors of the decompressors (and of the disk) become one-line FtplanErrors."""

    def __init__(self, path: str):
        self.path = path
        self.fh = _open_file(path)
        self.offset = 0
        self.pending = b""  # bytes read ahead to sniff the encoding, delivered first
        self.inner = None
        try:
            self.compression = _compression_of_head(self.fh.read(10))
            self.fh.seek(0)
            self.inner = self._decompressor()
        except OSError as exc:
            self.fh.close()
            raise FtplanError(f"cannot read {path}: {exc.strerror or exc}") from None
        except BaseException:
            self.fh.close()
            raise

    def _decompressor(self):
        self.errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, lzma.LZMAError)
        if self.compression == "gzip":
            return gzip.GzipFile(fileobj=self.fh)
        if self.compression == "bz2":
            return bz2.BZ2File(self.fh)
        if self.compression == "xz":
            return lzma.LZMAFile(self.fh)
        if self.compression == "zstd":
            zstandard = _zstandard(self.path)
            self.errors += (zstandard.ZstdError,)
            return _ZstdFrames(self.fh, zstandard.ZstdDecompressor())
        return self.fh

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self.pending:
            data, self.pending = self.pending[:size], self.pending[size:]
        else:
            data = self._read_inner(size)
        self.offset += len(data)
        return data

    def _read_inner(self, size: int) -> bytes:
        try:
            return self.inner.read(size)
        except self.errors as exc:
            raise self._error(exc) from None

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def head(self, size: int) -> bytes:
        """The next ``size`` bytes (fewer at the end of the file), left to be read again."""
        while len(self.pending) < size:
            more = self._read_inner(size - len(self.pending))
            if not more:
                break
            self.pending += more
        return self.pending[:size]

    def skip(self, size: int) -> None:
        self.pending = self.pending[size:]
        self.offset += size

    def _error(self, exc: BaseException) -> FtplanError:
        why = " ".join(str(exc).split()) or type(exc).__name__
        if self.compression is None or (isinstance(exc, OSError) and exc.errno):
            return FtplanError(f"cannot read {self.path}: {getattr(exc, 'strerror', None) or why}")
        where = f"near byte {self.fh.tell()} of {os.fstat(self.fh.fileno()).st_size}"  # of the compressed file
        return FtplanError(
            f"{self.path}: corrupt {self.compression} data {where} ({why}); "
            "the file is damaged or was cut short: download or compress it again"
        )

    def close(self) -> None:
        if not self.closed:
            try:
                if self.inner is not None and self.inner is not self.fh:
                    self.inner.close()
            finally:
                self.fh.close()
                super().close()


def open_binary(path: str) -> BinaryIO:
    """The file's bytes, decompressed (gzip, bz2, xz or zstd, by magic bytes); errors are FtplanErrors."""
    return io.BufferedReader(_Decompressed(os.fspath(path)), 1 << 16)


# -------------------------------------------------------------------------------- encodings

# Byte order marks: the table "Unicode Encoding Form Signatures" (The Unicode Standard, section 23.8
# "Specials", Byte Order Mark) and the Unicode FAQ "UTF-8, UTF-16, UTF-32 & BOM". UTF-32-LE comes before
# UTF-16-LE: its BOM FF FE 00 00 starts with UTF-16-LE's FF FE.
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be", "utf-16-be"),
)


def _nul_pattern(head: bytes) -> str:
    """The encoding of text without a BOM, from where NUL bytes are in its first four bytes: a heuristic
    that holds when the text starts with two ASCII characters, as JSON ('{"', '[{'), a CSV header or most
    lines of text do. RFC 4627 section 3 and Python's ``json.detect_encoding`` use the same table:
    00 00 00 xx UTF-32-BE, 00 xx 00 xx UTF-16-BE, xx 00 00 00 UTF-32-LE, xx 00 xx 00 UTF-16-LE, else UTF-8."""
    if len(head) >= 4:
        if not head[0]:
            return "utf-16-be" if head[1] else "utf-32-be"
        if not head[1]:
            return "utf-16-le" if head[2] or head[3] else "utf-32-le"
    elif len(head) == 2:
        if not head[0]:
            return "utf-16-be"
        if not head[1]:
            return "utf-16-le"
    return "utf-8"


def _sniff_encoding(raw: _Decompressed) -> tuple[str, str]:
    """(name for messages, codec) of the decompressed text; skips the BOM. Done before any text is
    decoded, so a UTF-16 file is never half-read as UTF-8."""
    head = raw.head(4)
    for bom, name, codec in _BOMS:
        if head.startswith(bom):
            raw.skip(len(bom))
            return name, codec
    codec = _nul_pattern(head)
    return codec, codec


class _Text(io.TextIOWrapper):
    """Decoded text whose decoding errors are FtplanErrors naming the file and the byte offset."""

    def read(self, size: int | None = -1) -> str:
        try:
            return super().read(size)
        except UnicodeDecodeError as exc:
            raise self._decode_error(exc) from None

    def readline(self, size: int | None = -1) -> str:  # also what `for line in f` and csv.reader call
        try:
            return super().readline(size)
        except UnicodeDecodeError as exc:
            raise self._decode_error(exc) from None

    def _decode_error(self, exc: UnicodeDecodeError) -> FtplanError:
        raw: _Decompressed = self.buffer
        # The incremental decoder raised on (bytes it held back + the chunk just read), which ends at
        # raw.offset: so the bad byte is exc.start bytes after raw.offset - len(exc.object).
        where = raw.offset - len(exc.object) + exc.start
        of = " of the decompressed data" if raw.compression else ""
        label = "UTF-8" if self.encoding == "utf-8" else self.encoding.upper()
        return FtplanError(f"{raw.path} is not {label} text ({exc.reason} at byte {where}{of}); re-save it as UTF-8")


def _open_sniffed(path: str) -> tuple[_Decompressed, str, str]:
    raw = _Decompressed(os.fspath(path))
    try:
        name, codec = _sniff_encoding(raw)
    except BaseException:
        raw.close()
        raise
    return raw, name, codec


def open_text(path: str, *, newline: str | None = None) -> TextIO:
    """The file decompressed and decoded: UTF-8, or the UTF-8/16/32 of its byte order mark (see
    ``_nul_pattern`` for UTF-16/32 without one). ``newline`` is as for ``open()`` (CSV wants "")."""
    raw, _, codec = _open_sniffed(path)
    return _text(raw, codec, newline)


def _text(raw: _Decompressed, codec: str, newline: str | None) -> _Text:
    text = _Text(raw, encoding=codec, errors="strict", newline=newline)
    text._CHUNK_SIZE = 1 << 16  # bytes decoded at a time (8 KiB by default)
    return text


def describe_file(path: str) -> str:
    """How the file is read, for messages: "jsonl", "jsonl (gzip)", "csv (utf-16-le)", "json (xz, utf-8-sig)"."""
    file_type = file_type_of(path)
    if file_type == "parquet":
        compression = compression_of(path)
        return f"parquet ({compression})" if compression else "parquet"
    raw, name, _ = _open_sniffed(path)
    raw.close()
    notes = [n for n in (raw.compression, None if name == "utf-8" else name) if n]
    return f"{file_type} ({', '.join(notes)})" if notes else file_type


# ------------------------------------------------------------------------------------ lines


def _split_lines(readline: Callable, newline) -> Iterator[tuple[int, Any, int]]:
    """(line number, line or None when longer than MAX_RECORD_CHARS, its length) for each line ending at
    ``newline``; reads at most MAX_RECORD_CHARS at a time, so a file without newlines cannot fill memory."""
    number = 0
    while line := readline(MAX_RECORD_CHARS + 1):
        number += 1
        size = len(line)
        if size <= MAX_RECORD_CHARS:
            yield number, line, size
            continue
        while not line.endswith(newline) and (line := readline(CHUNK_CHARS)):
            size += len(line)
        yield number, None, size


def _too_long() -> BadRow:
    return BadRow(f"line longer than {MAX_RECORD_CHARS >> 20} MiB (is the file really one record per line?)")


def _lines(path: str) -> Iterator[tuple[int, str | BadRow]]:
    """(line number, line without its "\\n" or "\\r\\n") for every line, blank ones included.

    Lines end at "\\n" only, as JSON Lines defines them (jsonlines.org: "the line separator is '\\n'") and
    as editors and ``wc -l`` count them. UTF-8 is split as bytes and each line decoded on its own, so bytes
    that are not UTF-8 make that line a BadRow (with its byte offset) rather than end the read.
    """
    raw, _, codec = _open_sniffed(path)
    if codec != "utf-8":
        with _text(raw, codec, "\n") as f:
            for number, line, _ in _split_lines(f.readline, "\n"):
                yield number, _too_long() if line is None else line.removesuffix("\n").removesuffix("\r")
        return
    offset = raw.offset  # after a BOM
    with io.BufferedReader(raw, 1 << 16) as f:
        for number, line, size in _split_lines(f.readline, b"\n"):
            if line is None:
                yield number, _too_long()
            else:
                try:
                    yield number, line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield number, BadRow(f"not valid UTF-8 text ({exc.reason} at byte {offset + exc.start})")
            offset += size


# ---------------------------------------------------------------------------------- readers


def type_name(value) -> str:
    """A JSON value's type in the words of an error message ("an object", "a list", "null"...)."""
    names = {dict: "an object", list: "a list", bool: "a boolean", int: "a number", float: "a number",
             type(None): "null"}  # fmt: skip
    return names.get(type(value), "a string" if isinstance(value, str) else type(value).__name__)


def _as_record(value) -> dict | BadRow:
    return value if isinstance(value, dict) else BadRow(f"expected a JSON object, got {type_name(value)}")


def _read_jsonl(path: str) -> Iterator[Item]:
    """JSON Lines (jsonlines.org): one JSON value per line; blank lines are skipped, a bad line is a BadRow."""
    for number, line in _lines(path):
        if isinstance(line, BadRow):
            yield number, line
            continue
        if not line.strip():
            continue  # blank lines (a trailing newline, spacing) are not records
        try:
            record = json.loads(line)
        except ValueError as exc:
            yield number, BadRow(f"bad JSON: {getattr(exc, 'msg', exc)} (column {getattr(exc, 'colno', '?')})")
            continue
        yield number, _as_record(record)


def _read_txt(path: str) -> Iterator[Item]:
    """One {"text": line} per non-blank line, as the Hugging Face ``datasets`` "text" builder reads a file
    with its default ``sample_by="line"`` (LLaMA-Factory's wiki_demo.txt is one document per line). Unlike
    that builder, blank lines are skipped (it keeps them as empty rows, which train nothing) and lines end
    at "\\n" only (it splits with str.splitlines, which also breaks at "\\r", "\\v", "\\f", U+2028...)."""
    for number, line in _lines(path):
        if isinstance(line, BadRow):
            yield number, line
        elif line.strip():
            yield number, {"text": line}


_JSON_WS = re.compile(r"[ \t\n\r]*")  # JSON whitespace (RFC 8259 section 2), narrower than \s
_DATA_KEY = re.compile(r'\{[ \t\n\r]*"data"[ \t\n\r]*:[ \t\n\r]*\[')
_NEXT_LINE_OBJECT = re.compile(r"[^\n]*\n[ \t\n\r]*\{")  # the next non-blank line starts an object


class _BrokenJSON(Exception):
    def __init__(self, line: int, column: int, msg: str, truncated: bool):
        super().__init__(msg)
        self.line, self.column, self.msg, self.truncated = line, column, msg, truncated

    def error(self, path: str, fix: str) -> FtplanError:
        why = "the file ends inside this record (truncated?)" if self.truncated else fix
        return FtplanError(f"{path}: bad JSON at line {self.line} column {self.column}: {self.msg}; {why}")


class _JsonScanner:
    """A window over JSON text that decodes one value at a time, reading more text as needed and
    dropping what was consumed (memory: about one chunk plus one record), counting lines as it goes."""

    _decoder = json.JSONDecoder()

    def __init__(self, path: str, f: TextIO):
        self.path, self.f = path, f
        self.buf, self.pos, self.line, self.eof = "", 0, 1, False

    def fill(self, want: int = 0) -> bool:
        """Read at least a chunk more (``want`` more when a record is longer); False at the end."""
        if self.eof:
            return False
        chunk = self.f.read(max(CHUNK_CHARS, min(want, MAX_RECORD_CHARS)))
        if not chunk:
            self.eof = True
            return False
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def lookahead(self, size: int) -> str:
        while len(self.buf) - self.pos < size and self.fill():
            pass
        return self.buf[self.pos : self.pos + size]

    def skip_ws(self) -> str:
        """Advance past whitespace; the next character, or "" at the end of the file."""
        while True:
            end = _JSON_WS.match(self.buf, self.pos).end()
            self.line += self.buf.count("\n", self.pos, end)
            self.pos = end
            if end < len(self.buf):
                return self.buf[end]
            if not self.fill():
                return ""

    def decode(self) -> Any:
        """The JSON value at the current position; _BrokenJSON when it is not valid JSON."""
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self._cut_by_window(exc) and self.fill(len(self.buf) - self.pos):
                    continue  # the value goes on past the text read so far
                raise self._broken(exc) from None
            # A number or literal that ends the window may go on in the next chunk.
            if end < len(self.buf) or isinstance(value, (dict, list)) or not self.fill():
                break
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end
        return value

    def _cut_by_window(self, exc: json.JSONDecodeError) -> bool:
        """Whether the error may be the end of the text read so far rather than bad JSON: it is at the
        very end, or a string is unterminated (strict JSON strings hold no raw newline, so that happens
        only when the window ends inside one)."""
        if self.eof:
            return False
        if len(self.buf) - self.pos >= MAX_RECORD_CHARS:
            raise FtplanError(
                f"{self.path}: the JSON record starting at line {self.line} is larger than "
                f"{MAX_RECORD_CHARS >> 20} MiB; split it, or write one record per line (JSON Lines)"
            )
        return exc.pos >= len(self.buf) - 16 or exc.msg.startswith("Unterminated string")

    def _broken(self, exc: json.JSONDecodeError) -> _BrokenJSON:
        line = self.line + self.buf.count("\n", self.pos, exc.pos)
        column = exc.pos - (self.buf.rfind("\n", 0, exc.pos) + 1) + 1
        truncated = self.eof and not self.buf.rstrip().endswith(("]", "}"))
        return _BrokenJSON(line, column, exc.msg, truncated)

    def array(self) -> Iterator[Item]:
        """The records of the array that starts at the current '[' (each at the line where it starts)."""
        self.pos += 1
        first = True
        while True:
            ch = self.skip_ws()
            if ch == "":
                raise FtplanError(f"{self.path}: the JSON array is not closed (add the missing ']' at the end)")
            if ch == "]":
                return
            if not first:
                if ch != ",":
                    raise FtplanError(
                        f"{self.path}: line {self.line}: expected ',' or ']' between records, found {ch!r}; "
                        "add the missing comma"
                    )
                self.pos += 1
                self.skip_ws()
            line = self.line
            try:
                value = self.decode()
            except _BrokenJSON as err:
                raise err.error(self.path, "fix that record (JSON Lines files can be read past a bad one)") from None
            yield line, _as_record(value)
            first = False

    def one_object(self) -> tuple[int, Any] | None:
        """At a '{' that does not open {"data": [...]}: (line, value) when the file is that one JSON value,
        None when it is JSON Lines (a first value on one line with more after it, or a broken first line
        followed by a line that starts an object)."""
        start = self.line
        try:
            value = self.decode()
        except _BrokenJSON as err:
            if _NEXT_LINE_OBJECT.match(self.buf, self.pos):
                return None  # JSON Lines whose first line is broken: the JSON Lines reader reports it
            raise err.error(self.path, "fix the JSON there") from None
        end_line = self.line
        after = self.skip_ws()
        if after == "":
            return start, value
        if end_line == start:
            return None
        if after not in "{[":
            raise FtplanError(
                f"{self.path}: line {self.line}: unexpected {after!r} after the JSON object of lines "
                f"{start}-{end_line}; remove it"
            )
        raise FtplanError(
            f"{self.path}: several JSON values one after another (lines {start}-{end_line}, then line {self.line}), "
            "as jq prints them; put them in a JSON array or write one per line (jq -c)"
        )


def _read_json(path: str) -> Iterator[Item]:
    """A JSON array of records, ``{"data": [...]}``, one JSON object (one record, e.g. one pretty-printed
    ShareGPT conversation), or JSON Lines saved as .json (common on the Hugging Face hub)."""
    with open_text(path, newline="\n") as f:
        scan = _JsonScanner(path, f)
        first = scan.skip_ws()
        if first == "":
            return
        if first not in "[{":
            raise FtplanError(
                f"{path}: expected a JSON array of records ('[{{...}}, ...]'), one JSON object or JSON Lines, "
                f"found {first!r} at line {scan.line}"
            )
        wrapped = _DATA_KEY.match(scan.lookahead(4096)) if first == "{" else None
        if first == "[" or wrapped:
            if wrapped:  # {"data": [...]}: the records are the array under "data" (executor/data.py too)
                scan.line += wrapped.group().count("\n")
                scan.pos += wrapped.end() - 1
            yield from scan.array()
            return
        single = scan.one_object()
    if single is None:
        yield from _read_jsonl(path)
        return
    line, value = single
    data = value.get("data") if isinstance(value, dict) else None
    # {"version": ..., "data": [...]} with "data" not first: decoded whole, so its records get the
    # object's line (the streamed wrapper above gives each record its own).
    for record in data if isinstance(data, list) else [value]:
        yield line, _as_record(record)


def _read_delimited(path: str, **dialect) -> Iterator[Item]:
    """Rows of a header + rows file, as {header name: cell}; line = physical line where the row starts."""
    with open_text(path, newline="") as f:  # newline="": the csv module handles line ends in quoted cells
        csv.field_size_limit(MAX_RECORD_CHARS)  # the default 128 KiB per cell is too small for long documents
        reader = csv.reader(f, **dialect)
        try:
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            start = reader.line_num + 1
            for values in reader:
                line, start = start, reader.line_num + 1
                if not values or (len(values) == 1 and not values[0].strip()):
                    continue  # blank line
                if len(values) != len(header):
                    yield line, BadRow(f"has {len(values)} fields, the header has {len(header)}")
                    continue
                yield line, dict(zip(header, values))
        except csv.Error as exc:
            raise FtplanError(
                f"{path}: line {reader.line_num}: malformed {'TSV' if dialect else 'CSV'} ({exc}); "
                "check the quoting there (an unclosed quote reads on to the end of the file)"
            ) from None


def _read_csv(path: str) -> Iterator[Item]:
    return _read_delimited(path)


def _read_tsv(path: str) -> Iterator[Item]:
    # Tab-separated files are not quoted: GLUE's SST-2 (header "sentence\tlabel") has cells that start
    # with or hold a lone '"', which the csv module's default quoting would read as an open quote.
    return _read_delimited(path, delimiter="\t", quoting=csv.QUOTE_NONE)


def _read_parquet(path: str) -> Iterator[Item]:
    compression = compression_of(path)
    if compression:
        raise FtplanError(
            f"{path} is {compression}-compressed: Parquet is read in place (it compresses its own pages); "
            "decompress the file first"
        )
    try:
        import pyarrow.parquet as pq  # optional extra `ftplan[data]`
    except ImportError:
        raise FtplanError(f"reading {path} needs pyarrow", hint="pip install 'ftplan[data]'") from None
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    except Exception as exc:  # noqa: BLE001 - pyarrow.ArrowInvalid, OSError, ...
        raise FtplanError(f"{path} is not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    index = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a corrupt row group
            raise FtplanError(f"{path}: cannot read Parquet rows after record {index} ({exc})") from None
        for record in batch.to_pylist():
            index += 1
            yield index, record


READERS: dict[str, Callable[[str], Iterator[Item]]] = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": _read_csv,
    "tsv": _read_tsv,
    "parquet": _read_parquet,
    "txt": _read_txt,
}


def iter_records(path: str, file_type: str | None = None) -> Iterator[Item]:
    """(line, record or BadRow) for every record of the file, read as ``file_type`` (default: by its name).
    An empty file yields nothing; every failure is an FtplanError."""
    path = os.fspath(path)
    if file_type is None:
        file_type = file_type_of(path)
    elif file_type not in READERS:
        raise FtplanError(f"unknown file type '{file_type}': use one of {', '.join(FILE_TYPES)}")
    return READERS[file_type](path)
