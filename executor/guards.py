"""Run-time checks against the world changing under a plan, and one-line messages for its failures.

* the data file must be the one the plan counted (its sha256 in plan.yaml), unless the user says otherwise;
* the output folder must be writable and hold at least one checkpoint (its size is known from the plan);
* disk full (ENOSPC/EDQUOT, including torch's serialization error text), read-only file systems and
  permission errors become one line naming the folder and, for a full disk, the space a checkpoint needs.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from executor.paths import RunPaths
from planner.errors import FtplanError
from planner.plan import Plan
from planner.rules.evaluation import checkpoint_bytes

# torch.save writes through PytorchStreamWriter (caffe2/serialize/inline_container.cc); a full disk
# surfaces as RuntimeError "[enforce fail at inline_container.cc:...] . unexpected pos N vs M" or
# "PytorchStreamWriter failed writing file ...: file write failed", not as an OSError.
DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "unexpected pos", "file write failed")


def check_data_unchanged(plan: Plan, allow_changed: bool = False, log=print) -> None:
    """Refuse a data file whose bytes differ from the ones the plan was made from (plan.data.sha256)."""
    if not plan.data.sha256:
        return
    from planner.dataset.profile import file_sha256

    now = file_sha256(plan.data.path)
    if now == plan.data.sha256:
        return
    if allow_changed:
        log(f"ftplan: {plan.data.path} changed since planning (sha256 {now[:12]}, planned "
            f"{plan.data.sha256[:12]}): training on it anyway (--allow-data-change); the plan's counts may be off")
        return
    raise FtplanError(
        f"data.path '{plan.data.path}' changed since the plan was made (sha256 {now[:12]}..., plan.yaml has "
        f"{plan.data.sha256[:12]}...)",
        hint="re-plan with `ftplan plan` so its sizes match the data, or pass --allow-data-change",
    )


def check_output(paths: RunPaths, plan: Plan) -> None:
    """The output folder exists (or can be made), is writable, and has room for one checkpoint."""
    folder = paths.output
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".ftplan-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise environment_error(exc, folder, plan) from None
    need = checkpoint_bytes(plan)
    free = shutil.disk_usage(folder).free
    if need and free < need:
        raise FtplanError(
            f"{folder}: {_gib(free)} free, one checkpoint needs about {_gib(need)} (disk full before the first save)",
            hint="free space there, or set output_dir in plan.yaml to a bigger disk",
        )


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return isinstance(exc, (OSError, RuntimeError)) and any(t in text for t in DISK_FULL_TEXT)


def environment_error(exc: BaseException, folder: Path, plan: Plan | None = None) -> FtplanError | None:
    """The one-line FtplanError for a full disk, a read-only or forbidden folder; None for anything else."""
    if is_disk_full(exc):
        one = checkpoint_bytes(plan) if plan is not None else 0
        need = f"; one checkpoint needs about {_gib(one)}" if one else ""
        try:
            free = f"{_gib(shutil.disk_usage(folder).free)} free"
        except OSError:
            free = "free space unknown"
        return FtplanError(
            f"{folder}: disk full while writing ({free}{need})",
            hint="free space (old checkpoints, caches) or point output_dir at a bigger disk; `ftplan run` resumes",
        )
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return FtplanError(f"{folder}: read-only file system", hint="set output_dir in plan.yaml to a writable folder")
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        where = exc.filename or folder
        return FtplanError(f"{where}: permission denied", hint="make the folder writable or choose another output_dir")
    return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


