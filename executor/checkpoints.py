"""Checkpoints that are complete, verified or set aside: a commit marker with content hashes, resume, rotation.

HF Trainer writes ``checkpoint-N`` in place (transformers/trainer.py ``_save_checkpoint``: weights,
then optimizer, scheduler, RNG, trainer_state.json; no temp dir, no rename), so a SIGKILL mid-save
leaves a folder that ``get_last_checkpoint`` would happily pick. We commit each checkpoint once the
Trainer is done with it: a marker listing every file with its size and sha256, written to a temp file
and renamed (atomic on POSIX). Invariants:

* only committed checkpoints are resumed from, and only after every file matches its hash (a file
  damaged without changing its size is caught, not trained on);
* a damaged newest checkpoint is moved aside (``checkpoint-N.damaged``, never deleted) and the previous
  complete one is used;
* rotation (``save_total_limit``) runs after the commit, on the main process only, so a crash never
  leaves fewer complete checkpoints than before the save.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

from planner.errors import FtplanError
from planner.files import write_atomic

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


def _files(ckpt: Path) -> list[Path]:
    return [f for f in sorted(ckpt.rglob("*")) if f.is_file() and f.name != MARKER and not f.name.startswith(".")]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mark_complete(ckpt: Path) -> None:
    """Write the commit marker (temp file + fsync + rename): every file's size and sha256."""
    files = {str(f.relative_to(ckpt)): {"size": f.stat().st_size, "sha256": sha256_of(f)} for f in _files(ckpt)}
    write_atomic(ckpt / MARKER, json.dumps({"step": step_of(ckpt), "files": files}, indent=1))


def is_complete(ckpt: Path) -> bool:
    return (ckpt / MARKER).is_file()


class DamagedCheckpoint(FtplanError):
    """A committed checkpoint whose files no longer match their marker."""


def verify(ckpt: Path) -> None:
    """Raise DamagedCheckpoint when a committed checkpoint no longer matches its marker (size and hash)."""
    fix = f"move {ckpt} aside to resume from the previous checkpoint, or delete the folder to start over"
    try:
        marker = json.loads((ckpt / MARKER).read_text(encoding="utf-8"))
        files = marker["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DamagedCheckpoint(f"checkpoint {ckpt}: its completion marker is unreadable", hint=fix) from None
    for rel, meta in files.items():
        size, digest = (meta, None) if isinstance(meta, int) else (meta.get("size"), meta.get("sha256"))
        f = ckpt / rel
        if not f.is_file():
            raise DamagedCheckpoint(f"checkpoint {ckpt}: file '{rel}' is missing (corrupted checkpoint)", hint=fix)
        if f.stat().st_size != size:
            raise DamagedCheckpoint(
                f"checkpoint {ckpt}: file '{rel}' is {f.stat().st_size} bytes, {size} when saved "
                "(corrupted checkpoint)",
                hint=fix,
            )
        if digest is not None and sha256_of(f) != digest:
            raise DamagedCheckpoint(
                f"checkpoint {ckpt}: file '{rel}' has changed since it was saved (sha256 mismatch: corrupted)",
                hint=fix,
            )
    try:
        json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DamagedCheckpoint(
            f"checkpoint {ckpt}: trainer_state.json is unreadable (corrupted checkpoint)", hint=fix
        ) from None


def set_aside(ckpt: Path) -> Path:
    """Move a damaged checkpoint out of the resume path, keeping it for inspection."""
    target = ckpt.with_name(f"{ckpt.name}.damaged")
    if target.exists():
        target = ckpt.with_name(f"{ckpt.name}.damaged-{int(time.time())}")
    os.replace(ckpt, target)
    return target


def resume_checkpoint(folder: Path, log=print) -> Path | None:
    """The newest committed checkpoint that verifies, after deleting uncommitted (partial) ones; damaged
    committed ones are reported and set aside (newest first) so the previous complete one is used."""
    for ckpt in list_checkpoints(folder):
        if not is_complete(ckpt):
            log(f"ftplan: removing incomplete checkpoint {ckpt.name} (the run stopped while writing it)")
            shutil.rmtree(ckpt, ignore_errors=True)
    for ckpt in reversed([c for c in list_checkpoints(folder) if is_complete(c)]):
        try:
            verify(ckpt)
        except DamagedCheckpoint as exc:
            moved = set_aside(ckpt)
            log(f"ftplan: {exc}; moved it to {moved.name} and resuming from the previous complete checkpoint")
            continue
        return ckpt
    return None


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
