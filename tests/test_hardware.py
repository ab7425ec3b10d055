"""planner.hardware and `ftplan hardware`: catalog sanity, name resolution, pynvml probe, overrides, CLI."""

from __future__ import annotations

import json
import sys
import types

import pytest

from ftplan.cli import main
from planner import hardware as hw
from planner.errors import FtplanError
from planner.hardware import (
    GIB,
    Hardware,
    generic_gpu,
    gpu_catalog,
    match_probed_name,
    probe,
    resolve_gpu,
    resolve_hardware,
)

REQUIRED = [
    "T4",
    "V100-16GB",
    "V100-32GB",
    "A10G",
    "L4",
    "L40S",
    "A100-40GB",
    "A100-80GB",
    "H100-PCIe",
    "H100-SXM",
    "H200",
    "B200",
    "RTX-3090",
    "RTX-4090",
    "RTX-A6000",
    "RTX-6000-Ada",
]


# ------------------------------------------------------------------------------ catalog


def test_catalog_has_the_required_gpus():
    assert set(REQUIRED) <= set(gpu_catalog())


@pytest.mark.parametrize("gpu", list(gpu_catalog().values()), ids=lambda g: g.name)
def test_catalog_entry_is_sane(gpu):
    assert any(k in gpu.source.lower() for k in ("datasheet", "whitepaper"))
    assert "price" in gpu.source and any(y in gpu.source for y in ("2023", "2024", "2025", "2026"))
    assert 10 * GIB < gpu.memory_bytes < 256 * GIB
    assert gpu.fp16_tflops > gpu.fp32_tflops > 0  # tensor cores beat plain FP32
    assert 0 < gpu.price_per_hour < 20 and gpu.memory_bandwidth_gbs > 0
    # bf16 tensor throughput exists exactly when compute capability >= 8.0 (Ampere).
    assert (gpu.bf16_tflops > 0) == gpu.bf16 == (gpu.compute_capability >= (8, 0))
    assert not gpu.generic


def test_dense_not_sparse_figures():
    # Datasheets print sparse numbers (A100: 624, H100 SXM: 1979); the catalog must hold the dense half.
    assert resolve_gpu("A100-80GB").bf16_tflops == 312
    assert resolve_gpu("H100-SXM").bf16_tflops == pytest.approx(989, rel=0.01)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a100", "A100-80GB"),
        ("A100 80GB", "A100-80GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("a100-40gb", "A100-40GB"),
        ("4090", "RTX-4090"),
        ("rtx 4090", "RTX-4090"),
        ("h100", "H100-SXM"),
        ("H100 PCIe", "H100-PCIe"),
        ("t4", "T4"),
        ("a6000", "RTX-A6000"),
        ("RTX 6000 Ada", "RTX-6000-Ada"),
        ("A6000-Ada", "RTX-6000-Ada"),
        ("l40s", "L40S"),
    ],
)
def test_resolve_aliases_case_insensitively(name, expected):
    assert resolve_gpu(name).name == expected


def test_unknown_gpu_error_names_close_matches():
    with pytest.raises(FtplanError) as err:
        resolve_gpu("A200")
    msg = str(err.value)
    assert "unknown GPU 'A200'" in msg and "did you mean" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "nvml_name, total_gib, expected",
    [
        ("NVIDIA H100 80GB HBM3", 79.6, "H100-SXM"),
        ("NVIDIA A100-SXM4-40GB", 40, "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", 80, "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", 80, "A100-80GB"),
        ("Tesla T4", 15, "T4"),
        ("NVIDIA GeForce RTX 4090", 24, "RTX-4090"),
        ("NVIDIA GeForce RTX 3090", 24, "RTX-3090"),
        ("NVIDIA H100 PCIe", 80, "H100-PCIe"),
        ("NVIDIA RTX 6000 Ada Generation", 48, "RTX-6000-Ada"),
        ("Tesla V100-SXM2-32GB", 32, "V100-32GB"),
        ("NVIDIA A100-SXM4-40GB MIG 3g.20gb", 20, "A100-40GB"),  # unseen name: family + memory
    ],
)
def test_match_probed_names(nvml_name, total_gib, expected):
    assert match_probed_name(nvml_name, int(total_gib * GIB)).name == expected


def test_unknown_probed_name_is_none():
    assert match_probed_name("NVIDIA GeForce RTX 3080", 10 * GIB) is None
    assert match_probed_name("Quadro RTX 6000", 24 * GIB) is None  # Turing, not the Ada card


