"""`ftplan wizard`: the Textual wizard driven with App.run_test() + pilot, and snapshots of each step.

The wizard runs on the real planner (model catalog, data profiler, rules, render); only the hardware
probe is faked (1x A100-80GB), so the tests behave the same on any machine. The snapshot tests also
pin the estimator to the rules tests' stub and the versions, so they show layout, not coefficients
being tuned (update them with `pytest tests/test_wizard.py --snapshot-update` after a planner text
change).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("textual")

from textual.widgets import Input, OptionList, RadioButton

from ftplan.wizard import WizardAnswers, WizardServices
from ftplan.wizard.app import WizardApp
from ftplan.wizard.runner import MetricsTail
from ftplan.wizard.screens.data import DataScreen
from ftplan.wizard.screens.hardware import HardwareScreen
from ftplan.wizard.screens.model import ModelScreen
from ftplan.wizard.screens.review import ReviewScreen
from ftplan.wizard.screens.run import RunScreen
from ftplan.wizard.screens.settings import SettingsScreen
from ftplan.wizard.screens.strategies import StrategyScreen
from ftplan.wizard.screens.task import TaskScreen
from ftplan.wizard.widgets import memory_bar, memory_parts
from planner.errors import FtplanError
from planner.hardware import Hardware, resolve_gpu

MODEL = "Qwen/Qwen2.5-0.5B"  # a catalog model: no download, no config.json needed
GPU = "A100-80GB"
SIZE = (80, 24)
GIB = 1024**3


# ------------------------------------------------------------------------------------------ fixtures
def fake_probe() -> Hardware:
    """What pynvml would report on a machine with one A100-80GB (2 GiB already in use)."""
    gpu = resolve_gpu(GPU)
    return Hardware(
        gpu=gpu,
        count=1,
        free_memory_bytes=gpu.memory_bytes - 2 * GIB,
        detected=True,
        names=("NVIDIA A100-SXM4-80GB",),
    )


def write_data(folder: Path, rows: int = 240, bad_lines: tuple[int, ...] = ()) -> Path:
    """An alpaca JSONL file (arithmetic), with malformed JSON at the given 1-based lines."""
    lines = [
        json.dumps({"instruction": f"What is {i} + {i % 7}?", "input": "", "output": str(i + i % 7)})
        for i in range(rows)
    ]
    for n in bad_lines:
        lines.insert(n - 1, "{not json")
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A clean current folder holding train.jsonl, so paths shown on screen are short and stable."""
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path)
    return tmp_path


@pytest.fixture
def services() -> WizardServices:
    return WizardServices(probe=fake_probe)


async def settle(pilot) -> None:
    """Let debounce timers fire and planner workers finish, then redraw."""
    await pilot.pause(0.3)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def next_step(pilot) -> None:
    await pilot.press("ctrl+n")
    await settle(pilot)


def error_text(app) -> str:
    return str(app.screen.query_one("#error").render())


def set_value(app, selector: str, value) -> None:
    app.screen.query_one(selector).value = value


async def walk_to_review(
    pilot,
    *,
    gpu: str = GPU,
    goal: str = "balanced",
    max_hours: str = "",
    pick: str | None = None,
    settings: dict[str, str] | None = None,
) -> None:
    """Model, data, task, hardware, strategies, settings: typed / picked as a user would."""
    app = pilot.app
    await settle(pilot)
    assert isinstance(app.screen, ModelScreen)
    await pilot.press(*MODEL)  # typed key by key: live validation and suggestions run
    await settle(pilot)
    assert "494.03 M parameters" in str(app.screen.query_one("#model-info").render())
    await pilot.press("enter")
    await settle(pilot)
    assert isinstance(app.screen, DataScreen)
    set_value(app, "#data", "train.jsonl")
    await settle(pilot)
    assert "alpaca" in str(app.screen.query_one("#profile").render())
    await next_step(pilot)
    assert isinstance(app.screen, TaskScreen)
    for button in app.screen.query(RadioButton):
        if button.name == goal:
            button.value = True
    set_value(app, "#max-hours", max_hours)
    await next_step(pilot)
    assert isinstance(app.screen, HardwareScreen), error_text(app)
    set_value(app, "#gpu", gpu)
    await next_step(pilot)
    assert isinstance(app.screen, StrategyScreen)
    if pick is not None:
        names = app.screen.names
        for _ in range(len(names)):
            if names[app.screen.query_one("#strategies", OptionList).highlighted] == pick:
                break
            await pilot.press("down")
    await next_step(pilot)
    assert isinstance(app.screen, SettingsScreen), error_text(app)
    for field, value in (settings or {}).items():
        index = [d.field for d in app.screen.decisions].index(field)
        set_value(app, f"#f{index}", value)
    await settle(pilot)
    await next_step(pilot)
    assert isinstance(app.screen, ReviewScreen), error_text(app)


