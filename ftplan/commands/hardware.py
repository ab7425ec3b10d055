"""``ftplan hardware``: the detected or named GPUs, and the GPU catalog."""

from __future__ import annotations

import json

import click

from planner.hardware import GIB, Hardware, gpu_catalog, resolve_hardware

EPILOG = """\b
Examples:
  ftplan hardware                          # what pynvml sees on this machine
  ftplan hardware --gpu A100-80GB --gpus 8 # plan for hardware you don't have
  ftplan hardware --gpu-memory 24          # an unnamed 24 GB GPU
  ftplan hardware --list                   # the GPU catalog with TFLOPS, prices and sources
  ftplan hardware --json
"""


@click.command(name="hardware", epilog=EPILOG)
@click.option(
    "--gpu", metavar="NAME", help="GPU type from the catalog (e.g. A100-80GB, H100, 4090); skips the probe."
)
@click.option("--gpus", type=int, metavar="N", help="GPUs per node (default: detected, or 1 with --gpu).")
@click.option(
    "--gpu-memory",
    "gpu_memory",
    type=float,
    metavar="GB",
    help="Memory per GPU in GB (GiB); alone: an unnamed GPU of that size; with --gpu: a cap.",
)
@click.option("--price-per-hour", type=float, metavar="USD", help="Override the price per GPU-hour.")
@click.option("--list", "list_catalog", is_flag=True, help="Print the GPU catalog and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(gpu, gpus, gpu_memory, price_per_hour, list_catalog, as_json):
    """Show the detected or named GPUs (pynvml probe, GPU catalog)."""
    if list_catalog:
        _print_catalog(as_json)
        return
    hw = resolve_hardware(gpu=gpu, gpus=gpus, gpu_memory_gib=gpu_memory, price_per_hour=price_per_hour)
    if as_json:
        click.echo(json.dumps(hw.to_dict(), indent=2))
    else:
        _print_hardware(hw)


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _print_hardware(hw: Hardware) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    if hw.gpu is None:
        table.add_row("GPU", "none (CPU only)")
    else:
        g = hw.gpu
        origin = "detected (pynvml)" if hw.detected else "named" if not g.generic else "assumed"
        table.add_row("GPU", f"{hw.count} x {g.name}  [dim]{origin}[/dim]")
        if hw.names:
            table.add_row("devices", ", ".join(hw.names))
        table.add_row("memory / GPU", f"{_gib(g.memory_bytes)} total, {_gib(hw.free_memory_bytes)} usable")
        table.add_row(
            "compute capability",
            f"{g.compute_capability[0]}.{g.compute_capability[1]}"
            f" (bf16 {'yes' if g.bf16 else 'no: fp16 mixed precision'})",
        )
        table.add_row(
            "peak dense TFLOPS", f"bf16 {g.bf16_tflops:g}, fp16 {g.fp16_tflops:g}, fp32 {g.fp32_tflops:g}"
        )
        if g.memory_bandwidth_gbs:
            table.add_row("memory bandwidth", f"{g.memory_bandwidth_gbs:g} GB/s")
        price = f"${hw.hourly_price:.2f} / GPU-hour"
        table.add_row("price", price + (" (--price-per-hour)" if hw.price_per_hour is not None else ""))
        if hw.driver_version:
            table.add_row("driver", hw.driver_version)
        table.add_row("source", g.source)
    table.add_row("host RAM", _gib(hw.cpu_memory_bytes) if hw.cpu_memory_bytes else "unknown")
    console.print(table)
    for note in hw.notes:
        console.print(f"[yellow]note:[/yellow] {note}")


def _print_catalog(as_json: bool) -> None:
    catalog = gpu_catalog()
    if as_json:
        rows = [g.to_dict() for g in catalog.values()]
        click.echo(json.dumps(rows, indent=2))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title="GPU catalog: peak dense TFLOPS, typical on-demand $ per GPU-hour", box=box.SIMPLE_HEAD
    )
    for col in ["GPU", "GiB", "bf16", "fp16", "fp32", "cc", "GB/s", "$/h", "src"]:
        table.add_column(col, justify="left" if col == "GPU" else "right", no_wrap=True)
    for i, g in enumerate(catalog.values(), 1):
        table.add_row(
            g.name,
            f"{g.memory_bytes / GIB:.0f}",
            f"{g.bf16_tflops:g}" if g.bf16_tflops else "-",
            f"{g.fp16_tflops:g}",
            f"{g.fp32_tflops:g}",
            f"{g.compute_capability[0]}.{g.compute_capability[1]}",
            f"{g.memory_bandwidth_gbs:g}",
            f"{g.price_per_hour:.2f}",
            f"[{i}]",
        )
    console = Console()
    console.print(table)
    console.print("Sources (datasheet figures; prices change, override with --price-per-hour):")
    for i, g in enumerate(catalog.values(), 1):
        console.print(f" [{i}] {g.name}: {g.source}", highlight=False, markup=False)
