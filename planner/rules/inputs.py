"""Input checks before any decision: the data must be usable for the task."""

from __future__ import annotations

from planner.errors import FtplanError

# Which record formats (planner.vocab.FORMATS) each task can train on; executor/data.py uses
# this same table, so planning refuses exactly what training would refuse.
FORMATS_FOR_TASK: dict[str, tuple[str, ...]] = {
    "sft": ("alpaca", "prompt_completion", "chat", "classification"),
    "chat": ("chat", "alpaca", "prompt_completion"),
    "continued-pretraining": ("text",),
    "classification": ("classification",),
    "preference": ("preference",),
}
TASKS = tuple(FORMATS_FOR_TASK)
# More than this share of malformed rows means a wrong file or wrong task, not a few bad rows
# (same threshold as executor/data.py MAX_INVALID_SHARE).
MAX_INVALID_SHARE = 0.5


def check_task(task: str) -> None:
    if task not in FORMATS_FOR_TASK:
        from planner.errors import close_matches

        hint = close_matches(task, TASKS, n=1)
        raise FtplanError(
            f"unknown task '{task}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""),
            hint="one of: " + ", ".join(TASKS),
        )


def check_profile(profile, task: str) -> None:
    """Refuse empty data, mostly-malformed data, a record format the task cannot train on, and rows the
    model's chat template refuses (naming the template's rule and the option that fixes it)."""
    path = profile.path
    refusals = profile.template_refusals
    if refusals:
        fix = profile.suggested_fix
        raise FtplanError(
            f"{path} {profile.template_refusal} ({refusals} of {profile.rows} rows): the model's chat template "
            "refuses these conversations",
            hint=(f"re-plan with {fix}" if fix else "fix the rows, or give another template with "
                  "--set data.chat_template=...") + " (see `ftplan profile --help`)",
        )
    first = profile.invalid[0] if profile.invalid else None
    where = f"; first: line {first.line}: {first.reason}" if first else ""
    if profile.valid_rows == 0:
        if profile.rows == 0:
            raise FtplanError(
                f"{path}: the dataset is empty (no rows)", hint="point --data at a file with examples"
            )
        raise FtplanError(
            f"{path}: none of the {profile.rows} rows is valid{where}",
            hint="fix the rows or check the file format",
        )
    if profile.rows and profile.invalid_count / profile.rows > MAX_INVALID_SHARE:
        raise FtplanError(
            f"{path}: {profile.invalid_count} of {profile.rows} rows are malformed{where}",
            hint="fix the rows or check that --task matches the data",
        )
    dropped_calls = (profile.skipped or {}).get("tool call not rendered by the chat template", 0)
    if dropped_calls:
        raise FtplanError(
            f"{path}: the model's chat template does not render tool calls ({dropped_calls} rows have them): "
            "the model would learn empty answers where the data calls a tool",
            hint="use a model whose template supports tools, or set a tool-capable template with "
            "--set data.chat_template=ftplan (ftplan's ChatML with <tool_call> blocks)",
        )
    allowed = FORMATS_FOR_TASK[task]
    if profile.format == "kto" and "kto" not in allowed:
        raise FtplanError(
            f"{path}: rows are unpaired preference data (a completion with a true/false 'label', KTO), which "
            f"task '{task}' would train as plain SFT, undesirable answers included",
            hint="pair them (prompt, chosen, rejected) for --task preference, or drop the 'label' column "
            "and the rows labelled false to train on the desirable answers",
        )
    if profile.format not in allowed:
        raise FtplanError(
            f"{path}: rows look like '{profile.format}' records, which task '{task}' cannot train on",
            hint=f"task {task} needs one of: {', '.join(allowed)}",
        )