def cli_plan(out: Path, overrides: dict[str, str], extra: list[str]) -> int:
    from ftplan.cli import main

    args = [
        "plan",
        "--model",
        MODEL,
        "--data",
        "train.jsonl",
        "--task",
        "sft",
        "--gpu",
        GPU,
        "--gpus",
        "1",
        "--out",
        str(out),
    ]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return main(args + extra)


# ------------------------------------------------------------------------------- walk-through
@pytest.mark.parametrize(
    "goal, max_hours, pick, settings, run_now",
    [
        # the planner's recommendation, untouched; "write and run"
        ("balanced", "", None, {}, True),
        # goal and budget, another strategy, two edited settings
        ("cost", "2", "qlora", {"training.lr": "1e-4", "lora.r": "32"}, False),
    ],
    ids=["recommended-and-run", "cost-qlora-edited"],
)
def test_walkthrough_writes_the_same_plan_as_ftplan_plan(
    workdir, services, goal, max_hours, pick, settings, run_now
):
    script = workdir / "fake_executor.py"
    script.write_text(FAKE_EXECUTOR, encoding="utf-8")
    services = replace(services, run_argv=lambda d: [sys.executable, str(script), str(d), "3", "0"])
    app = WizardApp(services)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await walk_to_review(pilot, goal=goal, max_hours=max_hours, pick=pick, settings=settings)
            shown["plan.yaml"], shown["REPORT.md"] = app.screen.yaml_text, app.screen.report_text
            set_value(app, "#out", "wizard-plan")
            await pilot.press("ctrl+r" if run_now else "ctrl+n")
            await pilot.pause()
            if run_now:
                assert isinstance(app.screen, RunScreen)
                await _wait_until_finished(pilot)
                assert app.screen.losses == [3.0, 1.5, 1.0]
                await pilot.press("ctrl+n")  # Close
                await pilot.pause()

    shown: dict[str, str] = {}
    asyncio.run(drive())
    plan = app.return_value
    assert plan is not None
    for name, text in shown.items():  # the review step shows the files exactly as written
        assert (workdir / "wizard-plan" / name).read_text() == text
    if pick:
        assert plan.strategy.method == pick
    overrides = app.answers.overrides
    for key, value in settings.items():
        assert overrides[key] == value
    assert (plan.goal, plan.task) == (goal, "sft")
    extra = ["--goal", goal] + (["--max-hours", max_hours] if max_hours else [])
    assert cli_plan(workdir / "cli-plan", overrides, extra) == 0
    cli_files = sorted(p.name for p in (workdir / "cli-plan").iterdir())
    assert sorted(p.name for p in (workdir / "wizard-plan").iterdir() if p.name != "output") == cli_files
    for name in cli_files:  # plan.yaml, launch.sh, configs, REPORT.md: byte for byte
        wizard_text = (workdir / "wizard-plan" / name).read_text()
        assert wizard_text == (workdir / "cli-plan" / name).read_text().replace("cli-plan", "wizard-plan"), name


def test_back_and_next_keep_answers(workdir, services):
    app = WizardApp(services, WizardAnswers(model=MODEL, data="train.jsonl"))

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await next_step(pilot)
            await next_step(pilot)
            assert isinstance(app.screen, TaskScreen)
            set_value(app, "#max-hours", "3")
            await next_step(pilot)
            assert isinstance(app.screen, HardwareScreen)
            await pilot.press("escape")  # Back
            await settle(pilot)
            assert isinstance(app.screen, TaskScreen)
            assert app.screen.query_one("#max-hours", Input).value == "3"
            await pilot.click("#back")  # the mouse works too
            await settle(pilot)
            assert isinstance(app.screen, DataScreen)
            assert app.screen.query_one("#data", Input).value == "train.jsonl"
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(app.screen, ModelScreen)
            await pilot.press("escape")  # no step before the first
            await settle(pilot)
            assert isinstance(app.screen, ModelScreen)
            assert app.screen.query_one("#model", Input).value == MODEL
            await pilot.click("#next")
            await settle(pilot)
            assert isinstance(app.screen, DataScreen)

    asyncio.run(drive())
    assert app.answers.max_hours == 3.0


