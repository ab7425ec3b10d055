"""``ftplan plan --config FILE``: a plan made from an axolotl or LLaMA-Factory config, and its review.

The config's settings are plan keys handed to the rule engine as ``--set`` values (``planner.rules.overrides``:
the keys in ``PINNED_KEYS`` are planned for, the others replace the rules' values and are re-estimated), so the
plan is exactly ``ftplan plan`` with those keys set by the user. The review says where the rules would have
chosen otherwise and why: each setting's decision names the config key and the rules' choice for it (from a
plan made without the config, and one made for the config's method/distribution/precision), and ``config:``
warnings say whether the config fits as its trainer would run it (the estimator on ``tool_plan``), what its loss
path costs, and which keys are not modelled or have no effect. REPORT.md shows them in "Review of your config".
"""

from __future__ import annotations

from dataclasses import replace

from planner.errors import FtplanError
from planner.interop import ConfigImport, estimate_config, processes_of, read_config
from planner.interop.common import load_accelerate_config, show
from planner.units import GIB

REVIEW_PREFIX = "config: "  # warnings of the review (REPORT.md lists them under "Review of your config")


def config_for_plan(config, fmt, accelerate_config, *, gpu, gpus, nodes, gpu_memory, price):
    """(ConfigImport, Hardware) for ``plan --config``: the hardware first (``bf16: auto`` and the process count
    depend on it), with ``--gpus`` defaulting to the accelerate config's processes."""
    from planner.hardware import resolve_hardware

    acc = load_accelerate_config(accelerate_config) if accelerate_config else None
    per_node = gpus or ((processes_of(acc) or 0) // max(1, nodes) or None)
    hardware = resolve_hardware(gpu, per_node, gpu_memory, price, nodes=nodes)
    processes = hardware.total_gpus if hardware.gpu else (per_node or 1)
    ci = read_config(config, fmt, gpus=processes, bf16_ok=hardware.gpu is None or hardware.bf16, accelerate_config=acc)
    return ci, hardware


def set_options(ci: ConfigImport) -> dict[str, str]:
    """The config's settings as ``--set`` values (the text ``planner.plan.parse_override_value`` reads back)."""
    import json

    out = {}
    for key, value in ci.plan_overrides().items():
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def plan_with_config(request, ci: ConfigImport, hardware, user_sets: dict[str, str]):
    """The PlanResult of ``request`` (whose overrides hold the config's settings and the user's ``--set``),
    its decisions and warnings reviewed against what the rules would have chosen."""
    from planner.plan import Decision, get_path
    from planner.rules import make_plan
    from planner.rules.overrides import PINNED_KEYS

    final = make_plan(request, hardware=hardware)
    shared = dict(hardware=hardware, spec=final.spec, profile=final.profile, alternatives=False)
    config_keys = [k for k in set_options(ci) if k not in user_sets]
    free, free_error = None, ""
    try:
        free = make_plan(replace(request, overrides=dict(user_sets)), **shared)
    except FtplanError as exc:  # nothing fits by the rules' choice (NoFitError): the review says so
        free_error = str(exc)
    pins = {k: ci.overrides[k] for k in PINNED_KEYS if k in config_keys}
    if free is not None and all(get_path(free.plan, k) == v for k, v in pins.items()):
        rules = free
    else:
        pinned = {k: v for k, v in request.overrides.items() if k in pins or k in user_sets}
        rules = make_plan(replace(request, overrides=pinned), **shared)
    source = f"{ci.format} config {ci.name}"
    relabel = _relabeller(config_keys, user_sets)
    decisions = []
    seen = set()
    for d in final.plan.decisions:
        if d.field in config_keys:
            seen.add(d.field)
            d = Decision(d.field, d.value, _reason(d.field, ci, final.plan, free if d.field in PINNED_KEYS else rules,
                                                   free_error if d.field in PINNED_KEYS else ""), source)
        elif d.source == "--set" or "--set " in d.reason:
            d = replace(d, reason=relabel(d.reason),
                        source=source if d.source == "--set" and d.field not in user_sets else d.source)
        decisions.append(d)
    before = set(rules.plan.warnings)
    warnings = []
    for w in final.plan.warnings:
        if w in before:
            warnings.append(w)
            continue
        text = relabel(w)
        mentions_user = any(f"{k}=" in w for k in user_sets)
        warnings.append(text if mentions_user or text.startswith(REVIEW_PREFIX) else REVIEW_PREFIX + text)
    warnings += review_lines(ci, final.spec, hardware, tokens=max(1, final.plan.estimate.tokens))
    plan = replace(final.plan, decisions=decisions, warnings=warnings)
    return replace(final, plan=plan)


def _reason(key: str, ci: ConfigImport, plan, rules, error: str) -> str:
    from planner.plan import get_path

    said = ci.tool_keys.get(key)
    head = f"from `{said}`" if said else f"implied by the {ci.format} config (no key: the tool's behaviour)"
    value = get_path(plan, key)
    if rules is None:
        return f"{head}; the rules find no setup: {error}" if error else head
    rule_value = get_path(rules.plan, key)
    if _same(rule_value, value):
        return f"{head}; the rules agree"
    why = next((d.reason for d in rules.plan.decisions if d.field == key), "")
    why = why.replace("re-derived for --set ", "re-derived for the config's ")  # the rules plan made for its pins
    return f"{head}; the rules would choose {show(rule_value)}" + (f": {why}" if why else "")


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    return a == b


def _relabeller(config_keys: list[str], user_sets: dict):
    """Texts of the override machinery say '--set key=value'; for the config's keys they say 'config key='."""

    def relabel(text: str) -> str:
        for k in config_keys:
            text = text.replace(f"--set {k}=", f"the config's {k}=")
        if not any(f"{k}=" in text for k in user_sets):
            text = text.replace("re-derived for --set ", "re-derived for the config's ")
            text = text.replace("--set: ", REVIEW_PREFIX)
            text = text.replace("set by --set", "set by the config")
        return text

    return relabel


def review_lines(ci: ConfigImport, spec, hardware, *, tokens: int) -> list[str]:
    """The config as its trainer runs it: fit (with the largest micro-batch that fits), its loss path, the keys
    not modelled and those without effect."""
    out = []
    est = estimate_config(ci, spec, hardware, tokens=tokens)
    s = est.setup
    need = est.memory.total / GIB
    what = (f"as written for {ci.format}, micro-batch {s.micro_batch} at {s.seq_len} tokens needs {need:.1f} GiB "
            "per GPU")
    if hardware.gpu is None:
        out.append(f"{REVIEW_PREFIX}{what} (no GPU named: pass --gpu to check the fit)")
    else:
        free = hardware.free_memory_bytes / GIB
        gpu = f"{hardware.gpu.name} ({free:.1f} GiB free)"
        fits = (f"micro-batch {est.max_micro_batch} fits" if est.max_micro_batch else
                "micro-batch 1 does not fit either")
        if est.verdict == "exceeds":
            out.append(f"{REVIEW_PREFIX}{what}: exceeds an {gpu} by {need - free:.1f} GiB; {fits}")
        elif est.verdict == "tight":
            out.append(f"{REVIEW_PREFIX}{what}: within the 10% safety margin of an {gpu}; {fits}")
        else:
            out.append(f"{REVIEW_PREFIX}{what}: fits an {gpu} (up to micro-batch {est.max_micro_batch})")
    fused = ci.semantics.get("training.fused_loss", True)
    if not fused and ci.task != "classification":
        with_it = replace(ci, semantics={**ci.semantics, "training.fused_loss": True})
        other = estimate_config(with_it, spec, hardware, tokens=tokens, search=False).memory.total / GIB
        if ci.format == "llama-factory" and ci.task == "preference":
            out.append(f"{REVIEW_PREFIX}LLaMA-Factory's DPO trainer computes log-probs over full-vocabulary fp32 "
                       f"logits: {need:.1f} GiB per GPU against {other:.1f} GiB with a fused loss (ftplan's plan runs "
                       "TRL's; `ftplan export --to axolotl` keeps it with dpo_use_liger_kernel)")
        else:
            key = ("dpo_use_liger_kernel" if ci.task == "preference" else
                   "the Liger plugin's liger_fused_linear_cross_entropy") if ci.format == "axolotl" else \
                "enable_liger_kernel"
            out.append(f"{REVIEW_PREFIX}without {key}, {ci.format} computes the loss over full-vocabulary logits: "
                       f"{need:.1f} GiB per GPU as written, {other:.1f} GiB with it; ftplan's plan uses TRL's chunked "
                       f"loss, and `ftplan export --to {ci.format}` turns it on")
    if ci.overrides.get("model.trust_remote_code"):
        out.append(f"{REVIEW_PREFIX}trust_remote_code: true is not carried: the plan runs the model's own code "
                   "only with --trust-remote-code")
    for key, why in ci.unsupported_keys.items():
        out.append(f"{REVIEW_PREFIX}`{key}` is not modelled: {why}")
    for note in ci.notes:
        out.append(f"{REVIEW_PREFIX}{note}")
    if ci.ignored_keys:
        out.append(f"{REVIEW_PREFIX}keys without effect on memory or time, not carried into the plan: "
                   + ", ".join(ci.ignored_keys))
    return out
