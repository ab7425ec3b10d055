"""GPU catalog and probe.

GPUType and Hardware below are what memory, cost, the rules and the wizard read.

- :func:`gpu_catalog` / :func:`resolve_gpu`: the catalog in ``planner/catalogs/gpus.json`` (every figure
  cites its datasheet and price source), names resolved case-insensitively with aliases.
- :func:`probe`: what pynvml sees on this machine (count, names, total/free memory, compute
  capability, driver); a clean CPU-only :class:`Hardware` when there is no pynvml or no driver.
- :func:`resolve_hardware`: the CLI flags (``--gpu``, ``--gpus``, ``--gpu-memory``,
  ``--price-per-hour``) applied over the probe.

No torch here: pynvml is imported lazily inside :func:`probe`, so planning stays instant.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from planner.errors import FtplanError, close_matches
from planner.units import GB, GIB


@dataclass(frozen=True)
class GPUType:
    name: str  # catalog key, e.g. "A100-80GB", "H100-SXM", "RTX-4090"
    memory_bytes: int  # total device memory
    bf16_tflops: float  # peak dense bf16 tensor TFLOPS (0 when unsupported)
    fp16_tflops: float  # peak dense fp16 tensor TFLOPS
    fp32_tflops: float  # peak fp32 (non-tensor) TFLOPS
    compute_capability: tuple[int, int]
    price_per_hour: float  # USD per GPU-hour, typical on-demand cloud price
    memory_bandwidth_gbs: float = 0.0
    source: str = ""  # where the figures come from (datasheet URL / price source)
    vendor: str = "nvidia"  # "nvidia" | "amd"
    generic: bool = False  # True: not a catalog entry; figures are conservative guesses (see `source`)

    @property
    def bf16(self) -> bool:
        """bf16 needs compute capability >= 8.0 (Ampere)."""
        return self.compute_capability >= (8, 0)

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / 1e9

    def to_dict(self) -> dict:
        """JSON-ready view (``ftplan hardware --json`` and ``--list --json``)."""
        return {
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "bf16_tflops": self.bf16_tflops,
            "fp16_tflops": self.fp16_tflops,
            "fp32_tflops": self.fp32_tflops,
            "compute_capability": list(self.compute_capability),
            "bf16": self.bf16,
            "memory_bandwidth_gbs": self.memory_bandwidth_gbs,
            "price_per_hour": self.price_per_hour,
            "vendor": self.vendor,
            "generic": self.generic,
            "source": self.source,
        }


@dataclass(frozen=True)
class Hardware:
    gpu: GPUType | None  # None: no GPU (CPU only)
    count: int  # GPUs per node
    free_memory_bytes: int  # per GPU, what a run may use (probe: free now; named: total)
    detected: bool  # True when read from pynvml
    nodes: int = 1
    cpu_memory_bytes: int = 0  # host RAM (for offload verdicts); 0 = unknown
    price_per_hour: float | None = None  # user override per GPU-hour
    names: tuple[str, ...] = ()  # device names as pynvml reports them, one per GPU (probe only)
    driver_version: str | None = None  # NVIDIA driver version (probe only)
    notes: tuple[str, ...] = ()  # assumptions the user should know (generic GPU, mixed GPUs, ...)

    @property
    def memory_bytes(self) -> int:
        return self.gpu.memory_bytes if self.gpu else 0

    @property
    def bf16(self) -> bool:
        return bool(self.gpu and self.gpu.bf16)

    @property
    def hourly_price(self) -> float:
        if self.price_per_hour is not None:
            return self.price_per_hour
        return self.gpu.price_per_hour if self.gpu else 0.0

    @property
    def total_gpus(self) -> int:
        return self.count * self.nodes

    def to_dict(self) -> dict:
        """JSON-ready view (``ftplan hardware --json``)."""
        return {
            "gpu": self.gpu.to_dict() if self.gpu else None,
            "count": self.count,
            "nodes": self.nodes,
            "free_memory_bytes": self.free_memory_bytes,
            "detected": self.detected,
            "cpu_memory_bytes": self.cpu_memory_bytes,
            "hourly_price": self.hourly_price,
            "names": list(self.names),
            "driver_version": self.driver_version,
            "bf16": self.bf16,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------- catalog

# --gpu-memory is read in GiB (planner.units): GPU memory is marketed in binary units (a "24 GB" RTX 4090
# reports 24,564 MiB to nvidia-smi), so "--gpu-memory 24" means the same card.


def _norm(name: str) -> str:
    """Lookup key: lower case, separators collapsed ('A100 80GB' == 'a100-80gb' == 'a100_80gb')."""
    return re.sub(r"[\s_\-/]+", "-", name.strip().lower()).strip("-")


def _entry_to_gpu(entry: dict) -> GPUType:
    memory = int(entry.get("memory_bytes") or entry["memory_gb"] * GB)
    return GPUType(
        name=entry["name"],
        memory_bytes=memory,
        bf16_tflops=float(entry["bf16_tflops"]),
        fp16_tflops=float(entry["fp16_tflops"]),
        fp32_tflops=float(entry["fp32_tflops"]),
        compute_capability=tuple(entry["compute_capability"]),
        price_per_hour=float(entry["price_per_hour"]),
        memory_bandwidth_gbs=float(entry.get("memory_bandwidth_gbs", 0.0)),
        source=entry["source"],
        vendor=entry.get("vendor", "nvidia"),
    )


@lru_cache(maxsize=1)
def _catalog_data() -> tuple[dict[str, GPUType], dict[str, str], dict[str, str]]:
    """(name -> GPUType, normalised alias -> name, normalised NVML name -> name)."""
    raw = json.loads(resources.files("planner.catalogs").joinpath("gpus.json").read_text(encoding="utf-8"))
    gpus: dict[str, GPUType] = {}
    aliases: dict[str, str] = {}
    nvml: dict[str, str] = {}
    for entry in raw["gpus"]:
        gpu = _entry_to_gpu(entry)
        gpus[gpu.name] = gpu
        for alias in [gpu.name, *entry.get("aliases", []), *entry.get("nvml_names", [])]:
            aliases.setdefault(_norm(alias), gpu.name)
        for nvml_name in entry.get("nvml_names", []):
            nvml[_norm(nvml_name)] = gpu.name
    return gpus, aliases, nvml


def gpu_catalog() -> dict[str, GPUType]:
    """All catalog GPUs by name, in catalog order."""
    return dict(_catalog_data()[0])


def resolve_gpu(name: str) -> GPUType:
    """A catalog GPU from its name or an alias, case-insensitive ('a100' -> A100-80GB, '4090')."""
    gpus, aliases, _ = _catalog_data()
    key = _norm(name)
    if key in aliases:
        return gpus[aliases[key]]
    # 'NVIDIA A100-SXM4-80GB' / 'nvidia rtx 4090': drop a vendor prefix and retry.
    stripped = re.sub(r"^(nvidia|tesla|geforce|amd|instinct)-", "", key)
    stripped = re.sub(r"^(tesla|geforce)-", "", stripped)
    if stripped in aliases:
        return gpus[aliases[stripped]]
    hints = close_matches(key, list(aliases))
    hint_names = list(dict.fromkeys(aliases[h] for h in hints))
    hint = f"did you mean {', '.join(hint_names)}?" if hint_names else "see `ftplan hardware --list`"
    raise FtplanError(
        f"unknown GPU '{name}': not in the catalog; use one of `ftplan hardware --list` "
        "or give --gpu-memory GiB for any other GPU",
        hint=hint,
    )


def match_probed_name(nvml_name: str, total_bytes: int) -> GPUType | None:
    """The catalog entry for a pynvml device name ('NVIDIA H100 80GB HBM3', 'Tesla T4'), or None.

    Exact NVML names come from the catalog's ``nvml_names``; otherwise the family is taken from the
    name (A100, H100, V100, RTX 4090...) and the memory size picks the variant (A100 40 vs 80 GB).
    """
    gpus, _, nvml = _catalog_data()
    key = _norm(nvml_name)
    if key in nvml:
        return gpus[nvml[key]]
    try:
        return resolve_gpu(nvml_name)
    except FtplanError:
        pass
    family = _family_candidates(key, gpus)
    if not family:
        return None
    # Closest memory size among the family members (NVML reports a bit less than the marketed size).
    return min(family, key=lambda g: abs(g.memory_bytes - total_bytes))


def _family_candidates(key: str, gpus: dict[str, GPUType]) -> list[GPUType]:
    """Catalog entries whose model token (a100, h100, 4090, a6000...) appears in the device name."""
    tokens = set(re.split(r"-", key))
    hits = []
    for gpu in gpus.values():
        model = _norm(gpu.name).split("-")
        head = model[1] if model[0] == "rtx" and len(model) > 1 else model[0]
        if head in tokens:
            # 'RTX-6000-Ada' needs 'ada' too; 'RTX-A6000' must not match an Ada name.
            if "ada" in model and "ada" not in tokens:
                continue
            if model[0] == "rtx" and "ada" not in model and "ada" in tokens:
                continue
            hits.append(gpu)
    return hits


# ------------------------------------------------------------------------------ generic GPUs

# Conservative peak dense bf16/fp16 tensor TFLOPS by compute capability, for a GPU that is not in the
# catalog: the slowest common member of each architecture in the catalog above (so time estimates
# err on the long side). Sources: the same datasheets as gpus.json.
_GENERIC_TFLOPS_BY_CC: list[tuple[tuple[int, int], float, float, str]] = [
    # (min compute capability, tensor TFLOPS, fp32 TFLOPS, architecture member it is taken from)
    ((12, 0), 104.8, 52.4, "half an RTX 5090 (consumer Blackwell)"),
    ((10, 0), 989.0, 67.0, "H100-SXM (a Blackwell data-center part is at least this fast)"),
    ((9, 0), 756.0, 51.0, "H100-PCIe (Hopper)"),
    ((8, 9), 121.0, 30.3, "L4 (Ada)"),
    ((8, 6), 70.0, 35.0, "A10G / RTX 3090 (GA10x)"),
    ((8, 0), 165.0, 19.5, "A30 (GA100, the smaller sibling of A100)"),
    ((7, 5), 65.0, 8.1, "T4 (Turing)"),
    ((7, 0), 112.0, 14.0, "V100-PCIe (Volta)"),
    ((0, 0), 10.0, 10.0, "no tensor cores (pre-Volta): fp32 rate only"),
]

# `--gpu-memory GB` with no GPU name and nothing probed: assume an Ampere-class GPU as slow as an
# RTX 3090 / A10G (bf16 supported, 70 TFLOPS); time estimates are then an upper bound for most cards.
_UNNAMED_CC = (8, 6)


def generic_gpu(memory_bytes: int, compute_capability: tuple[int, int], label: str) -> GPUType:
    """A GPUType for a GPU that is not in the catalog, with conservative TFLOPS for its architecture."""
    for min_cc, tensor, fp32, member in _GENERIC_TFLOPS_BY_CC:  # noqa: B007 (used after the break)
        if compute_capability >= min_cc:
            break
    bf16 = tensor if compute_capability >= (8, 0) else 0.0
    return GPUType(
        name=label,
        memory_bytes=memory_bytes,
        bf16_tflops=bf16,
        fp16_tflops=tensor,
        fp32_tflops=fp32,
        compute_capability=compute_capability,
        price_per_hour=0.0,
        source=f"generic: not in the catalog; TFLOPS assumed from compute capability "
        f"{compute_capability[0]}.{compute_capability[1]} = {member}; price unknown (use --price-per-hour)",
        generic=True,
    )


# ------------------------------------------------------------------------------------- probe


def host_memory_bytes() -> int:
    """Total host RAM in bytes (/proc/meminfo, else sysconf); 0 when unknown. No psutil needed."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB (KiB)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _cpu_only(note: str) -> Hardware:
    return Hardware(
        gpu=None,
        count=0,
        free_memory_bytes=0,
        detected=False,
        cpu_memory_bytes=host_memory_bytes(),
        notes=(note,),
    )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def probe() -> Hardware:
    """The GPUs on this machine via pynvml; CPU-only Hardware (never a traceback) when none."""
    try:
        import pynvml  # nvidia-ml-py; optional extra `ftplan[gpu]`
    except ImportError:
        return _cpu_only("no GPU probe: nvidia-ml-py (pynvml) is not installed; pip install 'ftplan[gpu]'")
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound / DriverNotLoaded / any NVML error
        return _cpu_only(f"no NVIDIA driver found ({type(exc).__name__}): planning for CPU only")
    try:
        return _probe_devices(pynvml)
    except Exception as exc:  # noqa: BLE001 - a half-working driver must not crash planning
        return _cpu_only(f"GPU probe failed ({type(exc).__name__}: {exc}): planning for CPU only")
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _probe_devices(pynvml) -> Hardware:
    count = pynvml.nvmlDeviceGetCount()
    if count == 0:
        return _cpu_only("NVIDIA driver found but no GPU: planning for CPU only")
    devices = []
    for i in range(count):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        cc = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
        devices.append((_text(pynvml.nvmlDeviceGetName(handle)), int(mem.total), int(mem.free), cc))
    driver = None
    with contextlib.suppress(Exception):  # optional detail; some drivers do not report it
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
    notes: list[str] = []
    # Plan for the weakest device: the smallest total memory (ties: the least free memory).
    name, total, _, cc = min(devices, key=lambda d: (d[1], d[2]))
    if len({d[0] for d in devices}) > 1:
        notes.append(
            f"mixed GPUs ({', '.join(sorted({d[0] for d in devices}))}): planning for the smallest, {name}"
        )
    gpu = match_probed_name(name, total)
    if gpu is None:
        gpu = generic_gpu(total, cc, label=name)
        notes.append(f"'{name}' is not in the GPU catalog: {gpu.source}")
    elif abs(gpu.memory_bytes - total) > 0.02 * total or gpu.compute_capability != cc:
        # The catalog entry is the right family; the probe knows this card's exact memory and cc.
        gpu = replace(gpu, memory_bytes=total, compute_capability=cc)
    free = min(d[2] for d in devices)
    return Hardware(
        gpu=gpu,
        count=count,
        free_memory_bytes=free,
        detected=True,
        cpu_memory_bytes=host_memory_bytes(),
        names=tuple(d[0] for d in devices),
        driver_version=driver,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------- overrides


def _check_positive(flag: str, value, kind=float) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value <= 0):
        raise FtplanError(f"{flag} must be a positive {'integer' if kind is int else 'number'}, got {value}")