# -------------------------------------------------------------------------------- invalid input
def _answers_at(step: int, workdir: Path, services: WizardServices) -> WizardAnswers:
    """Answers as they stand when step ``step`` opens (built with the real planner functions)."""
    spec = services.load_model_spec(MODEL)
    profile = services.profile_data("train.jsonl", tokenizer_path=spec.tokenizer_path, task="sft")
    hw = services.resolve_hardware(GPU, 1, None, None)
    full = WizardAnswers(
        model=MODEL, spec=spec, data="train.jsonl", profile=profile, task="sft", gpu=GPU, gpus=1, hardware=hw
    )
    keep = {1: {}, 2: {"model", "spec"}, 3: {"model", "spec", "data", "profile"}}.get(step)
    if keep is None:
        return full
    return WizardAnswers(**{k: getattr(full, k) for k in keep})


async def _blocked(pilot, screen_type) -> str:
    await pilot.press("ctrl+n")
    await settle(pilot)
    assert isinstance(pilot.app.screen, screen_type)  # Next did not advance
    message = error_text(pilot.app)
    assert message.startswith("✗ ")
    return message


INVALID = [
    # (step, screen, selector, bad value, words the inline message must contain)
    (1, ModelScreen, "#model", "no-such-org/no-such-model-xyz", "no-such-org/no-such-model-xyz"),
    (1, ModelScreen, "#model", "", "enter a model"),
    (2, DataScreen, "#data", "missing.jsonl", "missing.jsonl"),
    (2, DataScreen, "#data", "bad.jsonl", "line 1"),
    (3, TaskScreen, "#max-hours", "soon", "max hours"),
    (3, TaskScreen, "#max-cost", "-5", "max cost"),
    (3, TaskScreen, "#task", "preference", "preference"),
    (4, HardwareScreen, "#gpus", "0", "GPU count"),
    (4, HardwareScreen, "#price", "free", "price"),
    (6, SettingsScreen, "training.lr", "fast", "training.lr"),
    (6, SettingsScreen, "training.micro_batch", "0", "training.micro_batch"),
    (7, ReviewScreen, "#out", "", "folder"),
    (7, ReviewScreen, "#out", "train.jsonl", "train.jsonl"),  # a file, not a folder
]


@pytest.mark.parametrize(
    "step, screen_type, selector, value, words",
    INVALID,
    ids=[f"{s}-{sel.strip('#')}-{v or 'empty'}" for s, _, sel, v, _ in INVALID],
)
def test_invalid_input_blocks_next(workdir, services, step, screen_type, selector, value, words):
    (workdir / "bad.jsonl").write_text("{oops\n[1, 2]\n", encoding="utf-8")
    app = WizardApp(services, _answers_at(step, workdir, services), start_step=step)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert isinstance(app.screen, screen_type)
            if screen_type is SettingsScreen:
                index = [d.field for d in app.screen.decisions].index(selector)
                set_value(app, f"#f{index}", value)
            else:
                set_value(app, selector, value)
            await settle(pilot)
            message = await _blocked(pilot, screen_type)
            assert words.lower() in message.lower()

    asyncio.run(drive())


def test_planner_failure_on_strategies_is_inline(workdir, services):
    def failing_plan(*args, **kwargs):
        raise FtplanError("no strategy fits 1x A100-80GB", hint="try QLoRA")

    broken = replace(services, make_plan=failing_plan)
    app = WizardApp(broken, _answers_at(5, workdir, services), start_step=5)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            message = await _blocked(pilot, StrategyScreen)
            assert "no strategy fits" in message and "try QLoRA" in message

    asyncio.run(drive())


