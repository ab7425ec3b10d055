"""GPU memory and step time of real training steps against ``planner.memory`` / ``planner.cost``.

On a CUDA device, for catalog models' real architectures (random init, bf16, sdpa attention; built with
``AutoConfig.for_model(**catalog config)`` + ``AutoModelForCausalLM.from_config``), run real training
steps (forward with labels, backward, optimizer step, zero_grad) for:

* full: pure bf16 model, no autocast, torch AdamW (fused, the Trainer default);
* lora: peft all-linear r=16 (alpha 32, dropout 0), fp32 adapters (peft default), bf16 autocast, fused AdamW;
* qlora: BitsAndBytesConfig NF4 + double quantization + bf16 compute (as executor/model.py
  quantization_config), ``peft.prepare_model_for_kbit_training``, the same LoRA adapters, bf16 autocast,
  bitsandbytes ``PagedAdamW8bit`` (Trainer optim "paged_adamw_8bit").

at several sequence lengths and micro-batches, with and without gradient checkpointing (non-reentrant,
as executor/trainer.py). Measured: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` (peak
stats reset after the model is built, so resident weights count as in the estimate), the device's used
memory from NVML (``nvmlDeviceGetMemoryInfo().used``: CUDA context + allocator reserve + anything outside
torch's allocator such as bitsandbytes' paged optimizer states), and the step time (cuda synchronize,
median of steps 3..N). Compared with ``planner.memory.estimate_memory`` (``peak_allocated``, ``total``) and
``planner.cost.time_and_cost`` for one optimizer step of the same TrainSetup on the detected GPU (or --gpu).
The TrainSetup mirrors benchmarks/memory_accuracy.py: ``loss = model(...).loss`` (fused_loss=False),
packed-style batches without an attention mask (padding_mask=False).

Run:  python benchmarks/gpu_memory.py [--quick] [--only TEXT] [--models A,B] [--steps N] [--gpu NAME]
          [--markdown FILE] [--json benchmarks/results/gpu_memory.json]
Without CUDA it prints "no CUDA device: nothing measured" and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from planner.memory import TrainSetup, estimate_memory
from planner.model_spec import ModelSpec, load_model_spec, spec_from_config

GIB = 2**30
DEFAULT_MODELS = ("Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B")
METHODS = ("full", "lora", "qlora")
SEQS = (512, 1024, 2048)
BATCHES = (1, 4)
LORA_R = 16  # the task's LoRA shape: all-linear r=16, alpha 2r (executor default ratio), dropout 0
_DROPOUT_KEYS = ("attn_pdrop", "resid_pdrop", "embd_pdrop", "attention_dropout", "hidden_dropout", "dropout")


@dataclass(frozen=True)
class Case:
    model: str
    method: str  # full | lora | qlora
    seq: int
    batch: int
    ckpt: bool
    layers: int | None = None  # None: the real layer count

    @property
    def label(self) -> str:
        layers = f" L{self.layers}" if self.layers else ""
        return (f"{self.model}{layers} {self.method} s{self.seq} b{self.batch}"
                f"{' ckpt' if self.ckpt else ''}")


def cases(models: tuple[str, ...] = DEFAULT_MODELS, quick: bool = False) -> list[Case]:
    if quick:
        m = models[0]
        return [Case(m, "full", 1024, 1, False), Case(m, "lora", 1024, 4, True), Case(m, "qlora", 1024, 1, False)]
    return [Case(m, method, s, b, ck)
            for m, method, s, b, ck in itertools.product(models, METHODS, SEQS, BATCHES, (False, True))]


# --------------------------------------------------------------------------------------- configs + estimate


def config_dict(model: str, layers: int | None = None) -> dict:
    """The catalog's config.json for ``model`` (optionally with fewer decoder layers), dropout off."""
    cfg = dict(load_model_spec(model, offline=True).config)
    if layers:
        key = "n_layer" if "n_layer" in cfg else "num_hidden_layers"
        cfg[key] = layers
        if isinstance(cfg.get("layer_types"), list):
            cfg["layer_types"] = cfg["layer_types"][:layers]
    for k in _DROPOUT_KEYS:
        if k in cfg:
            cfg[k] = 0.0
    return cfg


def spec_for(case: Case) -> ModelSpec:
    return spec_from_config(config_dict(case.model, case.layers), case.model, source="catalog")


def setup_for(case: Case) -> TrainSetup:
    """The TrainSetup that models exactly what ``measure`` runs."""
    return TrainSetup(
        method=case.method, precision="bf16", mixed_precision=False, seq_len=case.seq, micro_batch=case.batch,
        gradient_checkpointing=case.ckpt, optimizer="paged_adamw_8bit" if case.method == "qlora" else "adamw",
        attn_implementation="sdpa", lora_r=LORA_R, lora_alpha=2 * LORA_R, lora_target_modules=("all-linear",),
            lora_dropout=0.0,
        fused_loss=False, padding_mask=False, device="cuda",
    )


