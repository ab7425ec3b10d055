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


def close_matches(word: str, candidates, n: int = 3) -> list[str]:
    """Case-insensitive fuzzy matches, for 'did you mean' hints."""
    import difflib

    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.5)
    # Substring matches catch 'llama-3.1-8b' -> 'meta-llama/Llama-3.1-8B', which difflib ranks low.
    subs = [c for lc, c in lowered.items() if word.lower() in lc and lowered[lc] not in hits]
    return ([lowered[h] for h in hits] + subs)[:n]