def test_unexpected_exception_never_crashes(workdir, services):
    def buggy_profile(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    app = WizardApp(
        replace(services, profile_data=buggy_profile), _answers_at(2, workdir, services), start_step=2
    )

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            set_value(app, "#data", "train.jsonl")
            await settle(pilot)
            message = await _blocked(pilot, DataScreen)
            assert "ZeroDivisionError" in message

    asyncio.run(drive())


def test_settings_update_the_estimate_live(workdir, services):
    app = WizardApp(services, _answers_at(6, workdir, services), start_step=6)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            before = str(app.screen.query_one("#live").render())
            fields = [d.field for d in app.screen.decisions]
            micro = app.screen.initial["training.micro_batch"]
            set_value(app, f"#f{fields.index('training.micro_batch')}", str(int(micro) * 4))
            await settle(pilot)
            after = str(app.screen.query_one("#live").render())
            assert after != before  # memory per GPU grew with the micro-batch
            assert "effective batch" in str(app.screen.query_one("#warnings").render())  # inline warning
            assert app.screen.edits == {"training.micro_batch": str(int(micro) * 4)}

    asyncio.run(drive())


NASTY = ["\x00", "../" * 30, "$(touch pwned); rm -rf /", "1e999", "nan", "-0", "[bold]x[/]", "é" * 300, " "]


@pytest.mark.parametrize("step", [1, 2, 3, 4, 6, 7])
def test_no_input_crashes_the_wizard(workdir, services, step):
    """Every text field on the step gets hostile values; Next either advances or shows a message."""
    app = WizardApp(services, _answers_at(step, workdir, services), start_step=step)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            inputs = list(screen.query(Input))[:4]
            for value in NASTY:
                for field in inputs:
                    field.value = value
                await pilot.press("ctrl+n")  # Next validates at once, without waiting for live checks
                await pilot.pause()
                await app.workers.wait_for_complete()
                if app.screen is not screen:  # accepted (e.g. a folder name): fine, stop here
                    return
                assert error_text(app).startswith("✗ ")
            assert not (workdir / "pwned").exists()

    asyncio.run(drive())  # run_test re-raises any exception the app hit


def test_no_gpu_detected_then_pick_one(workdir):
    cpu_only = WizardServices(probe=lambda: Hardware(gpu=None, count=0, free_memory_bytes=0, detected=False))
    app = WizardApp(cpu_only, _answers_at(4, workdir, cpu_only), start_step=4)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert "no GPU" in str(app.screen.query_one("#detected").render())
            set_value(app, "#gpu", "RTX-4090")
            set_value(app, "#gpus", "2")
            await settle(pilot)
            assert "2 x RTX-4090" in str(app.screen.query_one("#hw-info").render())
            await next_step(pilot)
            assert isinstance(app.screen, StrategyScreen)

    asyncio.run(drive())
    assert (app.answers.gpu, app.answers.gpus, app.answers.hardware.count) == ("RTX-4090", 2, 2)


# --------------------------------------------------------------------------------------- run step
FAKE_EXECUTOR = textwrap.dedent("""
    import json, signal, sys, time
    from pathlib import Path
    out = Path(sys.argv[1]) / "output"
    out.mkdir(parents=True, exist_ok=True)
    stop = []
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    steps = int(sys.argv[2])
    for step in range(1, steps + 1):
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps({"step": step, "loss": 3.0 / step, "tokens_per_second": 1000.0,
                                 "peak_rss_gb": 1.5}) + "\\n")
        print(f"step {step}", flush=True)
        if stop:
            print("checkpoint saved at step", step, flush=True)
            sys.exit(0)
        time.sleep(float(sys.argv[3]))
    print("done", flush=True)
""")


async def _wait_until_finished(pilot, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.1)):
        await pilot.pause(0.1)
        if pilot.app.screen.exit_code is not None:
            return
    raise AssertionError("the run did not finish")


def _run_app(workdir: Path, services: WizardServices, steps: int, delay: float) -> WizardApp:
    """A wizard opened on the Run step of a written plan, with a stand-in executor script."""
    script = workdir / "fake_executor.py"
    script.write_text(FAKE_EXECUTOR, encoding="utf-8")
    answers = _answers_at(7, workdir, services)
    result = services.make_plan(
        answers.request(), hardware=answers.hardware, profile=answers.profile, spec=answers.spec
    )
    services.write_plan_folder(result, "plan")
    argv = functools.partial(lambda d: [sys.executable, str(script), str(d), str(steps), str(delay)])
    answers = replace(answers, out_dir="plan", result=result, run_now=True)
    return WizardApp(replace(services, run_argv=argv), answers, start_step=8)


def test_run_step_shows_progress_and_finishes(workdir, services):
    app = _run_app(workdir, services, steps=5, delay=0.0)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await _wait_until_finished(pilot)
            assert screen.exit_code == 0
            assert screen.losses == [3.0, 1.5, 1.0, 0.75, 0.6]
            assert "step 5" in str(screen.query_one("#run-status").render()) or "finished" in str(
                screen.query_one("#run-status").render()
            )
            assert "1.50 GiB" in str(screen.query_one("#memory").render())
            await pilot.press("ctrl+n")  # Close
            await pilot.pause()

    asyncio.run(drive())
    assert app.return_value is not None


