"""The device total: what a training process takes on a GPU beyond the tensors it allocates.

``peak_allocated`` (planner.memory) is what ``torch.cuda.max_memory_allocated()`` reports, traced on CPU.
What nvidia-smi shows, and what must be free before the run starts, adds (one part each, in this order):

* the CUDA context of the process: driver state plus the kernels loaded lazily during a training step
  (``CUDA_MODULE_LOADING=LAZY``, torch's default since 1.13), per GPU generation (``CONTEXT_MIB``);
* cuBLAS/cuBLASLt workspaces: torch keeps one per (handle, stream), handles are per thread, and a
  training step runs GEMMs on two threads (forward on the Python thread, backward on the autograd
  engine's device thread); sizes per architecture from aten/src/ATen/cuda/CublasHandlePool.cpp;
* bitsandbytes kernels (QLoRA / 8-bit optimizers): its CUDA library's module;
* the caching allocator's reserve (``max_memory_reserved - max_memory_allocated``): segment rounding
  and fragmentation, a fraction of the peak that depends on whether batch shapes vary;
* NCCL buffers per GPU for multi-GPU runs: ring/tree connection buffers per channel, and NVLink SHARP
  (NVLS) buffers on NVSwitch systems with 3 or more GPUs.

Not counted here, because planner.memory already counts them as tensors or they are not allocated:
DeepSpeed reduce/all-gather buckets and FSDP all-gather buffers (torch tensors: planner.sharding),
bitsandbytes' dequantized weights (torch tensors: memory.py ``dequant``), paged 8-bit optimizer
states (counted on the GPU in ``optimizer``), cuDNN (no convolutions in a decoder LLM; the workspace of
sdpa's cuDNN backend goes through the caching allocator and is a transient of the attention call).

Pure arithmetic: no torch import. GPU facts (compute capability, memory size, vendor) come from the
catalog (planner/catalogs/gpus.json via planner.hardware); an empty or unknown ``gpu_kind`` falls back to a
datacenter default that takes the larger Hopper figures (the safe side for "must be free").
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from planner.memory import TrainSetup

MIB = 2**20

# ---------------------------------------------------------------------------------------------------------
# CUDA context per GPU kind (MiB). What nvidia-smi shows for a torch process beyond torch's own
# reserve, after lazily loading the kernels a bf16 training step uses. Measured anchors:
#   - pytorch/pytorch#86509 (torch 1.13, sets CUDA_MODULE_LOADING=LAZY): 287,047,680 B (274 MiB) after one
#     small op with LAZY vs 666,632,192 B (636 MiB) with eager loading; ptrblck in pytorch/pytorch#107667
#     and #109888 (2023): "~300MB" / "around 400MB" with CUDA >= 11.7 lazy loading.
#   - unslothai/unsloth-zoo#1053 (torch 2.10+cu130, RTX 6000 Ada): a bare context (mem_get_info only,
#     no kernels) is 426 MiB in nvidia-smi.
#   - Lightning-AI/litgpt#459 (QLoRA on RTX 3090, torch 2.1): the OOM message gives 23.57 GiB in use,
#     22.22 GiB allocated, 1.04 GiB reserved-unallocated: 0.31 GiB (317 MiB) outside torch mid-training.
#   - huggingface/lora-fast#1 (RTX 4090, torch 2.x): 23.48 - 22.72 - 0.25 GiB = 0.51 GiB outside torch.
#   - vllm-project/compressed-tensors#587 (80 GB datacenter GPU, 79.18 GiB capacity): 78.09 - 75.31 -
#     1.83 GiB = 0.95 GiB outside torch (context + loaded kernels + library workspaces).
#   - NVIDIA/nccl#1685 (8 x H100): 1.06 GB outside torch per GPU after NCCL init (context + NCCL).
# The context holds a per-SM local-memory reservation and the loaded kernels (Hopper's sm_90a GEMM
# kernels are the largest), so it grows with the GPU. Per generation (inferred from the anchors above,
# rounded up to the safe side): Hopper/Blackwell 768 (0.95 GiB outside torch on an 80 GB part includes
# the cuBLAS workspaces counted separately below), A100 640, Ada 512 (426 bare + kernels; 0.51 GiB on a
# 4090), Ampere consumer/workstation 384 (317 MiB measured on a 3090), Turing/Volta 384 (fewer SMs;
# no measurement found: inferred). MI300X (ROCm/HIP): no measurement found; datacenter default.
CONTEXT_MIB = {
    "hopper": 768,  # H100-PCIe/SXM/NVL, H200 (sm_90)
    "blackwell": 768,  # B200 (sm_100), RTX-5090 (sm_120): no measurement found; Hopper figure (inferred)
    "a100": 640,  # A100-40GB/80GB (sm_80)
    "ada": 512,  # L4, L40S, RTX-4090, RTX-6000-Ada (sm_89)
    "ampere": 384,  # A10, A10G, A40, RTX-3090, RTX-A6000 (sm_86)
    "turing-volta": 384,  # T4 (sm_75), V100 (sm_70): inferred
}
DEFAULT_CONTEXT_MIB = 768  # unknown / generic / AMD: the largest (Hopper) figure

# ---------------------------------------------------------------------------------------------------------
# cuBLAS / cuBLASLt workspaces (aten/src/ATen/cuda/CublasHandlePool.cpp, torch 2.x):
#   getChosenWorkspaceSize: CUBLAS_WORKSPACE_CONFIG default ":4096:2:16:8" = 4096 KiB x 2 + 16 KiB x 8
#   = 8,519,680 B (8.125 MiB); 32 MiB ("4096 * 8 * 1024") for compute capability 9.x (Hopper) and, since
#   pytorch/pytorch#175344, 10.x/12.x (Blackwell). The 8,519,680 B block is what
#   discuss.pytorch.org "unexpected 8519680B memory allocation during matrix multiplication" and
#   pytorch/pytorch#95668 show after a Linear.
#   cuBLASLt (getCUDABlasLtWorkspaceSize): 1 MiB default (#73328); pytorch/pytorch#120925 raised it to
#   4 MiB for sm_8x parts with >= 24 GiB and 32 MiB for sm >= 9 (cuBLAS docs, cublasSetWorkspace:
#   32 MiB recommended for Hopper, 4 MiB otherwise). We take the larger (#120925) sizes.
# One workspace pair per (handle, stream); handles are per thread (DeviceThreadHandlePool), and the
# backward GEMMs run on the autograd engine's device thread, the forward ones on the Python thread:
# two pairs (inferred from the pool's per-thread handles). Each is rounded up to the allocator's 2 MiB.
CUBLAS_WORKSPACE_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8
CUBLAS_WORKSPACE_BYTES_SM90 = 4096 * 8 * 1024
CUBLASLT_WORKSPACE_KIB = {"default": 1024, "sm8x_24gib": 4096, "sm90": 32768}
GEMM_THREADS = 2
# ROCm builds (same file): hipBLAS workspace 32 MiB, 128 MiB on gfx94x/gfx95x (MI300X is gfx942,
# catalog compute capability 9.4); hipBLASLt 76 MiB ("Use 76 MB for hipBLASLt").
HIPBLAS_WORKSPACE_BYTES = {"default": 32 * 1024 * 1024, "gfx94x": 128 * 1024 * 1024}
HIPBLASLT_WORKSPACE_BYTES = 76 * 1024 * 1024

# ---------------------------------------------------------------------------------------------------------
# bitsandbytes: its kernels live in libbitsandbytes_cuda*.so, loaded as a CUDA module on first use. With
# lazy loading only the kernels used for the device's architecture load; the whole library, every
# architecture's kernels included, is 21-26 MB (bitsandbytes 0.50.2 wheel: libbitsandbytes_cuda128.so
# 26,535,848 B, cuda124 21,294,432 B), so we count 26 MiB as the upper bound. 4-bit matmul for training
# dequantizes into torch tensors (counted in memory.py ``dequant``); 8-bit optimizer states are torch
# tensors, paged ones cudaMallocManaged pages (counted in ``optimizer``). bitsandbytes keeps no other
# device workspace in these paths (bitsandbytes/functional.py dequantize_4bit, optim/optimizer.py).
BNB_MODULE_BYTES = 26 * MIB

# ---------------------------------------------------------------------------------------------------------
# Caching allocator reserve (c10/cuda/CUDACachingAllocator.cpp): requests are rounded to 512 B
# (kMinBlockSize); requests <= 1 MiB (kSmallSize) are carved from 2 MiB segments (kSmallBuffer), 1-10 MiB
# requests from 20 MiB segments (kLargeBuffer), larger ones get a segment rounded up to 2 MiB
# (kRoundLarge). Freed blocks stay reserved and are split for later requests; with expandable segments
# off (the default, PYTORCH_CUDA_ALLOC_CONF) shapes that change from step to step leave unusable gaps.
# Measured max_memory_reserved / max_memory_allocated:
#   - huggingface/peft#1469 (HF Trainer, padded BERT batches, 8-13 GB peaks): 1.03-1.05;
#     small models (< 3 GB): 1.09-2.7 (absolute gaps 0.2-1.2 GB);
#   - meta-llama/llama-cookbook#41 (FSDP LoRA Llama-2-7B, 4 x A100-40GB): peak active 25.86 / reserved
#     32.67 GB (1.26), 20.20 / 27.36 (1.35), 15.22 / 19.36 (1.27);
#   - Lightning-AI/litgpt#459 (QLoRA 7B, RTX 3090, at OOM after the allocator freed its cache): 1.047;
#   - meta-pytorch/torchtune#1398 (QLoRA after model init, weights only): 14.62 / 14.41 = 1.015;
#   - vllm-project/compressed-tensors#587 (75 GiB, at OOM): 1.024; axolotl-ai-cloud/axolotl#498 adds
#     pad_to_sequence_len because fixed-length batches "re-use previously-allocated buffers" (less
#     fragmentation); meta-pytorch/torchtune#1517: FSDP2 + compile, +50% reserved.
# Chosen: packed, fixed-shape batches 6% of the peak (between the weights-only 1.5% and the padded
# figures: inferred); padded batches of varying shapes 15% (the middle of 1.03-1.35, and what closes the
# 8-16% shortfall of the device total that issue 10 reports for LoRA/QLoRA); +10% with FSDP or ZeRO-3
# (all-gather buffers of every layer's size: the 1.26-1.35 FSDP figures above). No QLoRA surcharge:
# bitsandbytes dequantizes each Linear to a bf16 tensor of that Linear's shape, the same 7 shapes in
# every layer, so the cache reuses the freed blocks (QLoRA taking more than LoRA in
# hiyouga/LlamaFactory#4772 / meta-pytorch/torchtune#2255 is the fp32 upcast memory.py already counts).
# Plus one partly used segment of each pool (kLargeBuffer + kSmallBuffer).
ALLOCATOR_FRACTION_PACKED = 0.06
ALLOCATOR_FRACTION_PADDED = 0.15
ALLOCATOR_FRACTION_SHARDED = 0.10
ALLOCATOR_SEGMENT_SLACK = 20 * MIB + 2 * MIB  # kLargeBuffer + kSmallBuffer

# ---------------------------------------------------------------------------------------------------------
# NCCL (one communicator: the default process group that DDP / FSDP / DeepSpeed ZeRO all use).
# Per connection NCCL allocates one buffer per protocol (src/include/device.h defaults): SIMPLE
# NCCL_BUFFSIZE 4 MiB, LL128 120 x 640 x 8 steps x 8 B = 4,915,200 B, LL 8 x 512 x 8 steps x 16 B =
# 524,288 B: 9.1875 MiB, the "~9.19 MiB per proxy connection" measured in
# tonyd2wild/DeepSeek-V4.1-Flash-vLLM-DGX-Spark#8, allocated as 10 MiB (2 MiB cuMem granularity) in
# NVIDIA/nccl#1685's NCCL_DEBUG_SUBSYS=ALLOC log. Memory is linear in the number of channels
# (sjeaugey, NVIDIA/nccl#986); a channel connects a ring (one peer to receive from) and a tree (intra-node a
# chain: up to two more): 3 connections per channel, 2 with two GPUs (ring and tree peer coincide;
# inferred). Check: A100 NVLink, 24 channels: 24 x 3 x 9.1875 = 662 MiB vs 688 MB (656 MiB) measured per
# communicator of 3-4 GPUs and 24 x 2 x 9.1875 = 441 MiB vs 544 MB (519 MiB) for 2 GPUs (NVIDIA/nccl#964).
# Beyond two nodes it no longer grows (#986).
NCCL_CONNECTION_BYTES = 4 * MIB + 4_915_200 + 524_288
# Channels per GPU kind: NCCL launches 2 CTAs (channels) per NVLink to saturate it (AddyLaddy in
# NVIDIA/nccl#1703; 24 for DGX A100's 12 NVLinks in NVIDIA/nccl#1225), capped at 32 (MAXCHANNELS; 32
# channels between 8 x H100 in NVIDIA/nccl#1685). PCIe-only parts: 2 (inferred from the usual
# "Channel 00/02" PCIe logs; RTX cards without P2P go through host shared memory, still 2).
NCCL_CHANNELS = {
    "H100-SXM": 32, "H200": 32, "B200": 32,  # 18 NVLinks: capped at 32
    "H100-NVL": 24,  # NVLink bridge pairs, 12 links per GPU (inferred, as A100)
    "A100-40GB": 24, "A100-80GB": 24,  # SXM4, 12 NVLinks (DGX A100)
    "V100-16GB": 12, "V100-32GB": 12,  # SXM2, 6 NVLinks
}
NCCL_CHANNELS_PCIE = 2
NCCL_CHANNELS_DEFAULT = 32  # unknown kind: the NVLink datacenter maximum (safe side)
# NVLink SHARP (NVLS): on NVSwitch systems (H100/H200 SXM, B200) NCCL >= 2.17 enables it for more than
# 2 GPUs (vllm-project/vllm#9699, 8 x H200: "nHeads 8 buffSize 4194304 memSize 2097152 nvlsPerRankSize
# 301989888 nvlsTotalSize 2415919104"): 288 MiB per rank, times the GPUs of the node (up to 8). That each
# GPU holds the node total is inferred from the log and from NVIDIA/JAX-Toolbox#383,
# NVIDIA/NeMo-Framework-Launcher#127 and sgl-project/sglang#631 disabling NVLS to save memory.
NVLS_KINDS = frozenset({"H100-SXM", "H200", "B200"})
NVLS_PER_RANK_BYTES = 301_989_888
NVLS_MAX_HEADS = 8

# CPU runs (setup.device == "cpu"): no context, no cuBLAS, no NCCL. The estimate's total is compared with
# the process's peak RSS there (BENCHMARKS.md, demo): the previous fixed 512 MiB (Python + torch
# libraries resident in RSS) and 8% of the peak, which agree to ~10% on the demo model. Kept as is.
CPU_LIBRARIES_BYTES = 512 * MIB
CPU_ALLOCATOR_FRACTION = 0.08


def _round_up(n: int, to: int = 2 * MIB) -> int:
    return -(-n // to) * to


@lru_cache(maxsize=64)
def _gpu(kind: str):
    """The catalog GPUType for ``kind``, or None (empty, unknown or generic)."""
    if not kind:
        return None
    from planner.errors import FtplanError
    from planner.hardware import resolve_gpu

    try:
        return resolve_gpu(kind)
    except FtplanError:
        return None


def _generation(gpu) -> str | None:
    """Context table row of a catalog GPU (None: use the datacenter default)."""
    if gpu is None or gpu.vendor != "nvidia":
        return None
    major, minor = gpu.compute_capability
    if major >= 10:
        return "blackwell"
    if major == 9:
        return "hopper"
    if (major, minor) == (8, 0):
        return "a100"
    if (major, minor) == (8, 9):
        return "ada"
    if major == 8:
        return "ampere"
    return "turing-volta"


def context_bytes(kind: str) -> int:
    """CUDA context of one process on a ``kind`` GPU (catalog name; unknown: datacenter default)."""
    generation = _generation(_gpu(kind))
    return (CONTEXT_MIB[generation] if generation else DEFAULT_CONTEXT_MIB) * MIB


def gemm_workspace_bytes(kind: str) -> int:
    """cuBLAS + cuBLASLt workspaces of a training step (two GEMM threads)."""
    gpu = _gpu(kind)
    if gpu is not None and gpu.vendor == "amd":
        gfx94 = gpu.compute_capability[0] == 9 and gpu.compute_capability[1] >= 4
        hip = HIPBLAS_WORKSPACE_BYTES["gfx94x" if gfx94 else "default"]
        return GEMM_THREADS * (_round_up(hip) + _round_up(HIPBLASLT_WORKSPACE_BYTES))
    if gpu is None or gpu.compute_capability[0] >= 9:
        cublas, lt_kib = CUBLAS_WORKSPACE_BYTES_SM90, CUBLASLT_WORKSPACE_KIB["sm90"]
    else:
        cublas = CUBLAS_WORKSPACE_BYTES
        # #120925: sm_8x with totalGlobalMem / 2**30 >= 24 (integer GiB) gets 4 MiB
        big_ampere = gpu.compute_capability[0] == 8 and gpu.memory_bytes // 2**30 >= 24
        lt_kib = CUBLASLT_WORKSPACE_KIB["sm8x_24gib" if big_ampere else "default"]
    return GEMM_THREADS * (_round_up(cublas) + _round_up(lt_kib * 1024))


def allocator_fraction(setup: TrainSetup) -> float:
    """Reserve as a fraction of the peak: varying (padded) or fixed (packed) shapes, sharding."""
    fraction = ALLOCATOR_FRACTION_PADDED if setup.padding_mask else ALLOCATOR_FRACTION_PACKED
    if setup.gpus > 1 and setup.distribution in ("fsdp", "zero3"):
        fraction += ALLOCATOR_FRACTION_SHARDED
    return fraction


def nccl_bytes(kind: str, gpus: int) -> tuple[int, int]:
    """(ring/tree connection buffers, NVLS buffers) per GPU for a world of ``gpus``; (0, 0) on one GPU."""
    if gpus <= 1:
        return 0, 0
    gpu = _gpu(kind)
    if gpu is None:
        channels = NCCL_CHANNELS_DEFAULT
    else:
        channels = NCCL_CHANNELS.get(gpu.name, NCCL_CHANNELS_PCIE if gpu.vendor == "nvidia" else
                                     NCCL_CHANNELS_DEFAULT)
    connections = 2 if gpus == 2 else 3
    ring_tree = channels * connections * NCCL_CONNECTION_BYTES
    nvls = NVLS_PER_RANK_BYTES * min(gpus, NVLS_MAX_HEADS) if (
        gpu is not None and gpu.name in NVLS_KINDS and gpus > 2) else 0
    return ring_tree, nvls


def _uses_bitsandbytes(setup: TrainSetup) -> bool:
    return setup.method == "qlora" or setup.optimizer in ("adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")


def _allocator_reserve(peak: int, setup: TrainSetup) -> int:
    if setup.device == "cpu":
        return int(CPU_ALLOCATOR_FRACTION * peak)
    return ALLOCATOR_SEGMENT_SLACK + int(allocator_fraction(setup) * peak)


def reserved_beyond_peak(peak_allocated: int, setup: TrainSetup) -> int:
    """What ``torch.cuda.max_memory_reserved()`` adds to ``peak_allocated``: the allocator reserve and the
    cuBLAS/cuBLASLt workspaces (torch allocates them from its caching allocator). For comparisons with
    published max_memory_reserved figures; the device total adds the context and NCCL on top."""
    peak = max(0, int(peak_allocated))
    if setup.device == "cpu":
        return _allocator_reserve(peak, setup)
    return _allocator_reserve(peak, setup) + gemm_workspace_bytes(setup.gpu_kind)


def device_overhead(peak_allocated: int, setup: TrainSetup) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(bytes beyond ``peak_allocated`` on one GPU, the same as named parts that sum to it)."""
    peak = max(0, int(peak_allocated))
    if setup.device == "cpu":
        parts: tuple[tuple[str, int], ...] = (
            ("host libraries (CPU run)", CPU_LIBRARIES_BYTES),
            ("allocator reserve", _allocator_reserve(peak, setup)),
        )
        return sum(b for _, b in parts), parts
    kind = setup.gpu_kind
    ring_tree, nvls = nccl_bytes(kind, setup.gpus)
    parts = (
        ("CUDA context", context_bytes(kind)),
        ("cuBLAS/cuBLASLt workspaces", gemm_workspace_bytes(kind)),
        ("bitsandbytes kernels", BNB_MODULE_BYTES if _uses_bitsandbytes(setup) else 0),
        ("allocator reserve (rounding, fragmentation)", _allocator_reserve(peak, setup)),
        ("NCCL buffers", ring_tree),
        ("NCCL NVLS buffers", nvls),
    )
    parts = tuple((name, b) for name, b in parts if b)  # shown to users: only what applies
    return sum(b for _, b in parts), parts
