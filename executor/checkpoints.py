"""Checkpoints that are complete or ignored: a commit marker, verification, resume, rotation.

HF Trainer writes ``checkpoint-N`` in place (transformers/trainer.py ``_save_checkpoint``: weights,
then optimizer, scheduler, RNG, trainer_state.json; no temp dir, no rename), so a SIGKILL mid-save
leaves a folder that ``get_last_checkpoint`` would happily pick. We commit each checkpoint once the
Trainer is done with it: a marker listing every file and its size, written to a temp file and renamed
(atomic on POSIX). Only committed checkpoints are resumed from; rotation (``save_total_limit``) runs
after the commit, so a crash never leaves fewer complete checkpoints than before the save.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from planner.errors import FtplanError

MARKER = "ftplan_complete.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def step_of(path: Path) -> int:
    m = _CHECKPOINT_RE.match(path.name)
    return int(m.group(1)) if m else -1


def list_checkpoints(folder: Path) -> list[Path]:
    """checkpoint-N folders, oldest first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and step_of(p) >= 0), key=step_of)


def _file_sizes(ckpt: Path) -> dict[str, int]:
    return {
        str(f.relative_to(ckpt)): f.stat().st_size
        for f in sorted(ckpt.rglob("*"))
        if f.is_file() and f.name != MARKER and not f.name.startswith(".")
    }


def mark_complete(ckpt: Path) -> None:
    """Write the commit marker (temp file + fsync + rename)."""
    payload = {"step": step_of(ckpt), "files": _file_sizes(ckpt)}
    tmp = ckpt / f".{MARKER}.tmp"
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, ckpt / MARKER)


def is_complete(ckpt: Path) -> bool:
    return (ckpt / MARKER).is_file()


def verify(ckpt: Path) -> None:
    """Raise FtplanError when a committed checkpoint no longer matches its marker (corrupted)."""
    fix = f"delete {ckpt} to resume from the previous checkpoint, or delete the folder to start over"
    try:
        marker = json.loads((ckpt / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise FtplanError(f"checkpoint {ckpt}: its completion marker is unreadable", hint=fix) from None
    for rel, size in files.items():
        f = ckpt / rel
        if not f.is_file():
            raise FtplanError(f"checkpoint {ckpt}: file '{rel}' is missing (corrupted checkpoint)", hint=fix)
        if f.stat().st_size != size:
            raise FtplanError(
                f"checkpoint {ckpt}: file '{rel}' is {f.stat().st_size} bytes, {size} when saved "
                "(corrupted checkpoint)",
                hint=fix,
            )
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise FtplanError(
            f"checkpoint {ckpt}: trainer_state.json is unreadable (corrupted checkpoint)", hint=fix
        ) from None


def resume_checkpoint(folder: Path, log=print) -> Path | None:
    """The newest committed checkpoint (verified), after deleting uncommitted (partial) ones."""
    last = None
    for ckpt in list_checkpoints(folder):
        if is_complete(ckpt):
            last = ckpt
    for ckpt in list_checkpoints(folder):
        if not is_complete(ckpt):
            log(f"ftplan: removing incomplete checkpoint {ckpt.name} (the run stopped while writing it)")
            shutil.rmtree(ckpt, ignore_errors=True)
    if last is not None:
        verify(last)
    return last


def rotate(folder: Path, keep: int, protect: str | None = None) -> list[Path]:
    """Delete the oldest committed checkpoints beyond ``keep`` (never ``protect``, the best one)."""
    complete = [c for c in list_checkpoints(folder) if is_complete(c)]
    protected = Path(protect).resolve() if protect else None
    removable = [c for c in complete if c.resolve() != protected]
    excess = len(complete) - keep
    removed = []
    for ckpt in removable:
        if excess <= 0:
            break
        if ckpt == complete[-1]:  # never the newest
            continue
        shutil.rmtree(ckpt, ignore_errors=True)
        removed.append(ckpt)
        excess -= 1
    return removed
