"""``ftplan estimate``: VRAM per GPU, time and cost of every strategy (or of one, with --method).

Never imports torch/transformers/peft: the whole estimate is analytic (planner.memory, planner.cost).
"""

from __future__ import annotations

import json

import click

from planner.errors import FtplanError
from planner.units import GIB
from planner.vocab import ATTN_IMPLEMENTATIONS, DEFAULT_LORA_R, ESTIMATE_METHODS, OPTIMIZERS, PRECISIONS

EPILOG = """\b
Examples:
  ftplan estimate --model meta-llama/Llama-3.1-8B --gpu RTX-4090
  ftplan estimate --model Qwen/Qwen2.5-7B --gpu A100-80GB --seq-len 4096 --tokens 50000000
  ftplan estimate --model Qwen/Qwen2.5-0.5B --method full --precision bf16 --seq-len 1024 --json
  ftplan estimate --model huggyllama/llama-65b --method qlora --lora-r 64 --optimizer paged_adamw_8bit \\
      --seq-len 512 --grad-ckpt --gpu A100-80GB --json
  ftplan estimate --model meta-llama/Llama-3.1-70B --method full --mixed-precision --gpus 8 --zero 3 \\
      --offload --gpu H100-SXM
  ftplan estimate --config lora.yml --gpu RTX-4090 --json     # an axolotl or LLaMA-Factory config
"""

DEFAULT_TOKENS = 10_000_000  # when neither --tokens nor --data is given (shown in the output)


@click.command(name="estimate", epilog=EPILOG)
@click.option("--model", "model", metavar="ID|PATH",
              help="Hub id, catalog name or local folder (required unless --config names it).")
@click.option("--config", "config", type=click.Path(dir_okay=False), metavar="FILE",
              help="An axolotl or LLaMA-Factory training config: estimate the setup it describes.")
@click.option("--config-format", type=click.Choice(["axolotl", "llama-factory"]),
              help="With --config: its format (default: recognised from its keys).")
@click.option("--accelerate-config", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --config: the accelerate config it is launched with (FSDP, process count).")
@click.option("--method", type=click.Choice(ESTIMATE_METHODS),
              help="One strategy (default: all side by side).")
@click.option("--precision", "--dtype", "precision", type=click.Choice(PRECISIONS), default=None,
              help="Compute dtype, plan.yaml strategy.precision (full without --mixed-precision: pure 16-bit "
                   "weights, grads, states).")
@click.option("--mixed-precision", is_flag=True, help="fp32 master weights, grads and optimizer; 16-bit compute.")
@click.option("--seq-len", type=int, default=2048, show_default=True, metavar="N")
@click.option("--micro-batch", type=int, default=1, show_default=True, metavar="B")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", "--grad-ckpt/--no-grad-ckpt",
              "gradient_checkpointing", default=False, show_default=True, help="Gradient checkpointing.")
@click.option("--lora-r", type=int, default=DEFAULT_LORA_R, show_default=True, metavar="R")
@click.option("--target-modules", "--lora-targets", "lora_target_modules", default="all-linear", show_default=True,
              metavar="all-linear|q_proj,v_proj", help="plan.yaml lora.target_modules.")
@click.option("--lora-dropout", type=float, default=0.05, show_default=True, metavar="P",
              help="peft lora_dropout (adds a 1-byte mask per adapter input when > 0).")
@click.option("--optimizer", default=None, metavar="NAME",
              help="adamw = torch fused AdamW; adamw_foreach = torch multi-tensor AdamW (one state-sized "
                   "temporary at the step); bitsandbytes 8-bit/paged; sgd; adafactor (default adamw; qlora: "
                   f"paged_adamw_8bit). One of: {', '.join(OPTIMIZERS)}.")
@click.option("--grad-accum", type=int, default=1, show_default=True, metavar="N",
              help="Gradient accumulation steps (gradients stay alive through every micro-batch).")
@click.option("--fused-loss/--no-fused-loss", default=True, show_default=True,
              help="TRL's fused LM head (chunked log-probs, what ftplan's SFT/DPO trainers run) or "
                   "model(**batch).loss with full logits.")
@click.option("--qlora-upcast/--no-qlora-upcast", default=None,
              help="QLoRA: upcast non-quantized weights to fp32 (peft prepare_model_for_kbit_training); "
                   "default: on, off when sharded (FSDP/ZeRO-3) or for fused MoE experts.")
@click.option("--adapter-dtype", type=click.Choice(["fp32", "model"]), default="fp32", show_default=True,
              help="LoRA adapter weights in fp32 (peft default) or the model's 16-bit dtype.")
