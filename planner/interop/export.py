"""``ftplan export PLAN_DIR --to axolotl|llama-factory``: a plan as a config for another trainer.

The settings come from the tool's mapping table (the rows ``read_config`` reads with), the dataset entry from
the plan's data file and layout (axolotl ``datasets:`` types and field mapping; LLaMA-Factory's
``dataset_info.json`` entry, written beside the config), and a comment header says what the plan was estimated
for and, read back through ftplan's own reader, what the exported config needs under that trainer.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import FtplanError
from planner.interop.common import BadValue, Ctx, flatten, show
from planner.units import GIB  # what the header reports, as ftplan estimate does


@dataclass
class DataLayout:
    """What the exporter needs to know about the plan's data file: its layout and its actual column names."""

    path: str
    format: str  # plan data.format
    file_type: str  # planner.dataset.readers.FILE_TYPES
    fields: dict[str, str] = field(default_factory=dict)  # canonical name -> the file's column
    chat_style: str = ""  # openai (role/content) | sharegpt (from/value)
    pref_style: str = ""  # explicit (a prompt column) | implicit (chosen/rejected hold whole conversations)
    messages: bool = False  # prompt/chosen/rejected hold message lists
    tool_calls: bool = False  # OpenAI assistant messages with tool_calls
    notes: list[str] = field(default_factory=list)


_ALIASES = {
    "instruction": ("instruction",), "input": ("input",), "output": ("output", "response"), "system": ("system",),
    "history": ("history",), "messages": ("messages", "conversations"), "tools": ("tools",),
    "prompt": ("prompt", "question", "query"), "completion": ("completion", "answer", "response", "output"),
    "text": ("text", "content", "document", "sentence", "review"),
    "label": ("label", "labels", "category", "class", "intent", "target"),
    "chosen": ("chosen", "chosen_messages"), "rejected": ("rejected", "rejected_messages"),
}


def data_layout(plan) -> DataLayout:
    """The layout of the plan's data file, from its first valid record (the columns as the file names them,
    after the plan's ``data.columns`` mapping)."""
    from planner.dataset.readers import file_type_of, iter_records

    path = os.path.abspath(plan.data.path)
    lay = DataLayout(path=path, format=plan.data.format, file_type=file_type_of(path))
    record: dict = {}
    try:
        for _, rec in iter_records(path):
            if isinstance(rec, dict):
                record = rec
                break
    except (FtplanError, OSError) as exc:
        raise FtplanError(f"{path}: cannot read the plan's data file to map its columns ({exc})") from None
    for name, aliases in _ALIASES.items():
        col = plan.data.columns.get(name) or next((a for a in aliases if a in record), None)
        if col is not None and col in record:
            lay.fields[name] = col
    msgs = record.get(lay.fields.get("messages", ""))
    if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
        lay.chat_style = "sharegpt" if "from" in msgs[0] else "openai"
        lay.tool_calls = any(isinstance(m, dict) and m.get("tool_calls") for m in msgs)
    if lay.format == "preference":
        chosen = record.get(lay.fields.get("chosen", ""))
        lay.messages = isinstance(chosen, list)
        lay.pref_style = "explicit" if "prompt" in lay.fields else ("implicit" if lay.messages else "")
        if not lay.pref_style or "chosen" not in lay.fields or "rejected" not in lay.fields:
            raise FtplanError(f"{path}: this preference layout ({', '.join(record)}) has no equivalent in the "
                              "trainers' dataset formats", hint="convert it to prompt/chosen/rejected rows")
    return lay


def _module(to: str):
    from planner.interop import _module as module

    return module(to)


