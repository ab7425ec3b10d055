"""Budget: does the chosen plan meet --max-hours / --max-cost, and if not, which plan that fits
does (or why none can)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from planner.rules.common import Choice


def within(time_hours: float, cost_usd: float, max_hours: float | None, max_cost: float | None) -> bool:
    if max_hours is not None and not time_hours <= max_hours:
        return False
    if max_cost is not None and not cost_usd <= max_cost:
        return False
    return True


def limits_text(max_hours: float | None, max_cost: float | None) -> str:
    parts = []
    if max_hours is not None:
        parts.append(f"--max-hours {max_hours:g}")
    if max_cost is not None:
        parts.append(f"--max-cost {max_cost:g}")
    return " and ".join(parts)


def budget_rule(chosen, fitting: Sequence, family_rank: dict[str, int], max_hours, max_cost):
    """(option, Choice describing the budget outcome, warnings).

    ``chosen`` and ``fitting`` are options with ``.name``, ``.family``, ``.estimate.time_hours`` and
    ``.estimate.cost_usd``. When ``chosen`` is over budget, the best-ranked fitting option within it
    replaces it; when none is, ``chosen`` stays and the warning gives the numbers and the way out.
    """
    est = chosen.estimate
    money = f"{est.time_hours:.2f} h, ${est.cost_usd:.2f}"
    if max_hours is None and max_cost is None:
        return chosen, Choice(None, f"no budget limit given; {chosen.name}: {money}", ""), []
    limits = limits_text(max_hours, max_cost)
    if within(est.time_hours, est.cost_usd, max_hours, max_cost):
        return chosen, Choice(None, f"{chosen.name} ({money}) is within {limits}", ""), []
    ok = [o for o in fitting if within(o.estimate.time_hours, o.estimate.cost_usd, max_hours, max_cost)]
    if ok:
        best = min(ok, key=lambda o: (family_rank.get(o.family, 9), o.estimate.time_hours))
        b = best.estimate
        reason = (
            f"{chosen.name} needs {money}, over {limits}; {best.name} fits and needs "
            f"{b.time_hours:.2f} h, ${b.cost_usd:.2f}"
        )
        return (
            best,
            Choice(None, reason, ""),
            [f"budget: switched from {chosen.name} to {best.name}: {reason}"],
        )
    cheapest = min(fitting, key=lambda o: (o.estimate.cost_usd, o.estimate.time_hours), default=chosen)
    c = cheapest.estimate
    alt = (
        "it is already the cheapest plan that fits"
        if cheapest is chosen or cheapest.name == chosen.name
        else f"the cheapest plan that fits is {cheapest.name} at {c.time_hours:.2f} h, ${c.cost_usd:.2f}"
    )
    share = _share_within(est.time_hours, est.cost_usd, max_hours, max_cost)
    steps = max(1, int(share * chosen.steps)) if chosen.steps else 0
    cut = f"--set training.max_steps={steps}" if steps else "--set training.max_steps=N"
    warning = (
        f"budget: {limits} cannot be met on this hardware: {chosen.name} needs {money}; {alt}. Train on "
        f"about {share:.0%} of the steps ({cut}) or use faster/more GPUs (see alternatives)"
    )
    return chosen, Choice(None, warning, ""), [warning]


def _share_within(time_hours, cost_usd, max_hours, max_cost) -> float:
    shares = [1.0]
    if max_hours is not None and time_hours > 0:
        shares.append(max_hours / time_hours)
    if max_cost is not None and cost_usd > 0:
        shares.append(max_cost / cost_usd)
    return max(0.0, min(shares)) if all(math.isfinite(s) for s in shares) else 0.0
