"""planner.overhead: the device total beyond peak allocated (CUDA context, workspaces, allocator reserve,
NCCL). Table-driven: structure and ordering, no hard-coded totals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from planner import overhead as ov
from planner.hardware import gpu_catalog
from planner.memory import TrainSetup

MIB = 2**20
GIB = 2**30
KINDS = ["", "H100-SXM", "H200", "B200", "A100-80GB", "A100-40GB", "L4", "RTX-4090", "RTX-3090", "A10G", "T4",
         "V100-16GB", "MI300X", "not-a-gpu"]
SETUPS = [
    TrainSetup(method="lora"),
    TrainSetup(method="qlora", padding_mask=True),
    TrainSetup(method="full", optimizer="adamw_8bit"),
    TrainSetup(method="lora", gpus=2, distribution="ddp"),
    TrainSetup(method="lora", gpus=8, distribution="fsdp", padding_mask=True),
    TrainSetup(method="full", gpus=16, distribution="zero3"),
]


def _parts(peak: int, setup: TrainSetup) -> dict[str, int]:
    total, parts = ov.device_overhead(peak, setup)
    assert total == sum(b for _, b in parts)
    return dict(parts)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("setup", SETUPS, ids=lambda s: f"{s.method}-{s.gpus}-{s.distribution}-pad{s.padding_mask}")
def test_parts_sum_to_total_and_are_named_and_positive(kind, setup):
    setup = setup.with_(gpu_kind=kind)
    total, parts = ov.device_overhead(8 * GIB, setup)
    assert total == sum(b for _, b in parts)
    names = [n for n, _ in parts]
    assert len(names) == len(set(names))
    assert all(isinstance(n, str) and n and b > 0 for n, b in parts)
    assert {"CUDA context", "cuBLAS/cuBLASLt workspaces", "allocator reserve (rounding, fragmentation)"} <= set(names)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("setup", SETUPS, ids=lambda s: f"{s.method}-{s.gpus}-{s.distribution}-pad{s.padding_mask}")
def test_monotone_in_peak(kind, setup):
    setup = setup.with_(gpu_kind=kind)
    totals = [ov.device_overhead(p, setup)[0] for p in (0, 1 * GIB, 4 * GIB, 16 * GIB, 64 * GIB, 160 * GIB)]
    assert totals == sorted(totals)
    assert totals[-1] > totals[0]  # the reserve grows with the peak
    # fixed parts do not depend on the peak
    fixed = {n: b for n, b in _parts(GIB, setup).items() if not n.startswith("allocator")}
    assert fixed == {n: b for n, b in _parts(64 * GIB, setup).items() if not n.startswith("allocator")}


@pytest.mark.parametrize("kind", KINDS)
def test_no_nccl_on_one_gpu_and_nccl_with_more(kind):
    one = _parts(8 * GIB, TrainSetup(gpu_kind=kind, gpus=1))
    assert not any(n.startswith("NCCL") for n in one)
    two = _parts(8 * GIB, TrainSetup(gpu_kind=kind, gpus=2, distribution="ddp"))
    eight = _parts(8 * GIB, TrainSetup(gpu_kind=kind, gpus=8, distribution="ddp"))
    assert two["NCCL buffers"] > 0
    # 3+ GPUs connect a tree beside the ring: never less than two GPUs
    assert eight["NCCL buffers"] >= two["NCCL buffers"]
    assert sum(eight.values()) >= sum(two.values()) > sum(one.values())


def test_nccl_scales_with_channels_nvlink_over_pcie_and_nvls_only_on_nvswitch():
    nvlink, _ = ov.nccl_bytes("A100-80GB", 4)
    pcie, nvls_pcie = ov.nccl_bytes("RTX-4090", 4)
    assert nvlink > 4 * pcie and nvls_pcie == 0
    # A100 NVLink, 3-4 GPUs: NVIDIA/nccl#964 measured 688 MB per communicator; 2 GPUs 544 MB
    assert 500 * MIB < nvlink < 800 * MIB
    assert 350 * MIB < ov.nccl_bytes("A100-80GB", 2)[0] < 600 * MIB
    # NVLS needs an NVSwitch part and more than two GPUs; it grows with the node's GPUs up to 8
    assert ov.nccl_bytes("H100-SXM", 2)[1] == 0
    assert 0 < ov.nccl_bytes("H100-SXM", 4)[1] < ov.nccl_bytes("H100-SXM", 8)[1] == ov.nccl_bytes("H100-SXM", 64)[1]
    assert ov.nccl_bytes("A100-80GB", 8)[1] == 0
    assert ov.nccl_bytes("", 1) == (0, 0)


@pytest.mark.parametrize("kind, generation", [
    ("H100-SXM", "hopper"), ("H100-PCIe", "hopper"), ("H200", "hopper"), ("B200", "blackwell"),
    ("RTX-5090", "blackwell"), ("A100-80GB", "a100"), ("A100-40GB", "a100"), ("L4", "ada"),
    ("RTX-4090", "ada"), ("RTX-6000-Ada", "ada"), ("RTX-3090", "ampere"), ("A10G", "ampere"),
    ("A40", "ampere"), ("T4", "turing-volta"), ("V100-32GB", "turing-volta"),
])
def test_context_per_kind_lookup(kind, generation):
    assert ov.context_bytes(kind) == ov.CONTEXT_MIB[generation] * MIB
    # aliases resolve through the catalog like the CLI's --gpu
    assert ov.context_bytes(kind.lower()) == ov.context_bytes(kind)


@pytest.mark.parametrize("kind", ["", "not-a-gpu", "MI300X", "generic-24GB"])
def test_unknown_kind_falls_back_to_datacenter_default(kind):
    assert ov.context_bytes(kind) == ov.DEFAULT_CONTEXT_MIB * MIB
    # the default is the largest table entry: the safe side for "must be free"
    assert ov.DEFAULT_CONTEXT_MIB == max(ov.CONTEXT_MIB.values())


def test_every_catalog_gpu_gets_sane_values():
    for name in gpu_catalog():
        ctx = ov.context_bytes(name)
        assert 256 * MIB <= ctx <= 1 * GIB, name
        ws = ov.gemm_workspace_bytes(name)
        assert 8 * MIB <= ws <= 512 * MIB, name
        ring, nvls = ov.nccl_bytes(name, 8)
        assert 16 * MIB <= ring <= 1 * GIB and 0 <= nvls <= 3 * GIB, name


def test_hopper_workspaces_exceed_ampere_and_ada():
    # torch: 32 MiB cuBLAS workspace on sm_90, ":4096:2:16:8" (8.125 MiB) before
    assert ov.gemm_workspace_bytes("H100-SXM") > ov.gemm_workspace_bytes("A100-80GB")
    assert ov.gemm_workspace_bytes("A100-80GB") >= ov.gemm_workspace_bytes("RTX-4090")
    assert ov.gemm_workspace_bytes("H100-SXM") == ov.gemm_workspace_bytes("")  # unknown: Hopper sizes


@pytest.mark.parametrize("peak", [2 * GIB, 10 * GIB, 40 * GIB])
def test_padded_batches_reserve_more_than_packed(peak):
    packed = _parts(peak, TrainSetup(padding_mask=False))
    padded = _parts(peak, TrainSetup(padding_mask=True))
    key = "allocator reserve (rounding, fragmentation)"
    assert padded[key] > packed[key]
    # reserved / allocated within the published 1.0-1.4 range
    for parts in (packed, padded):
        assert 1.0 < (peak + parts[key]) / peak < 1.4


def test_sharding_adds_fragmentation():
    base = ov.allocator_fraction(TrainSetup(method="lora", gpus=8, distribution="ddp"))
    assert ov.allocator_fraction(TrainSetup(method="lora", gpus=8, distribution="fsdp")) > base
    assert ov.allocator_fraction(TrainSetup(method="lora", gpus=8, distribution="zero3")) > base
    # one GPU: "fsdp"/"zero3" gather nothing
    assert ov.allocator_fraction(TrainSetup(gpus=1, distribution="zero3")) == ov.allocator_fraction(TrainSetup())


@pytest.mark.parametrize("setup, has_bnb", [
    (TrainSetup(method="qlora"), True),
    (TrainSetup(method="lora", optimizer="paged_adamw_8bit"), True),
    (TrainSetup(method="full", optimizer="adamw_8bit"), True),
    (TrainSetup(method="lora"), False),
    (TrainSetup(method="full"), False),
])
def test_bitsandbytes_part_only_when_used(setup, has_bnb):
    assert ("bitsandbytes kernels" in _parts(GIB, setup)) is has_bnb


@pytest.mark.parametrize("kind", ["", "H100-SXM", "RTX-4090"])
@pytest.mark.parametrize("peak", [1 * GIB, 20 * GIB, 70 * GIB])
def test_values_in_sane_ranges(kind, peak):
    total, _ = ov.device_overhead(peak, TrainSetup(gpu_kind=kind, padding_mask=True))
    # at least a context, at most context + workspaces + ~40% of the peak on one GPU
    assert 256 * MIB < total < 1 * GIB + 0.4 * peak


@pytest.mark.parametrize("setup", SETUPS, ids=lambda s: f"{s.method}-{s.gpus}-{s.distribution}-pad{s.padding_mask}")
def test_reserved_beyond_peak_is_part_of_the_overhead(setup):
    total, _ = ov.device_overhead(8 * GIB, setup)
    reserved = ov.reserved_beyond_peak(8 * GIB, setup)
    assert 0 < reserved < total
    assert total - reserved >= ov.context_bytes(setup.gpu_kind)


def test_cpu_runs_keep_the_rss_model():
    total, parts = ov.device_overhead(4 * GIB, TrainSetup(device="cpu", gpus=1))
    names = [n for n, _ in parts]
    assert "CUDA context" not in names and not any(n.startswith("NCCL") for n in names)
    assert total == sum(b for _, b in parts) > 0


@pytest.mark.parametrize("kind", ["", "H100-SXM", "RTX-4090"])
def test_estimate_memory_total_is_peak_plus_overhead(kind):
    from planner.memory import estimate_memory
    from planner.model_spec import load_model_spec

    m = estimate_memory(load_model_spec("Qwen/Qwen2.5-0.5B"), TrainSetup(method="qlora", gpu_kind=kind))
    assert m.total == m.peak_allocated + m.overhead
    assert m.overhead == sum(b for _, b in m.overhead_parts)
    assert (m.overhead, m.overhead_parts) == ov.device_overhead(m.peak_allocated, TrainSetup(method="qlora",
                                                                                              gpu_kind=kind))


def test_planner_overhead_imports_without_torch():
    code = ("import sys; import planner.overhead, planner.memory; "
            "from planner.memory import TrainSetup; "
            "planner.overhead.device_overhead(1 << 30, TrainSetup(gpu_kind='H100-SXM')); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