def export(plan_dir, to: str, out=None) -> list[Path]:
    from planner import __version__
    from planner.files import write_atomic
    from planner.plan import load_plan, plan_to_dict, world_size

    mod = _module(to)
    plan = load_plan(plan_dir)
    folder = Path(plan_dir)
    folder = folder if folder.is_dir() else folder.parent
    target = Path(out) if out else folder / f"{to.replace('-', '_')}.yaml"
    if target.is_dir():
        raise FtplanError(f"--out {target}: is a folder", hint="give a file name, e.g. --out config.yaml")
    if plan.strategy.method in ("ia3", "prompt", "prefix"):
        raise FtplanError(f"{folder}: {to} has no {plan.strategy.method} tuning; it cannot run this plan",
                          hint="plan with --set strategy.method=lora")
    if plan.training.classification_mode == "head":
        raise FtplanError(f"{folder}: a sequence-classification head has no {to} equivalent",
                          hint="plan with --set training.classification_mode=generate")
    flat = flatten(plan_to_dict(plan))
    ctx = Ctx(values={**flat, "__plan__": plan}, gpus=world_size(plan))
    cfg: dict = {}
    for row in mod.ROWS:
        try:
            values = row.write({k: flat[k] for k in row.plan if k in flat}, ctx)
        except BadValue as err:
            raise FtplanError(f"{folder}: cannot export to {to}: {err.key}: {err.message}", hint=err.hint) from None
        cfg.update({k: v for k, v in values.items() if v is not None})
    lay = data_layout(plan)
    data_cfg, info = mod.dataset_config(plan, lay, target.parent.resolve())
    cfg.update(data_cfg)
    cfg["output_dir"] = str((folder / f"{to.replace('-', '_')}_output").resolve())
    files: dict[Path, str] = {}
    ds_path = None
    if isinstance(cfg.get("deepspeed"), dict):
        ds_path = target.with_name(f"{target.stem}.deepspeed.json").resolve()
        files[ds_path] = json.dumps(cfg["deepspeed"], indent=2) + "\n"
    check = _read_back(cfg, to, target, plan)
    if ds_path is not None:
        cfg["deepspeed"] = str(ds_path)
    if info is not None:
        info_path = target.parent.resolve() / "dataset_info.json"
        files[info_path] = _merge_info(info_path, info)
    header = _header(plan, folder, to, target, mod, ctx.notes + lay.notes, check, __version__)
    files = {target.resolve(): header + _dump(cfg), **files}
    for path, text in files.items():
        write_atomic(path, text)
    return list(files)


def _dump(cfg: dict) -> str:
    import yaml

    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=110, default_flow_style=False)


def _merge_info(path: Path, entry: dict) -> str:
    """dataset_info.json with the plan's entry added (an existing file keeps its other datasets)."""
    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FtplanError(f"{path}: exists but is not readable JSON ({exc})",
                              hint="move it aside or export with --out into another folder") from None
        if not isinstance(data, dict):
            raise FtplanError(f"{path}: exists but is not a JSON object", hint="export with --out elsewhere")
    data.update(entry)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@dataclass
class _Check:
    total: int | None = None
    verdict: str = ""
    why: str = ""


def _read_back(cfg: dict, to: str, target: Path, plan) -> _Check:
    """The exported config's estimate, read back by ftplan's reader on the plan's hardware (the round trip:
    equal to the plan's own estimate unless the trainer runs something differently, said in the header)."""
    from planner.interop import estimate_config, read_config
    from planner.model_spec import load_model_spec
    from planner.plan import world_size

    try:
        spec = load_model_spec(plan.model.name_or_path, offline=True)
        hw = _hardware_of(plan)
    except FtplanError as exc:
        return _Check(why=f"not re-estimated here: {exc}")
    ci = read_config(target, to, gpus=world_size(plan), bf16_ok=hw.gpu is None or hw.bf16, cfg=dict(cfg))
    est = estimate_config(ci, spec, hw, tokens=max(1, plan.estimate.tokens), search=False)
    return _Check(est.memory.total, est.verdict)


def _hardware_of(plan):
    """The plan's hardware as the estimator takes it: its GPU type with the usable memory it was planned for."""
    from planner.hardware import Hardware, resolve_gpu

    h = plan.hardware
    gpu = resolve_gpu(h.gpu) if h.gpu else None
    return Hardware(gpu=gpu, count=h.count, free_memory_bytes=int(h.memory_gib * GIB) if gpu else 0, detected=False,
                    nodes=h.nodes, price_per_hour=h.price_per_hour or None)


# Plan decisions no mapping row carries, and where they go instead (tests/test_interop.py checks that every
# decision of a plan is in a row of each table or here).
OUTSIDE_ROWS = {
    "data.replay_ratio": "not carried: the replay of general data (data.general_path) is ftplan's",
    "evaluation.metric": "not carried: ftplan's evaluation metric",
    "evaluation.compare_base": "not carried: ftplan's base-vs-tuned comparison",
    "evaluation.forgetting_check": "not carried: ftplan's forgetting check",
    "training.layerwise_lr_decay": "not carried: neither trainer has layer-wise learning-rate decay",
    "tracking.backends": "not carried: the trainers' own report_to / wandb_* settings",
    "estimate.cost_usd": "the comment header (the estimate it was planned for)",
    "hardware.count": "the comment header's launch line (processes)",
}
OUTSIDE_ROWS_BY = {
    "llama-factory": {"evaluation.early_stopping_patience": "not carried: LLaMA-Factory has no early stopping",
                      "data.drop_duplicates": "not carried: LLaMA-Factory does not drop duplicate rows"},
}