def estimate_case(case: Case, hardware) -> dict:
    """Estimated peak_allocated / total bytes and seconds per optimizer step on ``hardware``."""
    from planner.cost import time_and_cost

    spec, setup = spec_for(case), setup_for(case)
    mem = estimate_memory(spec, setup)
    out = {"est_peak_allocated": mem.peak_allocated, "est_total": mem.total, "est_phase": mem.phase,
           "est_step_s": None}
    if hardware is not None and hardware.gpu is not None:
        tc = time_and_cost(spec, setup, hardware, tokens=case.seq * case.batch, steps=1)
        out["est_step_s"] = tc.hours * 3600.0
    return out


# --------------------------------------------------------------------------------------- measurement


def _hf_config(raw: dict):
    from transformers import AutoConfig

    kwargs = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "torch_dtype", "dtype")}
    config = AutoConfig.for_model(raw["model_type"], **kwargs)
    for key in _DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, 0.0)
    config.use_cache = False
    return config


_SAVED: dict[str, str] = {}  # config key -> folder with a saved random-init bf16 checkpoint (for QLoRA)


def _saved_checkpoint(raw: dict, root: Path) -> str:
    """bitsandbytes quantizes in ``from_pretrained`` only: save the random-init model once per config."""
    import torch
    from transformers import AutoModelForCausalLM

    key = json.dumps(raw, sort_keys=True)
    if key not in _SAVED:
        folder = root / f"ckpt{len(_SAVED)}"
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(_hf_config(raw), dtype=torch.bfloat16)
        model.save_pretrained(folder)
        del model
        _free()
        _SAVED[key] = str(folder)
    return _SAVED[key]


def _lora_config():
    from peft import LoraConfig

    return LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def build(case: Case, root: Path):
    """(model on cuda, optimizer, autocast?) for ``case``, prepared as the executor prepares it."""
    import torch
    from transformers import AutoModelForCausalLM

    raw = config_dict(case.model, case.layers)
    ckpt_kwargs = {"use_reentrant": False}  # executor/trainer.py, executor/model.py
    if case.method == "qlora":
        from peft import get_peft_model, prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                 bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(
            _saved_checkpoint(raw, root), quantization_config=bnb, dtype=torch.bfloat16,
            attn_implementation="sdpa", device_map={"": torch.cuda.current_device()})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=case.ckpt,
                                                gradient_checkpointing_kwargs=ckpt_kwargs)
        if case.ckpt:
            model.enable_input_require_grads()
        model = get_peft_model(model, _lora_config())
    else:
        with torch.device("cuda"):
            model = AutoModelForCausalLM.from_config(_hf_config(raw), dtype=torch.bfloat16,
                                                     attn_implementation="sdpa")
        if case.ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kwargs)
        if case.method == "lora":
            from peft import get_peft_model

            if case.ckpt:
                model.enable_input_require_grads()
            model = get_peft_model(model, _lora_config())
    model.config.use_cache = False
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if case.method == "qlora":
        from bitsandbytes.optim import PagedAdamW8bit

        opt = PagedAdamW8bit(params, lr=1e-4)
    else:
        opt = torch.optim.AdamW(params, lr=1e-5 if case.method == "full" else 1e-4, fused=True)
    return model, opt, case.method != "full"


def train_step(model, opt, ids, autocast: bool):
    """One step as the estimate models it: ``loss = model(...).loss``, backward, step, zero_grad.
    Returns the detached loss tensor."""
    import torch

    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    value = loss.detach()
    del loss
    opt.step()
    opt.zero_grad(set_to_none=True)
    return value


def _free() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()


def _nvml_used():
    """A callable returning the device's used bytes (NVML), or None when NVML is unavailable."""
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        return lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except Exception:  # noqa: BLE001 - NVML missing or not permitted: the column stays empty
        return None


def measure(case: Case, root: Path, steps: int = 6) -> dict:
    """Peak allocated/reserved/device-used bytes over ``steps`` training steps, median step time, losses."""
    import torch

    torch.manual_seed(0)
    nvml = _nvml_used()
    model, opt, autocast = build(case, root)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (case.batch, case.seq), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    used, times, losses = 0, [], []
    for _ in range(max(2, steps)):
        t0 = time.perf_counter()
        loss = train_step(model, opt, ids, autocast)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
        if nvml is not None:
            used = max(used, nvml())
    out = {
        "max_allocated": torch.cuda.max_memory_allocated(),
        "max_reserved": torch.cuda.max_memory_reserved(),
        "device_used": used or None,
        "step_s": statistics.median(times[2:]) if len(times) > 2 else times[-1],
        "losses": losses,
    }
    del model, opt, ids
    _free()
    return out


# --------------------------------------------------------------------------------------- report


