"""The device total: what a training process takes on a GPU beyond the tensors it allocates.

``peak_allocated`` (planner.memory) is what ``torch.cuda.max_memory_allocated()`` reports. What nvidia-smi
shows, and what must be free before the run starts, adds the CUDA context, the caching allocator's reserve
and fragmentation, library workspaces and communication buffers: ``device_overhead`` counts them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from planner.memory import TrainSetup

# CUDA context of torch 2.x on Hopper/Ampere with lazy module loading (CUDA_MODULE_LOADING=LAZY,
# default since CUDA 11.7): about 500 MiB (nvidia-smi "used" minus torch.cuda.memory_reserved() after
# the first kernel; pytorch/pytorch#20532 discussion, PyTorch docs "CUDA semantics: memory management").
CUDA_CONTEXT_BYTES = 512 * 2**20
# NCCL communicator buffers per GPU for multi-GPU runs (NCCL_BUFFSIZE default 4 MiB per channel and
# peer, up to 32 channels; of the order of a few hundred MiB on 8-GPU NVLink nodes).
NCCL_BYTES = 256 * 2**20
# Caching allocator: reserved exceeds allocated by rounding (2 MiB segments for large tensors) and
# fragmentation; max_memory_reserved / max_memory_allocated in HF fine-tuning runs is typically
# 1.05-1.15 (e.g. the LLMem paper, Kim et al. 2024, models it as a separate term). We count 8%.
ALLOCATOR_FRACTION = 0.08


def device_overhead(peak_allocated: int, setup: TrainSetup) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(bytes beyond ``peak_allocated`` on one GPU, the same as named parts)."""
    parts = (
        ("cuda context", CUDA_CONTEXT_BYTES),
        ("nccl buffers", NCCL_BYTES if setup.gpus > 1 else 0),
        ("allocator reserve", int(ALLOCATOR_FRACTION * peak_allocated)),
    )
    return sum(b for _, b in parts), parts
