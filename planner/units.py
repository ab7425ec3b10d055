"""Memory units, defined once. ftplan reads and prints memory in GiB (2**30 bytes), labelled so: what
torch.cuda.max_memory_allocated, nvidia-smi (MiB) and the caching allocator count in. Datasheet capacities in
decimal GB ("24GB" on the box) are converted where the GPU catalog reads them (planner/hardware.py)."""

from __future__ import annotations

GIB = 2**30  # bytes per GiB: every memory figure ftplan reads or prints
GB = 10**9  # bytes per decimal GB: GPU datasheets and the catalog's memory_gb only


def gib(n_bytes: float | None) -> str:
    """Bytes as a short, labelled string: '12.3 GiB'."""
    return f"{(n_bytes or 0) / GIB:.1f} GiB"


def gib_value(n_bytes: float | None, digits: int = 1) -> float:
    """Bytes as a number of GiB (for tables whose header carries the unit)."""
    return round((n_bytes or 0) / GIB, digits)


def gib_bytes(x: float) -> int:
    """GiB (a --gpu-memory value) as bytes."""
    return int(x * GIB)
