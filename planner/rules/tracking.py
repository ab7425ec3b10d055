"""Experiment tracking: which trackers a run reports to (transformers' ``report_to``) and what each needs.

TensorBoard by default: the train extra installs it, it writes local event files and needs no account or
server. MLflow and Weights & Biases only when asked (``--tracking`` / ``tracking.backends``): they are
installed apart from the training stack, and W&B stays offline unless ``tracking.wandb_mode`` says online.
Checks here use ``importlib.util.find_spec`` only: planning imports no tracker.
"""

from __future__ import annotations

import importlib.util

from planner.errors import FtplanError, close_matches
from planner.plan import TrackingSection, tracking_uri_problem
from planner.rules.common import Choice
from planner.vocab import TRACKING_BACKENDS

DEFAULT_BACKENDS = ("tensorboard",)
TRANSFORMERS_INTEGRATIONS = "transformers integrations (TensorBoardCallback, MLflowCallback, WandbCallback)"

# backend -> (modules it imports, the install that brings them)
PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard",), "pip install 'ftplan[train]'"),
    "mlflow": (("mlflow",), "pip install 'ftplan[tracking]'"),
    "wandb": (("wandb",), "pip install wandb"),
}
# MLflow's database backend (the local store is SQLite): mlflow-skinny's README says to install these for it.
SQL_MODULES = ("sqlalchemy", "alembic")
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def parse_backends(text: str | None) -> tuple[str, ...] | None:
    """``--tracking tensorboard,mlflow`` as a tuple; ``none`` is the empty tuple; None leaves it to the rule."""
    if text is None:
        return None
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    if names == ["none"]:
        return ()
    for name in names:
        if name not in TRACKING_BACKENDS:
            hint = close_matches(name, TRACKING_BACKENDS, n=1)
            extra = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise FtplanError(f"--tracking: unknown backend '{name}'{extra}",
                              hint="a comma list of " + ", ".join(TRACKING_BACKENDS) + ", or none")
    if not names:
        raise FtplanError("--tracking: empty", hint="a comma list of " + ", ".join(TRACKING_BACKENDS) + ", or none")
    return tuple(dict.fromkeys(names))


def backends_rule(requested: tuple[str, ...] | None) -> Choice[list[str]]:
    if requested is None:
        return Choice(list(DEFAULT_BACKENDS), "TensorBoard by default: local event files under output/tensorboard, "
                      "no account or server (--tracking adds mlflow or wandb)", TRANSFORMERS_INTEGRATIONS)
    if not requested:
        return Choice([], "--tracking none: metrics go to output/metrics.jsonl and REPORT.md only", "--tracking")
    return Choice(list(requested), f"--tracking {','.join(requested)}", TRANSFORMERS_INTEGRATIONS)


def tracking_section(request, rec) -> TrackingSection:
    """The plan's tracking section; the backends decision goes to ``rec`` (the engine's Recorder)."""
    uri = request.mlflow_uri
    problem = tracking_uri_problem(uri)
    if problem:
        raise FtplanError(f"--mlflow-uri: {problem}")
    backends = rec.add("tracking.backends", backends_rule(request.tracking))
    return TrackingSection(backends=list(backends), mlflow_tracking_uri=uri)


def missing_packages(tracking: TrackingSection) -> list[tuple[str, str]]:
    """(backend, install command) of every chosen backend that cannot be imported here."""
    out = []
    for backend in tracking.backends:
        modules, install = PACKAGES[backend]
        uri = tracking.mlflow_tracking_uri
        if backend == "mlflow" and (uri is None or uri.split(":", 1)[0].split("+", 1)[0] in SQL_SCHEMES):
            modules = modules + SQL_MODULES
        if any(importlib.util.find_spec(m) is None for m in modules):
            out.append((backend, install))
    return out


def missing_message(missing: list[tuple[str, str]]) -> str:
    return "; ".join(f"tracking backend '{b}' is not installed here: {cmd}" for b, cmd in missing)