def test_run_step_stop_sends_sigint(workdir, services):
    app = _run_app(workdir, services, steps=10_000, delay=0.05)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            for _ in range(100):
                await pilot.pause(0.1)
                if screen.losses:
                    break
            await pilot.press("ctrl+n")  # still running: Next is blocked
            assert isinstance(app.screen, RunScreen)
            await pilot.click("#stop")
            await _wait_until_finished(pilot)
            assert screen.exit_code == 0 and screen.process.stop_requested
            assert any("checkpoint saved" in line for line in screen.process.lines)
            assert "stopped" in str(screen.query_one("#run-status").render())
            assert len(screen.losses) < 10_000

    asyncio.run(drive())


# ------------------------------------------------------------------------------- small pieces
def test_metrics_tail_reads_only_complete_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read_new() == []  # not there yet
    path.write_text('{"step": 1}\n{"step": 2', encoding="utf-8")
    assert tail.read_new() == [{"step": 1}]
    with path.open("a") as fh:
        fh.write('}\nnot json\n{"step": 3}\n')
    assert tail.read_new() == [{"step": 2}, {"step": 3}]


def test_memory_bar_adds_up_and_marks_overflow(services):
    from planner.memory import MemoryBreakdown

    mem = MemoryBreakdown(
        weights=40 * GIB,
        gradients=20 * GIB,
        optimizer=30 * GIB,
        activations=10 * GIB,
        temporary=5 * GIB,
        peak_allocated=105 * GIB,
        overhead=3 * GIB,
        total=108 * GIB,
    )
    assert sum(b for _, b in memory_parts(mem)) == mem.total
    bar = memory_bar(mem, capacity=80 * GIB, width=54)
    assert len(bar.plain) == 54 and set(bar.plain) == {"█"}
    red_cells = sum(span.end - span.start for span in bar.spans if "on red" in str(span.style))
    assert red_cells == 54 - round(54 * 80 / 108)


# ------------------------------------------------------------------------------------- snapshots
SNAPSHOT_MODELS = [
    "HuggingFaceTB/SmolLM2-135M",
    "Qwen/Qwen2.5-0.5B",
    "Qwen/Qwen2.5-1.5B",
    "meta-llama/Llama-3.1-8B",
]


def snapshot_services() -> WizardServices:
    """Real planner, but the rules tests' stub estimator, fixed versions and the temporary folder
    shown as /work: snapshots show the layout, not coefficients being tuned or tmp paths."""
    from rules_helpers import FIXED_VERSIONS, stub_estimate

    from planner.render import render_plan_yaml, render_report
    from planner.rules import make_plan

    def stable(render):
        return lambda *a, **k: render(*a, **k).replace(str(Path.cwd()), "/work")

    plan = functools.partial(make_plan, estimator=stub_estimate, versions=FIXED_VERSIONS)
    return WizardServices(probe=fake_probe, make_plan=plan, model_names=lambda: SNAPSHOT_MODELS,
                          render_plan_yaml=stable(render_plan_yaml), render_report=stable(render_report))


@pytest.mark.parametrize("step", [1, 2, 3, 4, 5, 6, 7])
def test_snapshot_step(workdir, snap_compare, step):
    services = snapshot_services()
    answers = _answers_at(step, workdir, services)
    if step == 1:
        answers = WizardAnswers(model="qwen2.5-0.5b")  # a short name: resolved, matches listed
    if step == 2:
        (workdir / "train.jsonl").unlink()
        write_data(workdir, rows=60, bad_lines=(3, 17))
        answers = replace(answers, data="train.jsonl")
    app = WizardApp(services, answers, start_step=step)
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_snapshot_run_step(workdir, snap_compare):
    app = _run_app(workdir, snapshot_services(), steps=6, delay=0.0)

    async def finished(pilot):
        await _wait_until_finished(pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=finished)


