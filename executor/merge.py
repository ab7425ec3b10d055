"""``ftplan export PLAN_DIR --merged OUT``: a trained plan as one standalone model folder.

What OUT holds: the model as sharded safetensors (``save_pretrained(safe_serialization=True,
max_shard_size=...)``), its config and generation config, the tokenizer with the chat template the plan
trained with, and a model card (README.md, YAML front matter + tables). It loads with
``AutoModelForCausalLM.from_pretrained(OUT)``; no peft, no plan folder needed.

How, by method (peft's own calls, nothing hand-merged):

* LoRA, DoRA, IA3: the base loaded as training loaded it (``executor.model.load_base_model``: the plan's
  dtype, the added tokens' rows), ``PeftModel.from_pretrained(base, final/)``, ``merge_and_unload()``.
* QLoRA: the base loaded in NF4 exactly as trained, then *dequantized* to the 16-bit compute dtype
  (transformers ``PreTrainedModel.dequantize``) and merged there: the adapter is added to the weights it was
  trained against. Merging into the 4-bit layers re-quantizes the sum (peft's ``Linear4bit.merge``; outputs
  change, huggingface/peft#1043), and merging into the original 16-bit checkpoint adds the adapter to weights
  it never saw: on the test model that lands 20x further from the trained model (max |logit diff| 0.081 vs
  0.0039 at logit scale 0.64, bf16; the dequantize-then-merge recipe of the QLoRA community scripts).
* full fine-tuning: ``final/`` is already the model; it is re-saved (sharded) with the card.
* prompt and prefix tuning add virtual tokens, not weight deltas: nothing to merge (FtplanError).

Checked before OUT appears: the saved folder is loaded back with ``AutoModelForCausalLM.from_pretrained``
and its logits on a chat-templated probe are compared with the adapter model's (``LOGIT_TOLERANCE``).
Everything is written into a hidden sibling folder first and renamed to OUT at the end: a failure leaves
no half-written OUT.

``--push-to-hub REPO``: ``HfApi(token=$HF_TOKEN).create_repo`` (private when new) + ``upload_folder``.
The token is read from the environment only (never from huggingface_hub's stored login, never from a
file), never written and never printed; error messages are scrubbed of it.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from executor.guards import environment_error
from executor.model import PEFT_METHODS, is_head_classification, load_dtype, torch_dtype
from executor.paths import FINAL_MARKER, RunPaths
from executor.preflight import resolve_relative_paths
from executor.report import fmt_value
from planner.errors import FtplanError
from planner.plan import Plan, load_plan
from planner.vocab import ADAPTER_METHODS

Log = Callable[[str], None]

TOKEN_ENV = "HF_TOKEN"  # the only place the hub token is read from
DEFAULT_MAX_SHARD_SIZE = "5GB"  # the hub's usual shard size (transformers 4.x default): resumable downloads
MERGEABLE = ("lora", "dora", "qlora", "ia3")  # peft tuners with merge_and_unload (weight deltas)

# Max |logit difference| between the saved model and the adapter model, as a fraction of the largest
# |logit| (at least 1). Merging rounds each merged weight once to the dtype (relative error <= eps/2,
# torch.finfo: bf16 7.8e-3, fp16 9.8e-4, fp32 1.2e-7) where the adapter model adds the fp32 adapter output
# to an unrounded product; the bounds leave room for that error to grow through the layers (bf16 ~6 eps,
# fp16 ~10 eps) while a merge into the wrong base (QLoRA into the un-quantized weights: 0.13 on the test
# model) or a lost adapter fails.
LOGIT_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}
PROBE = [{"role": "user", "content": "What is 2+3? Answer briefly."}]


@dataclass
class MergeResult:
    """What ``export_merged`` wrote and measured (the CLI prints it; the card quotes it)."""

    out: str
    method: str
    dtype: str
    shards: int
    bytes: int
    probe_tokens: int
    max_abs_diff: float
    tolerance: float  # absolute, for this probe: LOGIT_TOLERANCE[dtype] * max(1, max |logit|)
    repo_url: str | None = None


def export_merged(
    plan_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    push_repo: str | None = None,
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
    log: Log = print,
) -> MergeResult:
    """Merge the trained plan in ``plan_dir`` into a standalone model at ``out`` (see the module docstring).

    Raises FtplanError (exit 2) for a plan not trained yet, a method that cannot merge, an OUT that
    already holds files, a missing HF_TOKEN or bad repo id with ``push_repo``, and a logit check that fails.
    """
    plan = load_plan(plan_dir)
    paths = RunPaths.of(plan_dir, plan.output_dir)
    plan = resolve_relative_paths(plan, paths.plan_dir)
    check_exportable(plan, paths)
    out = Path(out).expanduser().resolve()
    check_out(out)
    max_shard_size = _shard_size(max_shard_size)
    token = _hub_token(push_repo) if push_repo else None  # before minutes of merging, not after

    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        result = _merge_and_save(plan, paths, tmp, max_shard_size, log)
        result.out = str(out)
        (tmp / "README.md").write_text(card_text(plan, paths, result, push_repo), encoding="utf-8")
        if out.is_dir():
            out.rmdir()  # empty (check_out): the rename needs it gone
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        error = environment_error(exc, out.parent) if isinstance(exc, (OSError, RuntimeError)) else None
        if error is not None:  # disk full, read-only, permission denied: one line
            raise error from None
        raise
    log(f"ftplan: {result.method} model saved to {out}: {result.shards} safetensors shard(s), "
        f"{result.bytes / 2**20:.1f} MiB, {result.dtype}; logits vs the adapter model: max |diff| "
        f"{result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g}, {result.probe_tokens} tokens)")
    if push_repo:
        result.repo_url = push_to_hub(out, push_repo, token, plan)
        log(f"ftplan: uploaded to {result.repo_url}")
    return result


# ----------------------------------------------------------------------------------------------------
# checks before anything heavy is imported
# ----------------------------------------------------------------------------------------------------


def check_exportable(plan: Plan, paths: RunPaths) -> None:
    """The plan trained to completion, with a method whose result is (or merges into) one causal LM."""
    method = plan.strategy.method
    if method in PEFT_METHODS and method not in MERGEABLE:
        raise FtplanError(
            f"strategy.method '{method}': {method} tuning learns virtual tokens, not weight changes; there is "
            "nothing to merge into the base",
            hint=f"load the adapter with peft (PeftModel.from_pretrained on {paths.final}); `ftplan chat` does",
        )
    if is_head_classification(plan):
        raise FtplanError(
            "training.classification_mode 'head': the result is a sequence classifier, not a causal LM",
            hint="set lora.merge_after: true before training (the run saves output/merged with its label set)",
        )
    if not (paths.final / FINAL_MARKER).is_file():
        what = "incomplete (the run stopped while saving it)" if paths.final.is_dir() else "not trained yet"
        raise FtplanError(f"{paths.final}: {what}", hint=f"run `ftplan run {paths.plan_dir}` first")


def check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise FtplanError(f"{out}: is a file", hint="give --merged a folder path")
    if out.is_dir() and any(out.iterdir()):
        raise FtplanError(f"{out}: not empty", hint="choose a new folder, or delete it to export again")


def _shard_size(size: str | int) -> str | int:
    """``--max-shard-size`` checked with the parser save_pretrained uses (huggingface_hub's shard split)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    if isinstance(size, str) and size.strip().isdigit():
        size = int(size)  # a byte count
    try:
        split_torch_state_dict_into_shards({}, max_shard_size=size)  # parses the size, nothing to split
        ok = (size if isinstance(size, int) else float(size.strip()[:-2])) > 0
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise FtplanError(f"--max-shard-size '{size}': not a size", hint="e.g. 5GB, 500MB, 100KB or a byte count")
    return size


def _hub_token(repo: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise FtplanError(f"--push-to-hub '{repo}': not a repo id ({exc})", hint="use OWNER/NAME") from None
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise FtplanError(
            f"--push-to-hub: {TOKEN_ENV} is not set",
            hint=f"export {TOKEN_ENV}=... (a write token; ftplan reads it from the environment only)",
        )
    return token


# ----------------------------------------------------------------------------------------------------
# merge, save, check
# ----------------------------------------------------------------------------------------------------


def merge_dtype(plan: Plan) -> str:
    """The dtype of the exported weights: QLoRA's 16-bit compute dtype, else the dtype training loaded."""
    if plan.strategy.method == "qlora":
        return "fp16" if plan.strategy.precision == "fp16" else "bf16"  # executor.model.quantization_config
    return {v: k for k, v in _dtypes().items()}[load_dtype(plan)]


def _dtypes() -> dict:
    return {name: torch_dtype(name) for name in ("bf16", "fp16", "fp32")}


def _loading_plan(plan: Plan) -> Plan:
    """The plan as loaded for merging: flash-attention kernels need CUDA; the merged weights do not
    depend on the attention kernel, so a CPU export computes attention with sdpa."""
    import torch

    if plan.strategy.attn_implementation in ("eager", "sdpa") or torch.cuda.is_available():
        return plan
    return dataclasses.replace(plan, strategy=dataclasses.replace(plan.strategy, attn_implementation="sdpa"))


def _merge_and_save(plan: Plan, paths: RunPaths, dest: Path, max_shard_size, log: Log) -> MergeResult:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from executor.model import load_base_model

    dtype = merge_dtype(plan)
    tokenizer = AutoTokenizer.from_pretrained(str(paths.final))  # the trained one: added tokens, chat template
    probe = _probe_ids(tokenizer)
    if plan.strategy.method == "full":
        log(f"ftplan: full fine-tune: re-saving {paths.final} ({dtype})")
        model = AutoModelForCausalLM.from_pretrained(
            str(paths.final), dtype=torch_dtype(dtype), use_safetensors=True,
            trust_remote_code=plan.model.trust_remote_code,
        ).eval()
        reference = _logits(model, probe)
    else:
        from peft import PeftModel

        log(f"ftplan: merging the {plan.strategy.method} adapter of {paths.final} into the base ({dtype})")
        base = load_base_model(_loading_plan(plan), tokenizer)  # QLoRA: NF4, exactly as trained
        adapted = PeftModel.from_pretrained(base, str(paths.final)).eval()
        reference = _logits(adapted, probe)  # the adapter model: what training evaluated
        if plan.strategy.method == "qlora":
            base = adapted.unload()  # the NF4 base back, without the adapter layers
            base = base.dequantize(dtype=torch_dtype(dtype))  # 16-bit weights = dequant(NF4), what was trained on
            adapted = PeftModel.from_pretrained(base, str(paths.final)).eval()
        model = adapted.merge_and_unload()
        del adapted, base
    model.config.use_cache = True  # training turned the KV cache off; generation wants it
    model.save_pretrained(str(dest), safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(str(dest))  # tokenizer files + chat_template.jinja
    device = next(model.parameters()).device
    del model
    gc.collect()

    reloaded = AutoModelForCausalLM.from_pretrained(
        str(dest), dtype=torch_dtype(dtype), use_safetensors=True, trust_remote_code=plan.model.trust_remote_code
    ).to(device).eval()
    diff = (_logits(reloaded, probe) - reference).abs().max().item()
    del reloaded
    tolerance = LOGIT_TOLERANCE[dtype] * max(1.0, reference.abs().max().item())
    if not (diff <= tolerance):  # NaN fails too
        raise FtplanError(
            f"{paths.final}: the merged model's logits differ from the adapter model's by {diff:.3g} "
            f"(tolerance {tolerance:.3g} in {dtype}); nothing written",
            hint="check that plan.yaml's model and strategy are the ones this adapter was trained with",
        )
    shards = sorted(dest.glob("*.safetensors"))
    return MergeResult(
        out=str(dest),
        method=plan.strategy.method,
        dtype=dtype,
        shards=len(shards),
        bytes=sum(p.stat().st_size for p in shards),
        probe_tokens=probe.shape[1],
        max_abs_diff=diff,
        tolerance=tolerance,
    )


def _probe_ids(tokenizer):
    """A chat-templated prompt in the trained tokenizer: real token ids, template tokens included."""
    import torch

    text = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids[:64]], dtype=torch.long)


def _logits(model, ids):
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        return model(input_ids=ids.to(device)).logits.float().cpu()


# ----------------------------------------------------------------------------------------------------
# model card
# ----------------------------------------------------------------------------------------------------


def _is_hub_id(name: str) -> bool:
    """A hub repo id (owner/name), not a local folder: only those may go in the card's base_model."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _base_license(plan: Plan) -> str | None:
    """The license in a local base model's own card (README.md front matter), if it has one."""
    readme = Path(plan.model.name_or_path).expanduser() / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(readme, ignore_metadata_errors=True).data.license
    except Exception:  # a malformed card is not the export's problem: fall back to the placeholder
        return None


def _summary(paths: RunPaths) -> dict:
    try:
        return json.loads(paths.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _settings(plan: Plan) -> dict:
    """The plan's training settings, less those that cannot apply to this model, and no paths (the card
    may be published: the data by its file name only)."""
    strategy = dataclasses.asdict(plan.strategy)
    strategy.pop("num_virtual_tokens")  # prompt/prefix tuning only, which cannot be exported merged
    training = dataclasses.asdict(plan.training)
    if plan.task != "preference":
        training.pop("dpo_beta")
    if plan.task != "classification":
        training.pop("classification_mode")
    out = {"task": plan.task, "strategy": strategy}
    if plan.lora is not None and plan.strategy.method in ADAPTER_METHODS:
        out["lora"] = {k: v for k, v in dataclasses.asdict(plan.lora).items() if k != "merge_after"}
    out["training"] = training
    out["hardware"] = {"gpu": plan.hardware.gpu or "cpu", "count": plan.hardware.count, "nodes": plan.hardware.nodes}
    out["data"] = {"file": Path(plan.data.path).name, "format": plan.data.format, "rows": plan.data.rows}
    return out


def _metrics(summary: dict) -> dict:
    base, tuned = summary.get("base") or {}, summary.get("tuned") or {}
    keys = [k for k in tuned if k not in ("examples", "samples")]
    return {k: {"base": base.get(k), "tuned": tuned.get(k)} for k in keys}


def card_text(plan: Plan, paths: RunPaths, result: MergeResult, push_repo: str | None = None) -> str:
    """README.md: hub metadata (huggingface_hub.ModelCardData) + the plan, metrics and checks as tables.

    Published metadata names no local path: a local base model is named by its folder name in the text
    only (the hub rejects a base_model that is not a repo id), the data by its file name.
    """
    from huggingface_hub import ModelCard, ModelCardData

    summary = _summary(paths)
    name = plan.model.name_or_path
    hub_base = _is_hub_id(name)
    base_label = name if hub_base else f"local folder `{Path(name).name}`"
    license_ = _base_license(plan)
    settings = _settings(plan)
    metrics = _metrics(summary)
    comparisons = summary.get("comparisons") or []
    data = ModelCardData(
        base_model=name if hub_base else None,
        datasets=[settings["data"]["file"]],
        license=license_ or "other",
        license_name=None if license_ else "set-the-base-model-license",
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["ftplan", plan.strategy.method, plan.task, "merged" if plan.strategy.method != "full" else "full"],
        ftplan={
            "method": plan.strategy.method,
            "dtype": result.dtype,
            "settings": settings,
            "metrics": metrics,
            "estimate_vs_measured": [
                {k: c.get(k) for k in ("quantity", "unit", "estimate", "measured", "error_pct")} for c in comparisons
            ],
            "merge_check": {"max_abs_logit_diff": result.max_abs_diff, "tolerance": result.tolerance,
                            "probe_tokens": result.probe_tokens},
        },
    )
    how = ("the LoRA/DoRA/IA3 adapter merged into the base weights with peft `merge_and_unload`"
           if plan.strategy.method in ("lora", "dora", "ia3") else
           "the QLoRA adapter merged into the NF4 base dequantized to 16 bits (the weights it was trained on)"
           if plan.strategy.method == "qlora" else "a full fine-tune: every weight trained")
    where = push_repo or f"path/to/{Path(result.out).name}"
    lines = [
        f"# {push_repo.split('/')[-1] if push_repo else Path(result.out).name}",
        "",
        f"Fine-tuned from {base_label} with ftplan ({plan.task}, {plan.strategy.method}): "
        f"{how}. Weights in {result.dtype}, sharded safetensors; the tokenizer carries the chat template used in "
        "training.",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{where}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
        "```",
        "",
        "**License**: "
        + (f"`{license_}`, from the base model's card." if license_ else
           "placeholder (`other`): set `license` in the front matter to the base model's license before publishing."),
        "",
        "## Training settings (plan.yaml)",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for section, values in settings.items():
        if isinstance(values, dict):
            lines += [f"| {section}.{k} | {fmt_value(v)} |" for k, v in values.items()]
        else:
            lines.append(f"| {section} | {fmt_value(values)} |")
    lines += ["", "## Base vs fine-tuned (held-out data)", ""]
    if metrics:
        lines += ["| metric | base | fine-tuned |", "|---|---|---|"]
        lines += [f"| {k} | {fmt_value(v['base'])} | {fmt_value(v['tuned'])} |" for k, v in metrics.items()]
    else:
        lines.append("No evaluation was recorded (no validation split in the plan).")
    lines += ["", "## Planner estimate vs measured", ""]
    if comparisons:
        lines += ["| quantity | unit | estimate | measured | error |", "|---|---|---|---|---|"]
        for c in comparisons:
            err = f"{c['error_pct']:+.1f}%" if c.get("error_pct") is not None else "–"
            cells = (c["quantity"], c["unit"], fmt_value(c["estimate"]), fmt_value(c["measured"]), err)
            lines.append("| " + " | ".join(cells) + " |")
    else:
        lines.append("The plan carried no estimate to compare with.")
    steps = summary.get("global_step")
    lines += [
        "",
        "## Export check",
        "",
        f"Trained for {steps if steps is not None else '?'} optimizer steps on {summary.get('device', '?')}. "
        f"The saved folder was loaded back with `AutoModelForCausalLM.from_pretrained` and its logits compared "
        f"with the {'adapter model' if plan.strategy.method != 'full' else 'trained model'} on a "
        f"{result.probe_tokens}-token chat prompt: max |diff| {result.max_abs_diff:.3g} "
        f"(tolerance {result.tolerance:.3g} in {result.dtype}).",
        "",
    ]
    content = f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)
    return str(ModelCard(content, ignore_metadata_errors=False))


# ----------------------------------------------------------------------------------------------------
# hub
# ----------------------------------------------------------------------------------------------------


def push_to_hub(folder: Path, repo: str, token: str, plan: Plan) -> str:
    """Upload ``folder`` to the model repo ``repo`` (created private when new); the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id=repo, repo_type="model", private=True, exist_ok=True)
        api.upload_folder(
            repo_id=repo, folder_path=str(folder), repo_type="model",
            commit_message=f"ftplan export: {plan.task} / {plan.strategy.method}",
        )
    except Exception as exc:  # HTTP, network, permission: one line, the token scrubbed
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300].replace(token, "***")
        raise FtplanError(
            f"--push-to-hub '{repo}': upload failed ({text}); the model is saved in {folder}",
            hint=f"check {TOKEN_ENV} (a write token) and the repo name, then `hf upload {repo} {folder}`",
        ) from None
    return f"https://huggingface.co/{repo}"
