"""LoRA decisions: rank, alpha, dropout, target modules."""

from __future__ import annotations

from planner.rules.common import QLORA, SEED_GUIDE, SEED_STRATEGIES, Choice, params_text

DEFAULT_R = 16  # seeds/001 "16 is sweet spot"
TINY_R = 8  # seeds/002 "a good starting point is r=8"; fewer examples support fewer parameters
CODE_R = 32  # seeds/001 "Code generation often benefits from larger rank LoRA (32-64)"
SHIFT_R = 64  # continued pretraining = the largest domain shift: top of the 32-64 range
TINY_ROWS = 1_000
CODE_WORDS = ("code", "coder", "starcoder", "codellama", "codegemma", "deepseek-coder")
# QLoRA paper Appendix B.2: dropout 0.1 for models up to 13B, 0.05 for 33B and 65B.
DROPOUT = ((20e9, 0.1), (float("inf"), 0.05))


def is_code_model_or_data(model_name: str, data_format: str = "", fields: tuple[str, ...] = ()) -> bool:
    name = model_name.lower()
    return any(w in name for w in CODE_WORDS) or any("code" in f.lower() for f in fields)


def rank_rule(task: str, train_rows: int, code: bool, goal: str) -> Choice[int]:
    if task == "continued-pretraining":
        return Choice(SHIFT_R, "continued pretraining is a large domain shift: r=64", SEED_STRATEGIES)
    if code:
        return Choice(
            CODE_R, "code benefits from a larger rank: r=32", SEED_STRATEGIES + " 'Code generation'"
        )
    if train_rows < TINY_ROWS:
        return Choice(
            TINY_R, f"{train_rows} examples (< {TINY_ROWS}): a small rank r=8 limits overfitting", SEED_GUIDE
        )
    if goal == "quality" and train_rows >= 10_000:
        return Choice(
            CODE_R, f"goal=quality with {train_rows} examples: r=32 for more capacity", SEED_STRATEGIES
        )
    return Choice(
        DEFAULT_R, "r=16, the usual sweet spot", SEED_STRATEGIES + " 'Rank (r): 8-64 (16 is sweet spot)'"
    )


def alpha_rule(r: int) -> Choice[int]:
    return Choice(
        2 * r, f"alpha = 2r = {2 * r} (update scale alpha/r = 2)", SEED_GUIDE + " / " + SEED_STRATEGIES
    )


def dropout_rule(total_params: int) -> Choice[float]:
    value = next(d for limit, d in DROPOUT if total_params <= limit)
    return Choice(
        value,
        f"{value} for a {params_text(total_params)} model (0.1 up to 13B, 0.05 above)",
        QLORA + " Appendix B.2",
    )


def targets_rule(spec) -> Choice[list[str]]:
    """All linear layers of the blocks: peft's 'all-linear' (every nn.Linear/Conv1D except the output
    head). Kept as the shorthand in the plan (robust across architectures); the reason names the
    modules it expands to for this model."""
    names = block_linear_names(spec)
    expands = f" ({', '.join(names)})" if names else ""
    return Choice(
        ["all-linear"],
        f"all linear layers of each block{expands}: LoRA on every linear layer matches full fine-tuning best",
        QLORA + " §4; " + SEED_GUIDE + " 'all linear layers'",
    )


def block_linear_names(spec) -> list[str]:
    """Unique module names of the attention/MLP linears of one block, in model order."""
    try:
        layers = spec.linear_layers()
    except Exception:  # noqa: BLE001 - a spec that cannot list its layers: the shorthand still works
        return []
    names: list[str] = []
    for layer in layers:
        if layer.role in ("attn", "mlp") and layer.name not in names:
            names.append(layer.name)
    return names