def test_generic_gpu_uses_compute_capability():
    turing = generic_gpu(8 * GIB, (7, 5), "GPU-X")
    assert turing.generic and not turing.bf16 and turing.bf16_tflops == 0 and turing.fp16_tflops > 0
    ada = generic_gpu(16 * GIB, (8, 9), "GPU-Y")
    assert ada.bf16 and ada.bf16_tflops > 0 and "generic" in ada.source


# -------------------------------------------------------------------------------- probe


class _NVMLError(Exception):
    pass


def fake_pynvml(devices: list[tuple[str, int, int, tuple[int, int]]], *, init_error=None, driver="550.54.15"):
    """A stand-in for the pynvml module: devices are (name, total, free, compute capability)."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = _NVMLError
    state = {"shutdown": 0}

    def init():
        if init_error:
            raise init_error

    mod.nvmlInit = init
    mod.nvmlShutdown = lambda: state.__setitem__("shutdown", state["shutdown"] + 1)
    mod.nvmlDeviceGetCount = lambda: len(devices)
    mod.nvmlDeviceGetHandleByIndex = lambda i: i
    mod.nvmlDeviceGetName = lambda h: devices[h][0]
    mod.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(
        total=devices[h][1], free=devices[h][2], used=devices[h][1] - devices[h][2]
    )
    mod.nvmlDeviceGetCudaComputeCapability = lambda h: devices[h][3]
    mod.nvmlSystemGetDriverVersion = lambda: driver
    mod.state = state
    return mod


A100 = ("NVIDIA A100-SXM4-80GB", 85_899_345_920, 84_000_000_000, (8, 0))


def test_probe_two_a100(monkeypatch):
    mod = fake_pynvml([A100, A100])
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    found = probe()
    assert found.detected and found.count == 2 and found.gpu.name == "A100-80GB"
    assert found.free_memory_bytes == 84_000_000_000 and found.bf16
    assert found.names == ("NVIDIA A100-SXM4-80GB",) * 2 and found.driver_version == "550.54.15"
    assert found.cpu_memory_bytes > 0
    assert mod.state["shutdown"] == 1


def test_probe_bytes_names_and_mixed_gpus_plan_for_the_smallest(monkeypatch):
    small = (b"NVIDIA GeForce RTX 4090", 25_757_220_864, 20_000_000_000, (8, 9))
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([A100, small]))
    found = probe()
    assert found.gpu.name == "RTX-4090" and found.count == 2
    assert found.free_memory_bytes == 20_000_000_000
    assert any("mixed GPUs" in n for n in found.notes)


def test_probe_unknown_gpu_builds_a_generic_entry(monkeypatch):
    dev = ("NVIDIA Future GPU 9000", 100 * GIB, 99 * GIB, (9, 0))
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([dev]))
    found = probe()
    assert found.gpu.generic and found.gpu.memory_bytes == 100 * GIB and found.gpu.bf16
    assert any("not in the GPU catalog" in n for n in found.notes)


def test_probe_without_pynvml_is_cpu_only(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    found = probe()
    assert found.gpu is None and found.count == 0 and not found.detected and not found.bf16
    assert "nvidia-ml-py" in found.notes[0]


def test_probe_without_driver_is_cpu_only(monkeypatch):
    class NVMLError_LibraryNotFound(_NVMLError):
        pass

    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error=NVMLError_LibraryNotFound()))
    found = probe()
    assert found.gpu is None and found.count == 0
    assert "NVMLError_LibraryNotFound" in found.notes[0]


def test_probe_failing_mid_way_is_cpu_only(monkeypatch):
    mod = fake_pynvml([A100])

    def broken(h):
        raise _NVMLError("GPU is lost")

    mod.nvmlDeviceGetMemoryInfo = broken
    monkeypatch.setitem(sys.modules, "pynvml", mod)
    found = probe()
    assert found.gpu is None and "GPU is lost" in found.notes[0]


def test_probe_on_this_machine_never_raises():
    assert isinstance(probe(), Hardware)


# ---------------------------------------------------------------------------- overrides


def _probed(count=1, gpu_name="A100-80GB", free=70 * GIB):
    return lambda: Hardware(gpu=resolve_gpu(gpu_name), count=count, free_memory_bytes=free, detected=True)


def _cpu():
    return Hardware(gpu=None, count=0, free_memory_bytes=0, detected=False)


def test_named_gpu_overrides_the_probe():
    found = resolve_hardware("h100", 8, probe_fn=lambda: pytest.fail("must not probe"))
    assert found.gpu.name == "H100-SXM" and found.count == 8 and not found.detected
    assert found.free_memory_bytes == found.gpu.memory_bytes and found.total_gpus == 8


def test_more_gpus_than_detected_is_an_error():
    with pytest.raises(FtplanError, match="--gpus 8 but only 1 GPU detected; name the GPU type with --gpu"):
        resolve_hardware(None, 8, probe_fn=_probed(1))
    assert resolve_hardware(None, 1, probe_fn=_probed(2)).count == 1


def test_gpus_without_any_gpu_is_an_error():
    with pytest.raises(FtplanError, match="no GPU detected"):
        resolve_hardware(None, 2, probe_fn=_cpu)


@pytest.mark.parametrize(
    "kwargs",
    [{"gpus": 0}, {"gpus": -1}, {"gpu_memory_gib": 0}, {"gpu_memory_gib": -24}, {"price_per_hour": -1.0}],
)
def test_zero_or_negative_values_are_errors(kwargs):
    with pytest.raises(FtplanError, match="must be"):
        resolve_hardware("A100-80GB", **{"gpus": None, **kwargs})


def test_gpu_memory_alone_means_an_unnamed_gpu():
    found = resolve_hardware(None, None, 24, probe_fn=_cpu)
    assert found.gpu.generic and found.gpu.memory_bytes == 24 * GIB and found.count == 1
    assert found.free_memory_bytes == 24 * GIB and found.bf16
    assert any("unnamed 24 GiB GPU" in n for n in found.notes)


def test_gpu_memory_caps_a_named_or_probed_gpu():
    named = resolve_hardware("A100-80GB", None, 40)
    assert (
        named.free_memory_bytes == 40 * GIB
        and named.gpu.memory_bytes == resolve_gpu("A100-80GB").memory_bytes
    )
    probed = resolve_hardware(None, None, 20, probe_fn=_probed(free=70 * GIB))
    assert probed.free_memory_bytes == 20 * GIB
    assert resolve_hardware("RTX-4090", None, 24).free_memory_bytes <= resolve_gpu("RTX-4090").memory_bytes
    with pytest.raises(FtplanError, match="more than a T4 has"):
        resolve_hardware("T4", None, 80)


def test_price_override():
    found = resolve_hardware("A100-80GB", 2, None, 0.5)
    assert found.hourly_price == 0.5
    assert resolve_hardware("A100-80GB").hourly_price == resolve_gpu("A100-80GB").price_per_hour


def test_cpu_only_probe_passes_through():
    found = resolve_hardware(probe_fn=_cpu)
    assert found.gpu is None and found.hourly_price == 0.0


def test_host_memory_is_read():
    assert hw.host_memory_bytes() > 0


# ---------------------------------------------------------------------------------- CLI


def test_cli_named_json(capsys):
    assert main(["hardware", "--gpu", "A100-80GB", "--gpus", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpu"]["name"] == "A100-80GB" and out["count"] == 8 and out["bf16"] is True
    assert out["gpu"]["compute_capability"] == [8, 0] and out["gpu"]["source"]


def test_cli_table(capsys):
    assert main(["hardware", "--gpu", "T4"]) == 0
    out = capsys.readouterr().out
    assert "T4" in out and "bf16 no" in out


def test_cli_list(capsys):
    assert main(["hardware", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in REQUIRED) and "Sources" in out
    assert main(["hardware", "--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(gpu_catalog()) and all(r["source"] for r in rows)


def test_cli_probe_without_gpu_is_cpu_only(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert main(["hardware", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["gpu"] is None


def test_cli_probe_with_fake_gpus(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([A100, A100]))
    assert main(["hardware", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["detected"] and out["count"] == 2 and out["gpu"]["name"] == "A100-80GB"
    assert main(["hardware", "--gpus", "8"]) == 2
    assert "--gpus 8 but only 2 GPUs detected" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["--gpu", "A200"], ["--gpus", "0", "--gpu", "T4"], ["--gpu-memory", "-1"]])
def test_cli_bad_input_exits_2_with_one_line(args, capsys):
    assert main(["hardware", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftplan: error:") and err.count("\n") == 1


def test_hardware_command_does_not_import_torch():
    import os
    import subprocess

    code = (
        "import sys; from ftplan.cli import main; rc = main(['hardware', '--gpu', 'T4', '--json']); "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc or (1 if heavy else 0))"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and "HEAVY []" in proc.stderr, proc.stderr


def test_cli_help_has_examples(capsys):
    assert main(["hardware", "--help"]) == 0
    assert "Examples:" in capsys.readouterr().out