def outside_rows(to: str) -> dict[str, str]:
    return {**OUTSIDE_ROWS, **OUTSIDE_ROWS_BY.get(to, {})}

_NOT_CARRIED = (
    ("training.layerwise_lr_decay", lambda v: v is not None, "layer-wise learning-rate decay"),
    ("evaluation.metric", lambda v: v not in ("loss", None), "the evaluation metric (ftplan's evaluation)"),
    ("evaluation.compare_base", bool, "the base-vs-tuned comparison (ftplan's evaluation)"),
    ("evaluation.forgetting_check", bool, "the forgetting check (ftplan's evaluation)"),
    ("evaluation.max_eval_samples", lambda v: False, ""),
    ("data.general_path", bool, "the replay of general data (data.general_path)"),
    ("data.system_turn", lambda v: v not in ("keep", None), "data.system_turn (system text merged or dropped)"),
    ("data.merge_consecutive", bool, "data.merge_consecutive"),
    ("lora.merge_after", bool, "lora.merge_after (merge with `ftplan export --merged`)"),
)
_NOT_CARRIED_BY = {
    "llama-factory": (("evaluation.early_stopping_patience", lambda v: v is not None, "early stopping"),
                      ("data.drop_duplicates", bool, "dropping exact duplicate rows")),
}


def _header(plan, folder: Path, to: str, target: Path, mod, notes: list[str], check: _Check, version: str) -> str:
    from planner.plan import plan_to_dict, world_size

    e, h, s, t = plan.estimate, plan.hardware, plan.strategy, plan.training
    flat = flatten(plan_to_dict(plan))
    world = world_size(plan)
    where = f"{world} x {h.gpu} ({h.memory_gib:.1f} GiB usable per GPU)" if h.gpu else "CPU"
    dist = "" if s.distribution == "single" else f" + {s.distribution}"
    off = " + CPU offload" if (s.offload_optimizer or s.offload_params) else ""
    mixed = " mixed precision" if s.mixed_precision else ""
    ckpt = ", gradient checkpointing" if s.gradient_checkpointing else ""
    lines = [
        f"{mod.NAME} config exported by ftplan {version} from the plan in {folder.resolve()}",
        f"planned for {where}: {s.method}{dist}{off}, {s.precision}{mixed}{ckpt}",
        f"  micro-batch {t.micro_batch} x {t.grad_accum} accumulation x {world} process(es), {t.seq_len} tokens"
        f"{', packed' if t.packing else ''}, lr {t.lr:g}, {t.epochs:g} epoch(s)",
        f"estimate: {e.total / GIB:.1f} GiB per GPU ({e.verdict}): weights {e.weights / GIB:.1f}, gradients "
        f"{e.gradients / GIB:.1f}, optimizer {e.optimizer / GIB:.1f}, activations {e.activations / GIB:.1f}, "
        f"temporary {e.temporary / GIB:.1f}, overhead {e.overhead / GIB:.1f}",
        f"  {e.steps:,} optimizer steps, {e.tokens:,} tokens, {e.time_hours:.2f} h, ${e.cost_usd:,.2f}",
    ]
    if check.total is None:
        lines.append(f"read back by ftplan: {check.why}")
    elif abs(check.total - e.total) <= 0.01 * max(e.total, 1):
        lines.append(f"read back by ftplan (`ftplan estimate --config`): {check.total / GIB:.1f} GiB per GPU, "
                     "as planned")
    else:
        lines.append(f"read back by ftplan (`ftplan estimate --config`): {check.total / GIB:.1f} GiB per GPU "
                     f"({check.verdict}) under {mod.NAME}, not the {e.total / GIB:.1f} GiB planned: see the notes")
    lines.append("launch: " + mod.LAUNCH.format(n=world, config=target.resolve()))
    gone = [text for key, test, text in (*_NOT_CARRIED, *_NOT_CARRIED_BY.get(to, ())) if text and test(flat.get(key))]
    if gone:
        lines.append(f"not carried ({mod.NAME} has no such setting): " + "; ".join(gone))
    for note in dict.fromkeys(notes):
        lines.append(f"note: {note}")
    return "".join(f"# {line}\n" for line in _wrap(lines)) + "\n"


def _wrap(lines: list[str], width: int = 116) -> list[str]:
    import textwrap

    out = []
    for line in lines:
        indent = re.match(r"\s*", line).group(0) + ("  " if not line.startswith(" ") else "")
        out.extend(textwrap.wrap(line, width, subsequent_indent=indent, break_long_words=False,
                                 break_on_hyphens=False) or [""])
    return out


__all__ = ["DataLayout", "data_layout", "export", "show"]