@click.option("--double-quant/--no-double-quant", default=True, show_default=True,
              help="QLoRA: NF4 double quantization of the block absmax.")
@click.option("--modules-to-save", default="", metavar="embed_tokens,lm_head",
              help="LoRA: whole modules trained beside the adapters (peft modules_to_save).")
@click.option("--added-tokens", type=int, default=0, show_default=True, metavar="N",
              help="Tokens added to the tokenizer (embeddings resized by N rows).")
@click.option("--attn-implementation", "--attn", "attn_implementation",
              type=click.Choice(ATTN_IMPLEMENTATIONS), default="sdpa", show_default=True)
@click.option("--num-virtual-tokens", type=int, default=20, show_default=True, help="Prompt/prefix tuning.")
@click.option("--gpus", type=int, metavar="N", help="GPUs (world size).")
@click.option("--zero", type=int, metavar="0-3", help="DeepSpeed ZeRO stage (with --gpus > 1).")
@click.option("--offload", is_flag=True, help="CPU offload of optimizer states (and params with ZeRO-3/FSDP).")
@click.option("--fsdp", is_flag=True, help="FSDP full shard instead of DeepSpeed.")
@click.option("--gpu", metavar="NAME", help="GPU type from the catalog (default: the detected GPU).")
@click.option("--gpu-memory", type=float, metavar="GiB", help="Usable memory per GPU (GiB).")
@click.option("--price", type=float, metavar="USD", help="Price per GPU-hour (overrides the catalog).")
@click.option("--tokens", type=int, metavar="T", help="Training tokens per epoch.")
@click.option("--data", type=click.Path(dir_okay=False), metavar="FILE", help="Dataset: tokens counted from it.")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object with --method).")
def command(model, config, config_format, accelerate_config,
            method, precision, mixed_precision, seq_len, micro_batch, gradient_checkpointing, lora_r,
            lora_target_modules, lora_dropout, optimizer, grad_accum, fused_loss, qlora_upcast, adapter_dtype,
            double_quant, modules_to_save, added_tokens, attn_implementation,
            num_virtual_tokens, gpus, zero, offload, fsdp, gpu, gpu_memory, price,
            tokens, data, epochs, as_json):
    """VRAM per GPU (weights, gradients, optimizer, activations, temporaries, overhead), verdict,
    largest micro-batch, time and cost: every strategy side by side, or one with --method."""
    from planner.estimate import cheapest_and_fastest, estimate, estimate_all
    from planner.hardware import resolve_hardware
    from planner.model_spec import load_model_spec

    if config:
        return _estimate_config(config, config_format, accelerate_config, model, gpu, gpus, gpu_memory, price,
                                tokens, data, as_json)
    if not model:
        raise FtplanError("--model is required (or --config FILE)", hint="e.g. --model Qwen/Qwen2.5-0.5B")
    _check_values(seq_len=seq_len, micro_batch=micro_batch, lora_r=lora_r, epochs=epochs, tokens=tokens,
                  gpus=gpus, zero=zero, num_virtual_tokens=num_virtual_tokens, grad_accum=grad_accum)
    if added_tokens < 0:
        raise FtplanError(f"--added-tokens must be 0 or more, got {added_tokens}")
    settings = dict(grad_accum=grad_accum, fused_loss=fused_loss, added_tokens=added_tokens,
                    adapter_dtype=adapter_dtype, double_quant=double_quant,
                    modules_to_save=tuple(m.strip() for m in modules_to_save.split(",") if m.strip()))
    spec = load_model_spec(model)
    hardware = resolve_hardware(gpu=gpu, gpus=gpus, gpu_memory_gib=gpu_memory, price_per_hour=price)
    n_tokens, token_note, data_max = _tokens(tokens, data, spec)
    ctx = click.get_current_context()
    if data_max and ctx.get_parameter_source("seq_len") == click.core.ParameterSource.DEFAULT:
        # no --seq-len: the longest example of the data (rounded up to a multiple of 64), within the model
        seq_len = min(spec.max_position_embeddings, -(-data_max // 64) * 64)
        token_note += f"; --seq-len {seq_len} from the longest example"
    targets = tuple(t.strip() for t in lora_target_modules.split(",") if t.strip())
    half = precision or ("bf16" if (hardware.gpu is None or hardware.bf16) else "fp16")
    if method is None:
        if mixed_precision or zero is not None or offload or fsdp:
            raise FtplanError("--mixed-precision/--zero/--offload/--fsdp need --method", hint="add --method full")
        common = dict(seq_len=seq_len, micro_batch=micro_batch, tokens=n_tokens, epochs=epochs, gpus=gpus,
                      attn_implementation=attn_implementation, lora_r=lora_r, lora_target_modules=targets,
                      optimizer=optimizer or "adamw",
                      lora_dropout=lora_dropout, **settings)
        if qlora_upcast is not None:
            common["qlora_upcast"] = qlora_upcast
        rows = estimate_all(spec, hardware, gradient_checkpointing=gradient_checkpointing, **common)
        ckpt_default = ctx.get_parameter_source("gradient_checkpointing") == click.core.ParameterSource.DEFAULT
        if not gradient_checkpointing and ckpt_default:
            rows = _with_ckpt_rescues(rows, estimate_all(spec, hardware, gradient_checkpointing=True, **common))
        ref = next((r for r in rows if r.name == "lora"), rows[0])
        cheap, fast = cheapest_and_fastest(spec, ref.setup.with_(gpus=1, distribution="single"),
                                           tokens=n_tokens, epochs=epochs)
        if as_json:
            click.echo(json.dumps({"model": _model_dict(spec), "hardware": _hw(hardware), "tokens": n_tokens,
                                   "strategies": [r.to_dict() for r in rows],
                                   "cheapest": cheap.to_dict() if cheap else None,
                                   "fastest": fast.to_dict() if fast else None}, indent=2))
        else:
            _print_table(spec, hardware, rows, cheap, fast, n_tokens, epochs, token_note)
        return
    setup = _setup(method, half, mixed_precision, seq_len, micro_batch, gradient_checkpointing, lora_r, targets,
                   optimizer, attn_implementation, num_virtual_tokens, gpus or 1, zero, offload, fsdp).with_(
                       lora_dropout=lora_dropout, **settings)
    if setup.method == "qlora":
        from planner.rules.precision import qlora_upcast_for

        rule = qlora_upcast_for(setup, spec).value
        setup = setup.with_(qlora_upcast=rule if qlora_upcast is None else qlora_upcast)
    elif qlora_upcast is not None:
        raise FtplanError("--qlora-upcast/--no-qlora-upcast apply to --method qlora")
    est = estimate(spec, setup, hardware, tokens=n_tokens, epochs=epochs)
    if as_json:
        out = est.to_dict()
        out["model"] = {**_model_dict(spec), **out["model"]}
        out["hardware"] = _hw(hardware)
        click.echo(json.dumps(out, indent=2))
    else:
        _print_table(spec, hardware, [est], None, None, n_tokens, epochs, token_note)


# The flags that describe a setup: --config describes it instead.
_SETUP_FLAGS = ("method", "precision", "mixed_precision", "seq_len", "micro_batch", "gradient_checkpointing", "lora_r",
                "lora_target_modules", "lora_dropout", "optimizer", "grad_accum", "fused_loss", "qlora_upcast",
                "adapter_dtype", "double_quant", "modules_to_save", "added_tokens", "attn_implementation",
                "num_virtual_tokens", "zero", "offload", "fsdp", "epochs")


def _estimate_config(config, fmt, accelerate_config, model, gpu, gpus, gpu_memory, price, tokens, data, as_json):
    """``--config FILE``: the setup an axolotl/LLaMA-Factory config describes, estimated as that trainer runs
    it (planner.interop), printed as ``--method ... --json`` prints one strategy, plus what was mapped."""
    from planner.hardware import resolve_hardware
    from planner.interop import config_json, estimate_config, processes_of, read_config
    from planner.interop.common import load_accelerate_config
    from planner.model_spec import load_model_spec

    ctx = click.get_current_context()
    given = [f"--{n.replace('_', '-')}" for n in _SETUP_FLAGS
             if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT]
    if given:
        raise FtplanError(f"--config describes the setup; {', '.join(given)} cannot be combined with it",
                          hint="edit the config, or estimate with --model and the flags instead")
    if tokens is not None and tokens <= 0:
        raise FtplanError(f"--tokens must be a positive integer, got {tokens}")
    acc = load_accelerate_config(accelerate_config) if accelerate_config else None
    hardware = resolve_hardware(gpu=gpu, gpus=gpus or processes_of(acc), gpu_memory_gib=gpu_memory,
                                price_per_hour=price)
    processes = hardware.total_gpus if hardware.gpu else (gpus or processes_of(acc) or 1)
    ci = read_config(config, fmt, gpus=processes, bf16_ok=hardware.gpu is None or hardware.bf16,
                     accelerate_config=acc)
    if model and model != ci.model:
        ci.notes.append(f"--model {model} replaces the config's model {ci.model}")
        ci.model = model
    spec = load_model_spec(ci.model, trust_remote_code=ci.overrides.get("model.trust_remote_code", False))
    n_tokens, token_note, _ = _tokens(tokens, data, spec)
    est = estimate_config(ci, spec, hardware, tokens=n_tokens)
    if as_json:
        out = est.to_dict()
        out["model"] = {**_model_dict(spec), **out["model"]}
        out["hardware"] = _hw(hardware)
        out.update(config_json(ci))
        click.echo(json.dumps(out, indent=2))
        return
    _print_table(spec, hardware, [est], None, None, est.tokens, 1.0, token_note)
    _print_config(ci)


def _print_config(ci) -> None:
    """What --config mapped, what it could not model, and what it left out."""
    from rich.console import Console
    from rich.markup import escape

    from planner.interop.common import show

    console = Console(width=150, highlight=False)
    console.print(f"[bold]{escape(ci.format)} config {escape(ci.path)}[/bold] ({ci.task}, {ci.gpus} process(es))")
    for m in ci.mapped:
        plan = escape(", ".join(f"{k}={show(v)}" for k, v in m["plan"].items()))
        if m["keys"]:
            keys = escape(", ".join(f"{k}: {show(v)}" for k, v in m["keys"].items()))
            console.print(f"  mapped       {keys} -> {plan}", soft_wrap=True)
        elif not m["default"]:  # decided by the absence of keys: no DeepSpeed/FSDP, no fused loss...
            console.print(f"  implied      {plan} (no key: {escape(ci.format)}'s behaviour)", soft_wrap=True)
    for key, why in ci.unsupported_keys.items():
        console.print(f"  [yellow]not modelled[/yellow] {escape(key)}: {escape(why)}", soft_wrap=True)
    if ci.ignored_keys:
        console.print(f"  [dim]ignored (no effect on memory or time): {escape(', '.join(ci.ignored_keys))}[/dim]",
                      soft_wrap=True)
    for note in ci.notes:
        console.print(f"  [dim]note: {escape(note)}[/dim]", soft_wrap=True)


def _check_values(**values) -> None:
    for name in ("seq_len", "micro_batch", "lora_r", "num_virtual_tokens", "grad_accum"):
        if values[name] <= 0:
            raise FtplanError(f"--{name.replace('_', '-')} must be a positive integer, got {values[name]}")
    if values["epochs"] <= 0:
        raise FtplanError(f"--epochs must be positive, got {values['epochs']}")
    if values["tokens"] is not None and values["tokens"] <= 0:
        raise FtplanError(f"--tokens must be a positive integer, got {values['tokens']}")
    if values["gpus"] is not None and values["gpus"] <= 0:
        raise FtplanError(f"--gpus must be a positive integer, got {values['gpus']}")
    if values["zero"] is not None and values["zero"] not in (0, 1, 2, 3):
        raise FtplanError(f"--zero {values['zero']} is not a DeepSpeed ZeRO stage", hint="use 0, 1, 2 or 3")


def _setup(method, precision, mixed, seq_len, micro_batch, gradient_checkpointing, lora_r, targets, optimizer, attn,
           nvt, gpus, zero, offload, fsdp):
    from planner.memory import TrainSetup

    if mixed and method != "full":
        raise FtplanError("--mixed-precision applies to --method full", hint="drop it for LoRA/QLoRA")
    if zero and fsdp:
        raise FtplanError("--zero and --fsdp are alternatives", hint="pick one")
    if fsdp and gpus < 2:
        raise FtplanError(f"--fsdp needs --gpus of at least 2 (got {gpus})",
                          hint="on one GPU, DeepSpeed --zero 2/3 with --offload moves states to the CPU")
    dist = "fsdp" if fsdp else {None: "ddp", 0: "ddp", 1: "zero1", 2: "zero2", 3: "zero3"}[zero]
    if gpus == 1 and not zero:
        dist = "single"  # DeepSpeed ZeRO runs on one GPU too (ZeRO-Offload)
    if offload and dist not in ("zero1", "zero2", "zero3", "fsdp"):
        raise FtplanError("--offload needs --zero 1-3 (any GPU count) or --fsdp (--gpus > 1)")
    full_shard = dist in ("zero3", "fsdp")
    if method == "full" and precision == "fp32":
        mixed = False
    opt = optimizer or ("paged_adamw_8bit" if method == "qlora" else "adamw")
    return TrainSetup(
        method=method, precision=precision, mixed_precision=mixed, seq_len=seq_len, micro_batch=micro_batch,
        gradient_checkpointing=gradient_checkpointing, optimizer=opt, attn_implementation=attn, lora_r=lora_r,
        lora_target_modules=targets,
        num_virtual_tokens=nvt, gpus=gpus, distribution=dist, offload_optimizer=offload,
        offload_params=offload and full_shard,
    )


def _tokens(tokens, data, spec) -> tuple[int, str, int]:
    """(training tokens per epoch, a note on where they come from, longest example or 0)."""
    if data:
        from planner.dataset import profile_data

        prof = profile_data(data, tokenizer_path=spec.tokenizer_path)
        if tokens:
            return tokens, "", prof.tokens_max
        total = prof.total_tokens * max(1, prof.sequences_per_row)
        return max(1, total), f"tokens counted in {data} ({prof.tokenizer})", prof.tokens_max
    if tokens:
        return tokens, "", 0
    return DEFAULT_TOKENS, f"no --tokens/--data: time and cost for {DEFAULT_TOKENS:,} tokens", 0


def _model_dict(spec) -> dict:
    return {"name": spec.name, "model_type": spec.model_type, "total_params": spec.param_counts().total}


def _hw(hw) -> dict:
    return {"gpu": hw.gpu.name if hw.gpu else None, "count": hw.count, "free_memory_bytes": hw.free_memory_bytes,
            "price_per_hour": hw.hourly_price}


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


_STYLE = {"fits": "green", "tight": "yellow", "exceeds": "red", "cpu": "dim"}


def _with_ckpt_rescues(rows, ckpt_rows):
    """Add '<strategy>+ckpt' after each strategy that exceeds only for want of gradient checkpointing,
    so the default table answers 'what fits here?' rather than 'what fits without checkpointing?'."""
    from dataclasses import replace

    rescued = {r.name: r for r in ckpt_rows if r.verdict in ("fits", "tight")}
    out = []
    for r in rows:
        out.append(r)
        if r.verdict == "exceeds" and r.name in rescued:
            out.append(replace(rescued[r.name], name=f"{r.name}+ckpt"))
    return out


def _print_table(spec, hw, rows, cheap, fast, tokens, epochs, token_note) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if console.width < 150:  # the 13 columns need ~140 characters; wrap rather than truncate names
        console = Console(width=150)
    where = f"{hw.count} x {hw.gpu.name} ({_gib(hw.free_memory_bytes)} GiB free each)" if hw.gpu else "CPU only"
    console.print(f"[bold]{spec.name}[/bold]  {spec.param_counts().total / 1e9:.2f}B params  on {where}")
    table = Table(title=f"Memory per GPU (GiB), {tokens * epochs:,.0f} tokens", header_style="bold")
    for col in ("strategy", "trainable", "weights", "grads", "optim", "activ.", "temp", "peak", "total",
                "verdict", "max mb", "hours", "$"):
        table.add_column(col, justify="left" if col in ("strategy", "verdict") else "right")
    for r in rows:
        m = r.memory
        table.add_row(
            r.name, f"{r.trainable_params / 1e6:,.1f}M", _gib(m.weights), _gib(m.gradients), _gib(m.optimizer),
            _gib(m.activations), _gib(m.temporary), _gib(m.peak_allocated), _gib(m.total),
            f"[{_STYLE[r.verdict]}]{r.verdict}[/]", str(r.max_micro_batch), _fmt_hours(r.time_hours),
            f"{r.cost_usd:,.2f}" if r.cost_usd >= 0.01 else f"{r.cost_usd:.4f}",
        )
    console.print(table)
    console.print("[dim]peak = the largest phase of a step (forward, loss, backward, optimizer), not the sum "
                  "of the columns; total = peak + CUDA context + allocator reserve.[/dim]")
    if rows[0].setup.seq_len:
        console.print(f"[dim]seq_len {rows[0].setup.seq_len}, micro-batch {rows[0].setup.micro_batch}"
                      f"{', grad ckpt' if rows[0].setup.gradient_checkpointing else ''}. {token_note}[/dim]")
    for label, e in (("cheapest", cheap), ("fastest", fast)):
        if e:
            console.print(f"{label} ({e.name}): {e.gpus} x {e.gpu_name}  {_fmt_hours(e.time_hours)} h  "
                          f"${e.cost_usd:,.2f}")
    notes = sorted({n for r in rows for n in (*r.memory.notes, *r.notes)})
    if hw.gpu is None:
        notes.append("no GPU detected or named: memory is what a GPU would need; name one with --gpu")
    for note in notes:
        console.print(f"[dim]note: {note}[/dim]")


def _fmt_hours(h: float) -> str:
    if h == float("inf"):
        return "-"
    if h < 0.1:
        return f"{h:.4f}"
    return f"{h:,.2f}" if h < 100 else f"{h:,.0f}"
