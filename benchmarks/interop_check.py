"""The configs ``ftplan export --to axolotl|llama-factory`` writes, validated by the trainers' own code (issue 12,
item 4), and the round trip ``ftplan estimate --config EXPORTED`` = the plan's own estimate.

Four plans (LoRA on a tiny local model, QLoRA and full + ZeRO-3 on 8 H100 of Llama-3.1-8B, DPO of Qwen2.5-0.5B)
are made with ``ftplan plan``, exported with ``ftplan export --to`` both ways, and each config is loaded by the
trainer's own loader in an isolated virtualenv (both trainers pin transformers versions other than ftplan's, so
they never enter the project's environment):

- axolotl 0.19.0: ``axolotl.cli.config.load_cfg``, what ``axolotl train CONFIG`` runs first: plugin registration,
  ``validate_config`` (the pydantic ``AxolotlConfigWCapabilities`` with the GPU's capabilities),
  ``normalize_config``, ``normalize_cfg_datasets``. Two hooks of it touch the machine and are replaced:
  ``gpu_capabilities`` answers for the plan's GPU (bf16, tf32, fp8, compute capability, processes), as
  ``validate_config(capabilities=...)`` takes them, and ``prepare_optim_env`` (it starts NCCL for DeepSpeed) is
  skipped, its DeepSpeed JSON parse (transformers' ``HfTrainerDeepSpeedConfig``) done here instead. WORLD_SIZE
  and LOCAL_RANK are the ones ``accelerate launch --num_processes N`` gives rank 0. The ``datasets:`` entries
  pass its dataset schemas (SFTDataset / DPODataset); they are not loaded (its prompt strategies tokenize, and
  the planned models' tokenizers are not available offline).
- LLaMA-Factory 0.9.5: ``llamafactory.hparams.parser.get_train_args`` on the YAML as ``llamafactory-cli train``
  reads it: ``HfArgumentParser.parse_dict`` over its model, data, training, finetuning and generating argument
  dataclasses (unknown keys refused), their ``__post_init__`` checks, transformers' ``TrainingArguments`` checks
  (DeepSpeed JSON included) and its own cross-checks and dependency checks. It runs as rank 0 of the torchrun
  launch the export's header names (RANK=LOCAL_RANK=0, WORLD_SIZE=1, loopback master: gloo on a CPU), with
  transformers' ``is_torch_bf16_gpu_available`` answering for the plan's GPU. Then the dataset_info.json entry
  written beside the config goes through its loader up to tokenization (``get_dataset_list``,
  ``_load_single_dataset``: the file loaded and converted with the entry's formatting and columns), and the rows
  its processor for the stage would keep are counted against the plan's.

Hub models resolve offline (HF_HUB_OFFLINE=1) from an HF cache made in a temporary folder that holds only each
model's config.json, written from ftplan's catalog (itself copied from the published config.json files; for
``--peer``, ``hub_configs.json`` of ../shared/peer-data). Every normalised value the trainer derived is printed
against the plan's; the round trip compares ``estimate --config --json``'s ``per_gpu_bytes.total`` with the plan's
``estimate.total`` (equal within 0.5 %, or different where the export's header says the trainer runs the plan
otherwise, with the number it states).

    python benchmarks/interop_check.py --setup          # create the two venvs first (minutes, ~11 GB)
    python benchmarks/interop_check.py                  # the check (venvs under $FTPLAN_INTEROP_VENVS)
    python benchmarks/interop_check.py --allow-missing  # exit 0 with a message when the venvs are absent
    python benchmarks/interop_check.py --peer           # also load the trainers' published example configs

Run it with the project's Python (``.venv/bin/python``). The venvs live in ``$FTPLAN_INTEROP_VENVS`` (default
``../interop-venvs`` beside the checkout). Results: a table on stdout and benchmarks/results/interop_check.json;
exit 1 on any refused config, wrong value or round-trip mismatch, 2 when the venvs are missing.

This file is also the validator: the venvs' Python runs ``interop_check.py validate TOOL CONFIG GPU_JSON``, so
its top level imports the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "interop_check.json"
PEER = ROOT.parent / "shared" / "peer-data" / "configs"
PEER_DIRS = {"axolotl": "axolotl", "llama-factory": "llamafactory", "llamafactory": "llamafactory"}
MARK = "INTEROP_RESULT "  # the validator's last stdout line: MARK + JSON
TOLERANCE = 0.005  # round trip: |config estimate - plan estimate| / plan estimate


@dataclass(frozen=True)
class Tool:
    name: str  # ftplan export --to
    venv: str  # folder under the venvs root
    package: str  # the trainer, pinned
    # What loading an exported config needs beyond the trainer's own requirements, pinned to what was installed
    # when this was measured: DeepSpeed for ZeRO plans (axolotl's `deepspeed` extra range, without its
    # deepspeed-kernels CUDA build; LLaMA-Factory's README recommends 0.16.4 and get_train_args requires it when
    # `deepspeed:` is set), Liger for LLaMA-Factory (`enable_liger_kernel: true` makes get_train_args require it).
    extras: tuple[str, ...]
    dist: str  # the distribution whose version is reported


TOOLS = {
    "axolotl": Tool("axolotl", "axolotl", "axolotl==0.19.0", ("deepspeed>=0.18.6,<0.19.0",), "axolotl"),
    "llama-factory": Tool("llama-factory", "llamafactory", "llamafactory==0.9.5",
                          ("deepspeed==0.16.4", "liger-kernel==0.8.5"), "llamafactory"),
}
VERSIONS = ("transformers", "torch", "peft", "trl", "deepspeed", "pydantic", "accelerate", "liger-kernel")

TINY = "tiny"  # a case's model: the tiny local model built by examples/tiny_model.py


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    data: str  # examples/data file
    task: str
    args: tuple[str, ...]


CASES = (
    Case("lora", TINY, "alpaca.jsonl", "sft", ("--gpu", "RTX-4090", "--set", "strategy.method=lora")),
    Case("qlora", "meta-llama/Llama-3.1-8B", "chat.jsonl", "chat",
         ("--gpu", "RTX-4090", "--set", "strategy.method=qlora")),
    Case("full-zero3", "meta-llama/Llama-3.1-8B", "text.jsonl", "continued-pretraining",
         ("--gpu", "H100", "--gpus", "8", "--set", "strategy.method=full", "--set", "strategy.distribution=zero3")),
    Case("dpo", "Qwen/Qwen2.5-0.5B", "preference.jsonl", "preference", ("--gpu", "RTX-4090")),
)


def venvs_root() -> Path:
    return Path(os.environ.get("FTPLAN_INTEROP_VENVS") or ROOT.parent / "interop-venvs")


def venv_python(tool: Tool, root: Path | None = None) -> Path:
    return (root or venvs_root()) / tool.venv / "bin" / "python"


# ----------------------------------------------------------------------------------------------------------
# Validators: run by the trainers' venvs (standard library + the trainer only)
# ----------------------------------------------------------------------------------------------------------


class _Collect:
    """A logging handler keeping the trainer's own warnings (its loggers only, not its dependencies' noise)."""

    def __init__(self):
        import logging

        class Handler(logging.Handler):
            def __init__(self, sink):
                super().__init__(logging.WARNING)
                self.sink = sink

            def emit(self, record):
                self.sink.append(record.getMessage().strip())

        self.messages: list[str] = []
        self.handler = Handler(self.messages)

    def attach(self, *names: str) -> None:
        import logging

        for name in names:
            logging.getLogger(name).addHandler(self.handler)


def _plain(value):
    """JSON-ready values (dtypes, enums, paths as text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _zero_stage(ds) -> int | None:
    if isinstance(ds, dict):
        stage = (ds.get("zero_optimization") or {}).get("stage")
        return int(stage) if stage is not None else None
    return None


def validate_axolotl(config: str, gpu: dict, overrides: dict) -> dict:
    """axolotl's CLI loader on ``config`` for ``gpu`` (see the module docstring for the two replaced hooks)."""
    os.environ["WORLD_SIZE"] = str(gpu["n_gpu"])
    os.environ["LOCAL_RANK"] = "0"
    collect = _Collect()
    import axolotl.cli.config as cli_config
    import torch

    collect.attach("axolotl")
    capabilities = {"bf16": gpu["bf16"], "fp8": gpu["fp8"], "tf32": gpu["tf32"], "n_gpu": gpu["n_gpu"],
                    "compute_capability": gpu["compute_capability"]}
    env_capabilities = {"torch_version": str(torch.__version__).split("+", maxsplit=1)[0]}
    cli_config.gpu_capabilities = lambda: (capabilities, env_capabilities)
    cli_config.prepare_optim_env = lambda cfg: None
    cfg = cli_config.load_cfg(config, **overrides)
    ds = cfg.get("deepspeed")
    if ds:
        from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

        HfTrainerDeepSpeedConfig(ds if isinstance(ds, dict) else str(ds))
    keys = ("base_model", "micro_batch_size", "gradient_accumulation_steps", "batch_size", "sequence_len", "adapter",
            "load_in_4bit", "load_in_8bit", "bf16", "fp16", "tf32", "torch_dtype", "gradient_checkpointing",
            "sample_packing", "learning_rate", "num_epochs", "max_steps", "lora_r", "lora_alpha",
            "lora_target_linear", "lora_target_modules", "rl", "optimizer", "lr_scheduler", "attn_implementation",
            "flash_attention", "sdp_attention", "liger_fused_linear_cross_entropy", "dpo_use_liger_kernel",
            "plugins", "lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel",
            "model_config_type", "world_size", "ddp", "val_set_size", "eval_steps", "save_steps")
    values = {k: _plain(cfg.get(k)) for k in keys}
    values["deepspeed_stage"] = _zero_stage(ds if isinstance(ds, dict) else None)
    values["datasets"] = [_plain({k: d.get(k) for k in ("path", "type", "field_messages", "field_chosen",
                                                          "field_rejected", "field") if d.get(k) is not None})
                          for d in cfg.get("datasets") or []]
    return {"values": values, "warnings": collect.messages}


def validate_llama_factory(config: str, gpu: dict, overrides: dict) -> dict:
    """LLaMA-Factory's get_train_args on ``config`` for ``gpu``, as rank 0 of a torchrun launch (what the
    export's header runs: FORCE_TORCHRUN=1) unless ``gpu["torchrun"]`` is false (plain ``llamafactory-cli train``)."""
    if gpu.get("torchrun", True):
        with socket.socket() as s:  # a free loopback port for the one-process gloo group
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    collect = _Collect()
    import llamafactory.hparams.parser as parser
    import transformers.training_args as training_args
    import yaml

    def bf16_gpu(*args, **kwargs) -> bool:
        return bool(gpu["bf16"])

    training_args.is_torch_bf16_gpu_available = bf16_gpu  # TrainingArguments' bf16 check
    parser.is_torch_bf16_gpu_available = bf16_gpu  # get_train_args' pure_bf16 check
    collect.attach("llamafactory")
    with open(config, encoding="utf-8") as fh:
        args = yaml.safe_load(fh)
    load_data = not overrides.pop("skip_data", False)
    args.update(overrides)
    model, data, train, finetune, _gen = parser.get_train_args(args)
    ds = getattr(train, "hf_deepspeed_config", None)
    values = {
        "model_name_or_path": model.model_name_or_path, "stage": finetune.stage,
        "finetuning_type": finetune.finetuning_type, "quantization_bit": model.quantization_bit,
        "double_quantization": model.double_quantization, "per_device_train_batch_size":
        train.per_device_train_batch_size, "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "cutoff_len": data.cutoff_len, "packing": data.packing, "bf16": train.bf16, "fp16": train.fp16,
        "pure_bf16": finetune.pure_bf16, "compute_dtype": _plain(model.compute_dtype),
        "disable_gradient_checkpointing": model.disable_gradient_checkpointing,
        "enable_liger_kernel": model.enable_liger_kernel, "flash_attn": _plain(model.flash_attn),
        "learning_rate": train.learning_rate, "num_train_epochs": train.num_train_epochs,
        "max_steps": train.max_steps, "optim": _plain(train.optim), "lr_scheduler_type":
        _plain(train.lr_scheduler_type), "lora_rank": finetune.lora_rank, "lora_alpha": finetune.lora_alpha,
        "lora_target": _plain(finetune.lora_target), "pref_beta": finetune.pref_beta,
        "deepspeed_stage": _zero_stage(ds.config) if ds is not None else None,
        "train_on_prompt": data.train_on_prompt, "val_size": data.val_size, "dataset": _plain(data.dataset),
        "parallel_mode": _plain(train.parallel_mode), "template": data.template,
    }
    values["datasets"] = _llama_factory_data(model, data, train, finetune.stage) if load_data else []
    values["dataset_rows"] = sum(d["rows"] for d in values["datasets"])
    values["dataset_valid_rows"] = sum(d["valid_rows"] for d in values["datasets"])
    return {"values": _plain(values), "warnings": collect.messages}


def _llama_factory_data(model, data, train, stage: str) -> list[dict]:
    """The config's datasets through LLaMA-Factory's own loading and format conversion, before tokenization
    (``get_dataset_list`` reads dataset_info.json; ``_load_single_dataset`` loads the file and aligns it with
    the entry's formatting and columns): rows, and rows its processor for ``stage`` would keep (the "Dropped
    invalid example" rule of processor/supervised.py, pairwise.py, pretrain.py)."""
    from llamafactory.data.loader import _load_single_dataset
    from llamafactory.data.parser import get_dataset_list

    out = []
    for attr in get_dataset_list(data.dataset, data.dataset_dir):
        rows = _load_single_dataset(attr, model, data, train)
        if stage == "pt":
            valid = sum(bool(r["_prompt"]) and bool(r["_prompt"][0]["content"]) for r in rows)
        elif stage in ("dpo", "rm"):
            valid = sum(len(r["_prompt"]) % 2 == 1 and len(r["_response"]) >= 2 for r in rows)
        else:
            valid = sum(len(r["_prompt"]) % 2 == 1 and len(r["_response"]) == 1 for r in rows)
        out.append({"name": attr.dataset_name, "formatting": attr.formatting, "ranking": attr.ranking,
                    "rows": len(rows), "valid_rows": valid})
    return out


VALIDATORS = {"axolotl": validate_axolotl, "llama-factory": validate_llama_factory}


def validate_main(argv: list[str]) -> int:
    """``validate TOOL CONFIG GPU_JSON [OVERRIDES_JSON]``: one config, one JSON line (MARK) on stdout."""
    tool, config, gpu = argv[0], argv[1], json.loads(argv[2])
    overrides = json.loads(argv[3]) if len(argv) > 3 else {}
    start = time.perf_counter()
    try:
        out = {"accepted": True, **VALIDATORS[tool](config, gpu, overrides)}
    except BaseException as exc:  # noqa: BLE001 - the trainer's refusal is the result, whatever its type
        if isinstance(exc, KeyboardInterrupt):
            raise
        out = {"accepted": False, "error": f"{type(exc).__name__}: {exc}".strip()}
    out["seconds"] = round(time.perf_counter() - start, 2)
    sys.stdout.flush()
    print("\n" + MARK + json.dumps(out, default=str), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------------------
# Setup: the two venvs
# ----------------------------------------------------------------------------------------------------------


def missing_venvs(root: Path) -> list[str]:
    """The tools whose venv has no Python or not the pinned trainer."""
    out = []
    for tool in TOOLS.values():
        py = venv_python(tool, root)
        want = tool.package.split("==")[1]
        ok = py.is_file() and subprocess.run(
            [str(py), "-c", f"import importlib.metadata as m, sys; sys.exit(m.version({tool.dist!r}) != {want!r})"],
            capture_output=True).returncode == 0
        if not ok:
            out.append(tool.name)
    return out


def setup(root: Path, names: list[str]) -> dict:
    """Create the venvs of ``names``: the trainer as the registry resolves it, then the extras (DeepSpeed is an
    sdist that imports torch in setup.py, hence --no-build-isolation). Seconds per step, kept in install.json."""
    root.mkdir(parents=True, exist_ok=True)
    record_path = root / "install.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    for name in names:
        tool = TOOLS[name]
        steps = [([sys.executable, "-m", "venv", str(root / tool.venv)], "venv"),
                 ([str(venv_python(tool, root)), "-m", "pip", "install", "-q", "--upgrade", "pip"], "pip"),
                 ([str(venv_python(tool, root)), "-m", "pip", "install", "-q", tool.package], tool.package),
                 ([str(venv_python(tool, root)), "-m", "pip", "install", "-q", "--no-build-isolation", *tool.extras],
                  " ".join(tool.extras))]
        times = {}
        log = root / f"{tool.venv}-setup.log"
        with log.open("w") as fh:
            for cmd, label in steps:
                print(f"[{name}] {label} ...", flush=True)
                start = time.perf_counter()
                proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
                times[label] = round(time.perf_counter() - start, 1)
                if proc.returncode != 0:
                    raise SystemExit(f"interop_check: setup of {name} failed at `{' '.join(cmd)}` (see {log})")
        record[name] = {"seconds": times, "total_seconds": round(sum(times.values()), 1),
                        "when": time.strftime("%Y-%m-%d")}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record


_VERSIONS_CODE = """
import importlib.metadata as m, json, sys
found = {}
for dist in sys.argv[1:]:
    try:
        found[dist] = m.version(dist)
    except m.PackageNotFoundError:
        pass
print(json.dumps(found))
"""


def tool_versions(root: Path) -> dict:
    out = {}
    for tool in TOOLS.values():
        proc = subprocess.run([str(venv_python(tool, root)), "-c", _VERSIONS_CODE, tool.dist, *VERSIONS],
                              capture_output=True, text=True)
        out[tool.name] = json.loads(proc.stdout) if proc.returncode == 0 else {}
    return out


# ----------------------------------------------------------------------------------------------------------
# The check (project side)
# ----------------------------------------------------------------------------------------------------------


def ftplan(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ftplan", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"interop_check: `ftplan {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def hf_cache(root: Path, models: dict[str, dict]) -> Path:
    """An HF hub cache holding only ``config.json`` per model id (huggingface_hub's layout: refs/main names a
    snapshot folder), so the trainers' AutoConfig calls resolve offline."""
    hub = root / "hub"
    for name, config in models.items():
        repo = hub / f"models--{name.replace('/', '--')}"
        snap = repo / "snapshots" / ("0" * 40)
        snap.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text("0" * 40)
        (snap / "config.json").write_text(json.dumps(config, indent=2))
    return root


def catalog_config(name: str) -> dict | None:
    from planner.model_spec import catalog, catalog_lookup

    hub_id = catalog_lookup(name)
    return dict(catalog()[hub_id]["config"]) if hub_id else None


def gpu_of(gpu_name: str | None, processes: int) -> dict:
    """What the validators report for the plan's hardware: axolotl's capability fields."""
    from planner.hardware import resolve_gpu

    g = resolve_gpu(gpu_name or "H100")
    cc = tuple(g.compute_capability)
    return {"name": g.name, "bf16": bool(g.bf16), "tf32": cc >= (8, 0), "fp8": cc >= (9, 0),
            "compute_capability": f"sm_{cc[0]}{cc[1]}", "n_gpu": processes}


def run_validator(tool: Tool, root: Path, config: Path, gpu: dict, env: dict, cwd: Path,
                  overrides: dict | None = None) -> dict:
    cmd = [str(venv_python(tool, root)), str(Path(__file__).resolve()), "validate", tool.name, str(config),
           json.dumps(gpu), json.dumps(overrides or {})]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(MARK)), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        out = {"accepted": False, "error": f"validator exited {proc.returncode} without a result: " + " | ".join(tail)}
    else:
        out = json.loads(line[len(MARK):])
    out["wall_seconds"] = round(time.perf_counter() - start, 1)
    return out


def validator_env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "WORLD_SIZE", "RANK",
                                                            "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(HF_HOME=str(cache), HF_HUB_CACHE=str(cache / "hub"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", DO_NOT_TRACK="1", AXOLOTL_DO_NOT_TRACK="1", WANDB_MODE="disabled",
               TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return env


def _expect(p, world: int) -> dict[str, list[tuple[str, object, str]]]:
    t, s = p.training, p.strategy
    lora = s.method in ("lora", "qlora", "dora")
    zero = {"zero1": 1, "zero2": 2, "zero3": 3}.get(s.distribution)
    ax = [
        ("micro_batch_size", t.micro_batch, "rows per GPU (a DPO row is a pair)"),
        ("gradient_accumulation_steps", t.grad_accum, ""),
        ("batch_size", t.micro_batch * t.grad_accum * world, "normalize_config: micro x accumulation x processes"),
        ("sequence_len", t.seq_len, ""),
        ("adapter", s.method if s.method in ("lora", "qlora") else ("lora" if s.method == "dora" else None), ""),
        ("load_in_4bit", s.method == "qlora", ""),
        ("bf16", s.precision == "bf16", ""),
        ("fp16", s.precision == "fp16", ""),
        ("gradient_checkpointing", s.gradient_checkpointing, ""),
        ("sample_packing", t.packing, ""),
        ("learning_rate", t.lr, ""),
        ("rl", "dpo" if p.task == "preference" else None, ""),
        ("deepspeed_stage", zero, "the DeepSpeed JSON written beside the config"),
    ]
    if lora:
        ax.append(("lora_r", p.lora.r, ""))
    if t.max_steps > 0:
        ax.append(("max_steps", t.max_steps, ""))
    else:
        ax.append(("num_epochs", t.epochs, ""))
    stage = {"preference": "dpo", "continued-pretraining": "pt"}.get(p.task, "sft")
    lf = [
        ("stage", stage, ""),
        ("finetuning_type", "lora" if lora else "full", ""),
        ("quantization_bit", 4 if s.method == "qlora" else None, ""),
        ("per_device_train_batch_size", t.micro_batch, "rows per GPU (a DPO row is a pair)"),
        ("gradient_accumulation_steps", t.grad_accum, ""),
        ("cutoff_len", t.seq_len - 1 if t.packing else t.seq_len,
         "LLaMA-Factory's DataArguments take 1 off cutoff_len when packing"),
        ("packing", t.packing, ""),
        ("bf16", s.precision == "bf16", ""),
        ("fp16", s.precision == "fp16", ""),
        ("disable_gradient_checkpointing", not s.gradient_checkpointing, "checkpointing is on unless disabled"),
        ("learning_rate", t.lr, ""),
        ("deepspeed_stage", zero, "parsed by transformers' HfTrainerDeepSpeedConfig"),
        ("dataset_rows", p.data.rows, "dataset_info.json entry loaded and aligned by LLaMA-Factory"),
        ("dataset_valid_rows", p.data.valid_rows, "rows its processor for the stage keeps"),
    ]
    if lora:
        lf.append(("lora_rank", p.lora.r, ""))
    if t.max_steps > 0:
        lf.append(("max_steps", t.max_steps, ""))
    else:
        lf.append(("num_train_epochs", t.epochs, ""))
    return {"axolotl": ax, "llama-factory": lf}


def _same(got, want) -> bool:
    if isinstance(want, bool) or want is None:
        return bool(got) == bool(want) if want is not None else got in (None, False)
    if isinstance(want, float) or isinstance(got, float):
        try:
            return abs(float(got) - float(want)) <= 1e-9 * max(1.0, abs(float(want)))
        except (TypeError, ValueError):
            return False
    return got == want


def round_trip(config: Path, plan, world: int) -> dict:
    """``ftplan estimate --config`` of the exported config on the plan's hardware vs the plan's estimate."""
    args = ["estimate", "--config", str(config), "--json", "--gpus", str(world)]
    if plan.hardware.gpu:
        args += ["--gpu", plan.hardware.gpu]
    got = json.loads(ftplan(*args).stdout)["per_gpu_bytes"]["total"]
    want = plan.estimate.total
    diff = (got - want) / want if want else 0.0
    header = config.read_text(encoding="utf-8").split("\n\n", 1)[0]
    read_back = " ".join(ln.lstrip("# ").strip() for ln in header.splitlines() if "read back by ftplan" in ln)
    notes = [ln.lstrip("# ").strip() for ln in header.splitlines() if ln.startswith("# note:")]
    out = {"plan_total": want, "config_total": got, "diff_pct": round(100 * diff, 3)}
    if abs(diff) <= TOLERANCE:
        out["status"] = "equal"
    elif "not the" in read_back and f"{got / 1024**3:.1f} GiB" in read_back and notes:
        out["status"] = "differs, as the header says"  # the trainer runs the plan otherwise; the export says how
        out["note"] = " ".join(notes)
    else:
        out["status"] = "MISMATCH"
        out["note"] = read_back
    return out


@dataclass
class Row:
    plan: str
    tool: str
    config: str
    result: dict
    checks: list[dict] = field(default_factory=list)
    round_trip: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.result.get("accepted", False) and all(c["ok"] for c in self.checks)
                and self.round_trip.get("status") != "MISMATCH")


def make_plans(work: Path, timings: dict) -> dict[str, Path]:
    start = time.perf_counter()
    tiny = work / "tiny-llama"
    proc = subprocess.run([sys.executable, "-m", "examples.tiny_model", str(tiny), "--arch", "llama"], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"interop_check: the tiny model failed to build:\n{proc.stderr}")
    timings["tiny_model"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    folders = {}
    for case in CASES:
        folder = work / case.name
        model = str(tiny) if case.model == TINY else case.model
        ftplan("plan", "--model", model, "--data", str(ROOT / "examples" / "data" / case.data), "--task", case.task,
               "--out", str(folder), *case.args)
        folders[case.name] = folder
    timings["plan"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    for folder in folders.values():
        for tool in TOOLS:
            ftplan("export", str(folder), "--to", tool)
    timings["export"] = round(time.perf_counter() - start, 1)
    return folders


def check(root: Path, jobs: int, peer: bool) -> dict:
    from planner.plan import load_plan, world_size

    timings: dict = {}
    total_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ftplan-interop-") as tmp:
        work = Path(tmp)
        folders = make_plans(work, timings)
        plans = {name: load_plan(folder) for name, folder in folders.items()}
        models = {p.model.name_or_path: catalog_config(p.model.name_or_path) for p in plans.values()}
        cache = hf_cache(work / "hf", {k: v for k, v in models.items() if v is not None})
        env = validator_env(cache)
        jobs_list = []
        for name, folder in folders.items():
            plan = plans[name]
            world = world_size(plan)
            for tool in TOOLS.values():
                config = folder / f"{tool.name.replace('-', '_')}.yaml"
                jobs_list.append((name, tool, config, gpu_of(plan.hardware.gpu, world), world))
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(lambda j: run_validator(j[1], root, j[2], j[3], env, j[2].parent), jobs_list))
        timings["validate"] = round(time.perf_counter() - start, 1)
        rows = []
        start = time.perf_counter()
        for (name, tool, config, _gpu, world), result in zip(jobs_list, results):
            plan = plans[name]
            row = Row(name, tool.name, str(config.relative_to(work)), _scrub(result, work))
            if result.get("accepted"):
                values = result["values"]
                for key, want, why in _expect(plan, world)[tool.name]:
                    got = values.get(key)
                    row.checks.append({"key": key, "plan": want, "trainer": got, "ok": _same(got, want),
                                       **({"why": why} if why else {})})
            row.round_trip = round_trip(config, plan, world)
            rows.append(row)
        timings["round_trip"] = round(time.perf_counter() - start, 1)
        peer_rows = check_peer(root, work, env, jobs, timings) if peer else None
    timings["total"] = round(time.perf_counter() - total_start, 1)
    return {"rows": rows, "peer": peer_rows, "timings": timings}


def check_peer(root: Path, work: Path, env: dict, jobs: int, timings: dict) -> list[dict]:
    """The trainers' own published example configs through the same validators: the harness must accept what
    the trainers accept (outputs redirected to a temp folder; the configs are read in place, never copied)."""
    import yaml

    manifest = json.loads((PEER / "manifest.json").read_text())
    hub = json.loads((PEER / "hub_configs.json").read_text())
    names = set()
    for entry in manifest:
        tool_dir = PEER / PEER_DIRS[entry["tool"]]
        cfg = yaml.safe_load((tool_dir / entry["path"]).read_text())
        names.add(cfg.get("base_model") or cfg.get("model_name_or_path"))
    models = {}
    for name in filter(None, names):
        config = hub.get(name) or catalog_config(name)
        if config is not None:
            models[name] = config
    hf_cache(work / "hf", models)
    jobs_list = []
    for i, entry in enumerate(manifest):
        tool = TOOLS["axolotl" if entry["tool"] == "axolotl" else "llama-factory"]
        tool_dir = PEER / PEER_DIRS[entry["tool"]]
        out_dir = work / "peer-out" / str(i)
        cfg = yaml.safe_load((tool_dir / entry["path"]).read_text())
        gpus = int(entry.get("gpus", 1))
        # `llamafactory-cli train` starts torchrun for several GPUs or DeepSpeed (FORCE_TORCHRUN), else plain Python
        gpu = {**gpu_of("H100", gpus), "torchrun": gpus > 1 or bool(cfg.get("deepspeed"))}
        # their datasets are on the hub (not loaded offline): the config only
        overrides = {"output_dir": str(out_dir), **({"skip_data": True} if tool.name == "llama-factory" else {})}
        jobs_list.append((entry, tool, tool_dir / entry["path"], gpu, tool_dir, overrides))
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda j: run_validator(j[1], root, j[2], j[3], env, j[4], j[5]), jobs_list))
    timings["peer_validate"] = round(time.perf_counter() - start, 1)
    return [{"tool": e["tool"], "path": e["path"], "gpus": e.get("gpus", 1), "covers": e.get("covers", ""),
             "accepted": r.get("accepted", False), "error": _scrub(r.get("error"), work),
             "needs_package": str(r.get("error", "")).startswith(MISSING_PACKAGE), "seconds": r.get("wall_seconds")}
            for (e, *_), r in zip(jobs_list, results)]


# A trainer's dependency check for an optional package the example uses (GaLore, ...): not installed here.
MISSING_PACKAGE = ("PackageNotFoundError", "ModuleNotFoundError")


def _scrub(value, work: Path):
    """Temp and checkout paths out of what is kept (the result file is committed)."""
    text = json.dumps(value)
    return json.loads(text.replace(str(work), "<tmp>").replace(str(ROOT), "<repo>"))


def _first_line(text: str | None, width: int = 110) -> str:
    line = (text or "").strip().splitlines()[0] if text else ""
    return line if len(line) <= width else line[: width - 3] + "..."


def report(out: dict, versions: dict, install: dict) -> str:
    lines = ["| plan | tool | loaded by the trainer | values = plan | estimate --config vs plan (GiB) |",
             "| --- | --- | --- | --- | --- |"]
    for row in out["rows"]:
        r = row.result
        loaded = f"yes ({r.get('wall_seconds')} s)" if r.get("accepted") else f"NO: {_first_line(r.get('error'))}"
        bad = [c for c in row.checks if not c["ok"]]
        vals = (f"{len(row.checks) - len(bad)}/{len(row.checks)}" if row.checks else "-") + "".join(
            f"; {c['key']}: trainer {c['trainer']!r}, plan {c['plan']!r}" for c in bad)
        rt = row.round_trip
        trip = f"{rt['config_total'] / 1024**3:.2f} vs {rt['plan_total'] / 1024**3:.2f} ({rt['diff_pct']:+.2f} %): " \
               f"{rt['status']}"
        lines.append(f"| {row.plan} | {row.tool} | {loaded} | {vals} | {trip} |")
    if out.get("peer") is not None:
        peer = out["peer"]
        ok = sum(p["accepted"] for p in peer)
        lines += ["", f"Published example configs loaded by the same harness: {ok} of {len(peer)}"]
        for p in peer:
            if not p["accepted"]:
                why = "needs an optional package" if p["needs_package"] else "refused"
                lines.append(f"  {why}  {p['tool']}: {p['path']}: {_first_line(p['error'])}")
    lines += ["", "versions: " + "; ".join(f"{k}: " + ", ".join(f"{d} {v}" for d, v in vs.items())
                                      for k, vs in versions.items())]
    if install:
        lines.append("install: " + "; ".join(f"{k} {v['total_seconds']} s" for k, v in install.items()))
    lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in out["timings"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["validate"]:
        return validate_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="create the missing venvs first (timed)")
    ap.add_argument("--allow-missing", action="store_true", help="exit 0 with a message when the venvs are absent")
    ap.add_argument("--peer", action="store_true", help=f"also load the published configs in {PEER}")
    ap.add_argument("--jobs", type=int, default=2, help="validators run at once (default 2)")
    ap.add_argument("--json", type=Path, default=RESULT, help=f"result file (default {RESULT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    root = venvs_root()
    missing = missing_venvs(root)
    if missing and args.setup:
        setup(root, missing)
        missing = missing_venvs(root)
    if missing:
        print(f"interop_check: no venv with {', '.join(TOOLS[m].package for m in missing)} under {root} "
              f"(FTPLAN_INTEROP_VENVS); create them with `python {Path(__file__).relative_to(ROOT)} --setup`",
              file=sys.stderr)
        return 0 if args.allow_missing else 2
    if args.peer and not (PEER / "manifest.json").is_file():
        print(f"interop_check: --peer: {PEER} is absent", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    install_path = root / "install.json"
    install = json.loads(install_path.read_text()) if install_path.is_file() else {}
    versions = tool_versions(root)
    out = check(root, args.jobs, args.peer)
    print(report(out, versions, install))
    ok = all(row.ok for row in out["rows"])
    result = {
        "ok": ok, "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0],
        "tools": {name: {"package": t.package, "extras": list(t.extras), "versions": versions.get(name, {})}
                  for name, t in TOOLS.items()},
        "install_seconds": {k: v.get("seconds") for k, v in install.items()},
        "timings_seconds": out["timings"],
        "cases": [{"plan": r.plan, "tool": r.tool, "config": r.config, "ok": r.ok, "trainer": r.result,
                   "checks": r.checks, "round_trip": r.round_trip} for r in out["rows"]],
    }
    if out["peer"] is not None:
        result["peer"] = out["peer"]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"{'all configs loaded, values and round trip as planned' if ok else 'FAILED'}; wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
