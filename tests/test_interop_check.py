"""benchmarks/interop_check.py (issue 12, item 4): the configs ``ftplan export --to`` writes, loaded by axolotl
0.19.0 and LLaMA-Factory 0.9.5 themselves, each in its own virtualenv.

The trainer tests need those venvs (``$FTPLAN_INTEROP_VENVS``, default ``../interop-venvs`` beside the checkout,
made by ``python benchmarks/interop_check.py --setup``: ~10 minutes, ~11 GB) and skip without them; CI has none,
so there the mapping tables are covered by tests/test_interop.py and only the script's refusal to run without
its venvs is tested here. The control configs below are written in each tool's documented keys (axolotl's
config reference, LLaMA-Factory's examples/README), not copied from their repositories.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "interop_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("ftplan_interop_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ic = _load()
HAVE_VENVS = not ic.missing_venvs(ic.venvs_root())
needs_venvs = pytest.mark.skipif(not HAVE_VENVS, reason=f"no trainer venvs under {ic.venvs_root()} "
                                                        "(python benchmarks/interop_check.py --setup)")


def _script(*args: str, venvs: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if venvs is not None:
        env["FTPLAN_INTEROP_VENVS"] = str(venvs)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=1800)


def test_without_the_venvs_it_says_how_to_make_them(tmp_path):
    out = tmp_path / "result.json"
    proc = _script("--json", str(out), venvs=tmp_path / "none")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "axolotl==0.19.0" in lines[0] and "llamafactory==0.9.5" in lines[0]
    assert "--setup" in lines[0] and str(tmp_path / "none") in lines[0]
    assert _script("--allow-missing", "--json", str(out), venvs=tmp_path / "none").returncode == 0
    assert not out.exists()


@pytest.mark.slow
@needs_venvs
def test_exported_configs_load_in_both_trainers_as_planned(tmp_path):
    out = tmp_path / "result.json"
    proc = _script("--json", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    cases = {(c["plan"], c["tool"]): c for c in result["cases"]}
    assert set(cases) == {(case.name, tool) for case in ic.CASES for tool in ic.TOOLS}
    for key, case in cases.items():
        assert case["trainer"]["accepted"], (key, case["trainer"].get("error"))
        assert case["checks"] and all(c["ok"] for c in case["checks"]), (key, case["checks"])
        trip = case["round_trip"]
        assert trip["status"] in ("equal", "differs, as the header says"), (key, trip)
        if trip["status"] == "equal":
            assert abs(trip["config_total"] - trip["plan_total"]) <= ic.TOLERANCE * trip["plan_total"]
    # what each trainer derived itself, not what the file says: axolotl's batch size, the ZeRO stage as parsed
    z3 = cases[("full-zero3", "axolotl")]["trainer"]["values"]
    assert z3["deepspeed_stage"] == 3 and z3["world_size"] == 8
    assert z3["batch_size"] == z3["micro_batch_size"] * z3["gradient_accumulation_steps"] * 8
    assert cases[("full-zero3", "llama-factory")]["trainer"]["values"]["deepspeed_stage"] == 3
    assert cases[("qlora", "llama-factory")]["trainer"]["values"]["quantization_bit"] == 4
    assert cases[("dpo", "axolotl")]["trainer"]["values"]["rl"] == "dpo"


def _controls(tmp_path: Path) -> dict[str, dict]:
    """One valid config per tool on a local model folder (config.json only) and a data file."""
    from planner.model_spec import catalog

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(catalog()["Qwen/Qwen2.5-0.5B"]["config"]))
    (tmp_path / "data.jsonl").write_text(json.dumps({"instruction": "Add 2 and 3.", "input": "", "output": "5"}))
    (tmp_path / "dataset_info.json").write_text(json.dumps({"demo": {"file_name": str(tmp_path / "data.jsonl")}}))
    return {
        "axolotl": {"base_model": str(model), "adapter": "lora", "lora_r": 8, "lora_alpha": 16,
                    "lora_target_linear": True, "sequence_len": 512, "micro_batch_size": 2,
                    "gradient_accumulation_steps": 4, "num_epochs": 1, "learning_rate": 2e-4,
                    "optimizer": "adamw_torch", "bf16": True, "output_dir": str(tmp_path / "out"),
                    "datasets": [{"path": str(tmp_path / "data.jsonl"), "type": "alpaca"}]},
        "llama-factory": {"model_name_or_path": str(model), "stage": "sft", "do_train": True,
                          "finetuning_type": "lora", "lora_target": "all", "lora_rank": 8, "dataset": "demo",
                          "dataset_dir": str(tmp_path), "cutoff_len": 512, "per_device_train_batch_size": 2,
                          "gradient_accumulation_steps": 4, "learning_rate": 1e-4, "num_train_epochs": 1.0,
                          "bf16": True, "output_dir": str(tmp_path / "out")},
    }


# (tool, change, what the trainer says): a wrong type, and a cross-check of the trainer's own
BROKEN = [
    ("axolotl", {"micro_batch_size": "two"}, "micro_batch_size\n  Input should be a valid integer"),
    ("axolotl", {"adapter": "qlora"}, "Require cfg.load_in_4bit to be True for qlora"),
    ("llama-factory", {"lora_rnak": 8}, "Some keys are not used by the HfArgumentParser: ['lora_rnak']"),
    ("llama-factory", {"finetuning_type": "full", "quantization_bit": 4},
     "Quantization is only compatible with the LoRA"),
]


@pytest.mark.slow
@needs_venvs
@pytest.mark.parametrize("tool,change,said", BROKEN, ids=[f"{t}-{next(iter(c))}" for t, c, _ in BROKEN])
def test_the_harness_accepts_what_the_trainer_accepts_and_refuses_the_rest(tmp_path, tool, change, said):
    good = _controls(tmp_path)[tool]
    env = ic.validator_env(tmp_path)
    gpu = ic.gpu_of("A100-80GB", 1)
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(good))
    ok = ic.run_validator(ic.TOOLS[tool], ic.venvs_root(), path, gpu, env, tmp_path)
    assert ok["accepted"], ok.get("error")
    batch = "micro_batch_size" if tool == "axolotl" else "per_device_train_batch_size"
    assert ok["values"][batch] == 2
    path.write_text(yaml.safe_dump({**good, **change}))
    bad = ic.run_validator(ic.TOOLS[tool], ic.venvs_root(), path, gpu, env, tmp_path)
    assert not bad["accepted"] and said in bad["error"], bad
