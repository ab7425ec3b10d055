"""The one error type users see.

Every bad input (unknown model, malformed config, impossible value, unreadable data, invalid plan)
raises :class:`FtplanError`; the CLI prints its message on one line and exits with code 2. Nothing
else in the planner should let a traceback reach the user.
"""

from __future__ import annotations


class FtplanError(Exception):
    """A user-facing error: ``str(err)`` is one line that names the input and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


def first_line(error: BaseException | str, limit: int = 300, *, with_type: bool = False) -> str:
    """The first non-empty line of an error (or text), at most ``limit`` characters: what one-line reports
    show of a library's multi-line message. ``with_type`` prefixes the exception's class name
    ("OutOfMemoryError: CUDA out of memory..."); an exception without text gives its class name."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")[:limit]
    if isinstance(error, BaseException) and (with_type or not text):
        name = type(error).__name__
        return f"{name}: {text}" if text else name
    return text


def close_matches(word: str, candidates, n: int = 3) -> list[str]:
    """Case-insensitive fuzzy matches, for 'did you mean' hints."""
    import difflib

    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.5)
    # Substring matches catch 'llama-3.1-8b' -> 'meta-llama/Llama-3.1-8B', which difflib ranks low.
    subs = [c for lc, c in lowered.items() if word.lower() in lc and lowered[lc] not in hits]
    return ([lowered[h] for h in hits] + subs)[:n]