def resolve_hardware(
    gpu: str | None = None,
    gpus: int | None = None,
    gpu_memory_gib: float | None = None,
    price_per_hour: float | None = None,
    *,
    nodes: int = 1,
    cpu_processes: int | None = None,
    probe_fn=None,
) -> Hardware:
    """The hardware to plan for: a named GPU (no probe needed) or the probe, with overrides.

    - ``gpu``: catalog name/alias; overrides the probe. ``gpus``: count per node (named: default 1;
      probed: must not exceed what was detected). ``gpu_memory_gib``: with a name, caps the usable
      memory per GPU; alone, means an unnamed GPU of that size (when the probe found none).
    - ``cpu_processes``: a CPU plan with that many training processes on each of ``nodes`` machines
      (``count`` holds it), whatever GPUs the probe would find; a GPU option beside it is refused.
    - ``probe_fn``: injected for tests and the wizard (defaults to :func:`probe`).
    """
    _check_positive("--gpus", gpus, int)
    _check_positive("--gpu-memory", gpu_memory_gib)
    _check_positive("--nodes", nodes, int)
    _check_positive("--cpu-processes", cpu_processes, int)
    if cpu_processes is not None:
        given = [flag for flag, value in (("--gpu", gpu), ("--gpus", gpus), ("--gpu-memory", gpu_memory_gib)) if value]
        if given:
            raise FtplanError(
                f"--cpu-processes {cpu_processes} plans a CPU run, but {' and '.join(given)} chose a GPU",
                hint="drop --cpu-processes to plan for the GPU, or drop the GPU option(s) to train on CPU",
            )
        cpu = _cpu_only(f"--cpu-processes {cpu_processes}: a CPU plan (GPUs, if any, are not used)")
        return replace(cpu, count=cpu_processes, nodes=nodes, price_per_hour=price_per_hour)
    if price_per_hour is not None and (not isinstance(price_per_hour, (int, float)) or price_per_hour < 0):
        raise FtplanError(f"--price-per-hour must be zero or positive, got {price_per_hour}")
    mem_override = int(gpu_memory_gib * GIB) if gpu_memory_gib else None
    if gpu:
        return _named(resolve_gpu(gpu), gpus or 1, mem_override, price_per_hour, nodes)
    probed = (probe_fn or probe)()
    if probed.gpu is None:
        if mem_override:
            label = f"GPU-{gpu_memory_gib:g}GiB"
            generic = generic_gpu(mem_override, _UNNAMED_CC, label)
            note = (
                f"unnamed {gpu_memory_gib:g} GiB GPU: bf16 assumed and TFLOPS of an RTX 3090/A10G "
                f"({generic.bf16_tflops:g}); name it with --gpu for real figures"
            )
            return _named(generic, gpus or 1, None, price_per_hour, nodes, notes=(note,))
        if gpus:
            raise FtplanError(
                f"--gpus {gpus} but no GPU detected; name the GPU type with --gpu to plan for hardware you don't have"
            )
        if nodes > 1:  # a CPU plan runs one process unless told how many per node
            raise FtplanError(
                f"--nodes {nodes} but no GPU detected",
                hint=f"add --cpu-processes N (training processes per node) for {nodes} CPU machines, or name the "
                "GPU type with --gpu to plan for GPU nodes",
            )
        return replace(probed, price_per_hour=price_per_hour, nodes=nodes)
    if gpus and gpus > probed.count:
        raise FtplanError(
            f"--gpus {gpus} but only {probed.count} GPU{'s' if probed.count != 1 else ''} detected; "
            "name the GPU type with --gpu to plan for hardware you don't have"
        )
    free = min(probed.free_memory_bytes, mem_override) if mem_override else probed.free_memory_bytes
    notes = probed.notes
    if mem_override:
        notes += (f"usable memory per GPU capped at {gpu_memory_gib:g} GiB by --gpu-memory",)
    return replace(
        probed,
        count=gpus or probed.count,
        free_memory_bytes=free,
        price_per_hour=price_per_hour,
        nodes=nodes,
        notes=notes,
    )


def _named(gpu: GPUType, count: int, mem_override: int | None, price, nodes: int, notes=()) -> Hardware:
    free = gpu.memory_bytes
    if mem_override:
        free = min(free, mem_override)
        if mem_override > 1.10 * gpu.memory_bytes:  # 10%: marketed "GB" vs what the driver reports
            raise FtplanError(
                f"--gpu-memory {mem_override / GIB:g} GiB is more than a {gpu.name} has "
                f"({gpu.memory_bytes / GIB:.1f} GiB); drop --gpu-memory or name another GPU"
            )
        notes = (*notes, f"usable memory per GPU capped at {mem_override / GIB:g} GiB by --gpu-memory")
    return Hardware(
        gpu=gpu,
        count=count,
        free_memory_bytes=free,
        detected=False,
        nodes=nodes,
        cpu_memory_bytes=host_memory_bytes(),
        price_per_hour=price,
        notes=tuple(notes),
    )