def _hardware(gpu: str | None):
    from planner.hardware import resolve_hardware

    try:
        hw = resolve_hardware(gpu=gpu)
    except Exception:  # noqa: BLE001 - unknown detected GPU: time against the H100 the task names
        hw = None
    if hw is None or hw.gpu is None:
        hw = resolve_hardware(gpu="H100-SXM")
    return hw


def run(selected: list[Case], steps: int, hardware) -> list[dict]:
    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="ftplan-gpu-") as tmp:
        for case in selected:
            row = {"case": case.label, **asdict(case), **estimate_case(case, hardware), "error": None}
            try:
                row.update(measure(case, Path(tmp), steps))
            except torch.cuda.OutOfMemoryError as exc:
                row["error"] = f"OOM: {str(exc).splitlines()[0]}"
            except Exception as exc:  # noqa: BLE001 - one failing case must not lose the others
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if row["error"]:
                _free()  # after the except clause: the traceback (and the model its frames hold) is gone
            if row.get("max_allocated"):
                row["err_alloc"] = (row["est_peak_allocated"] - row["max_allocated"]) / row["max_allocated"]
                ref = row["device_used"] or row["max_reserved"]
                row["err_total"] = (row["est_total"] - ref) / ref
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _gib(x) -> str:
    return "-" if x is None else f"{x / GIB:.2f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def _ms(x) -> str:
    return "-" if x is None else f"{1000 * x:.0f}"


def _line(r: dict) -> str:
    if r["error"]:
        return f"{r['case']:<48} {r['error']}"
    return (f"{r['case']:<48} alloc {_gib(r['max_allocated'])} est {_gib(r['est_peak_allocated'])} "
            f"({_pct(r.get('err_alloc'))})  used {_gib(r['device_used'])} est total {_gib(r['est_total'])} "
            f"({_pct(r.get('err_total'))})  step {_ms(r['step_s'])} ms est {_ms(r['est_step_s'])} ms")


def markdown(rows: list[dict], device: str, gpu_name: str, command: str) -> str:
    errs = [abs(r["err_alloc"]) for r in rows if r.get("err_alloc") is not None]
    lines = [
        "## GPU memory and step time",
        "",
        f"Command: `{command}` on {device}; step-time estimates for {gpu_name}.",
        "",
        ("Measured: real training steps of random-init catalog architectures (bf16, sdpa); peaks of "
         "`torch.cuda.max_memory_allocated`/`max_memory_reserved`, NVML device used memory, median step "
         "time of steps 3..N. Estimated: `planner.memory.estimate_memory` peak_allocated / total and "
         "`planner.cost.time_and_cost` for one step. Error = (estimate - measured) / measured; total is "
         "compared with NVML used memory (reserved when NVML is unavailable)."),
        "",
        (f"peak_allocated error over {len(errs)} cases: median {100 * statistics.median(errs):.1f}%, "
         f"max {100 * max(errs):.1f}%." if errs else "No case measured."),
        "",
        "| case | alloc GiB | reserved GiB | used GiB | est. peak GiB | err | est. total GiB | err "
        "| step ms | est. step ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['case']} | {r['error']} | | | {_gib(r['est_peak_allocated'])} | | "
                         f"{_gib(r['est_total'])} | | | {_ms(r['est_step_s'])} |")
            continue
        lines.append(
            f"| {r['case']} | {_gib(r['max_allocated'])} | {_gib(r['max_reserved'])} | {_gib(r['device_used'])} "
            f"| {_gib(r['est_peak_allocated'])} | {_pct(r.get('err_alloc'))} | {_gib(r['est_total'])} "
            f"| {_pct(r.get('err_total'))} | {_ms(r['step_s'])} | {_ms(r['est_step_s'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 cases (full, LoRA+ckpt, QLoRA) on the first model")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated catalog models")
    ap.add_argument("--only", help="substring of case labels to run")
    ap.add_argument("--steps", type=int, default=6, help="training steps per case (>= 2; time: median of 3..N)")
    ap.add_argument("--gpu", help="catalog GPU for the step-time estimate (default: the detected one)")
    ap.add_argument("--markdown", metavar="FILE", help="write the markdown table to FILE")
    ap.add_argument("--json", metavar="FILE", help="write every case's numbers to FILE")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0
    selected = cases(tuple(m.strip() for m in args.models.split(",") if m.strip()), args.quick)
    if args.only:
        selected = [c for c in selected if args.only in c.label]
    hardware = _hardware(args.gpu)
    device = torch.cuda.get_device_name()
    rows = run(selected, args.steps, hardware)
    text = markdown(rows, device, hardware.gpu.name,
                    "python benchmarks/gpu_memory.py --markdown gpu.md --json benchmarks/results/gpu_memory.json")
    print()
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump({"device": device, "estimate_gpu": hardware.gpu.name, "cases": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