# ------------------------------------------------------------------------ completion and the CLI
def test_model_suggestions_and_catalog_matches(workdir):
    services = replace(snapshot_services(), make_plan=None)
    app = WizardApp(services)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press(*"Qwen/Qwen2.5-0.")
            await settle(pilot)
            await pilot.press("right")  # accept the inline suggestion
            assert app.screen.query_one("#model", Input).value == "Qwen/Qwen2.5-0.5B"
            app.screen.query_one("#model", Input).value = "llama"
            await settle(pilot)
            await pilot.press("down")  # into the catalog matches
            matches = app.screen.query_one("#matches", OptionList)
            assert matches.has_focus and matches.option_count == 1
            await pilot.press("enter")
            await settle(pilot)
            assert app.screen.query_one("#model", Input).value == "meta-llama/Llama-3.1-8B"
            assert "8.03 B parameters" in str(app.screen.query_one("#model-info").render())

    asyncio.run(drive())


def test_data_path_completion_and_invalid_rows(workdir, services):
    (workdir / "sub").mkdir()
    write_data(workdir / "sub", rows=30, bad_lines=(3, 17)).rename(workdir / "sub" / "rows.jsonl")
    (workdir / "sub" / "chats.jsonl").write_text("{}\n", encoding="utf-8")
    app = WizardApp(services, _answers_at(2, workdir, services), start_step=2)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press(*"tra", "right")
            assert app.screen.query_one("#data", Input).value == "train.jsonl"
            app.screen.query_one("#data", Input).value = ""
            await pilot.press(*"su", "right", "c", "right")
            assert app.screen.query_one("#data", Input).value == "sub/chats.jsonl"
            app.screen.query_one("#data", Input).value = "sub/rows.jsonl"
            await settle(pilot)
            profile = str(app.screen.query_one("#profile").render())
            assert "32 rows (30 valid)" in profile and "line 3:" in profile and "line 17:" in profile

    asyncio.run(drive())


def test_data_step_column_mapping_reprofiles_and_reaches_the_plan(workdir, services):
    """The data step reads the file through the same data path as `ftplan plan`: an unmapped label column is
    refused with the mapping that works; typing the mapping re-profiles and the answer carries it."""
    rows = [{"utterance": f"refund number {i} please", "intent": "refund" if i % 2 else "other"} for i in range(30)]
    (workdir / "intents.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    app = WizardApp(services, _answers_at(2, workdir, services), start_step=2)

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            set_value(app, "#data", "intents.jsonl")
            await settle(pilot)
            message = await _blocked(pilot, DataScreen)
            assert "columns found: utterance, intent" in message and "--columns" in message
            set_value(app, "#columns", "text=utterance,label=intent")
            await settle(pilot)
            profile = str(app.screen.query_one("#profile").render())
            assert "classification records" in profile and "30 rows (30 valid)" in profile
            await next_step(pilot)
            assert app.answers.columns == {"text": "utterance", "label": "intent"}
            assert app.answers.request().columns == {"text": "utterance", "label": "intent"}

    asyncio.run(drive())


def test_cli_wizard_prefills_answers(workdir, monkeypatch):
    from ftplan.cli import main

    seen = {}

    def fake_run(self):
        seen["answers"] = self.answers

    monkeypatch.setattr(WizardApp, "run", fake_run)
    assert main(["wizard", "--model", MODEL, "--data", "train.jsonl", "--gpu", "a100-80gb", "--gpus", "2",
                 "--out", "plans/x"]) == 0
    a = seen["answers"]
    assert (a.model, a.data, a.gpu, a.gpus, a.out_dir) == (MODEL, "train.jsonl", GPU, 2, "plans/x")
    assert a.hardware.count == 2 and a.hardware.gpu.name == GPU


def test_cli_wizard_bad_gpu_is_one_line(capsys):
    from ftplan.cli import main

    assert main(["wizard", "--gpu", "no-such-gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ftplan: error:") and "no-such-gpu" in err and "\n" not in err


def test_changing_an_earlier_answer_drops_later_picks():
    a = WizardAnswers(model=MODEL, gpu=GPU, gpus=1, strategy="qlora",
                      strategy_overrides={"strategy.method": "qlora"}, setting_overrides={"training.lr": "1e-4"})
    same = a.merged({"model": MODEL, "gpu": GPU, "gpus": 1})
    assert same.overrides == {"strategy.method": "qlora", "training.lr": "1e-4"}
    for change in ({"model": "Qwen/Qwen2.5-1.5B"}, {"gpus": 2}, {"task": "chat"}, {"max_hours": 3.0}):
        moved = a.merged(change)
        assert moved.overrides == {} and moved.strategy == "", change
    assert a.request().overrides == {"strategy.method": "qlora", "training.lr": "1e-4"}
