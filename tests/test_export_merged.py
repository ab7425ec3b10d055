"""`ftplan export PLAN_DIR --merged OUT` (executor.merge): tiny plans trained end to end, then exported.

Checked on what was written: the folder loads with AutoModelForCausalLM alone, in shards, with the
tokenizer and chat template; its logits match the adapter model's (recomputed here with peft, not taken
from the export's own report); the model card's front matter parses as YAML; no token from the
environment and no local path reaches any file; bad input is one line and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from executor_helpers import make_plan, plan_folder, tiny_model

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

# The plan's estimate, so the card has an estimate-vs-measured table (values of the order the run measures).
ESTIMATE = {"steps": 2, "tokens": 200, "time_hours": 0.001, "tokens_per_second": 150.0, "cpu_bytes": 2**30}
FAKE_TOKENS = {
    "HF_TOKEN": "hf_FAKEfakeFAKEfakeFAKEfake0123456789",
    "HUGGING_FACE_HUB_TOKEN": "hf_OTHERfakeOTHERfake0123456789",
    "WANDB_API_KEY": "wandb-fake-key-0123456789abcdef",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("models"))


def _train(root: Path, model_dir: Path, method: str, precision: str) -> Path:
    from executor.run import run_plan

    plan = make_plan(
        root,
        model=model_dir,
        method=method,
        strategy={"method": method, "precision": precision},
        training={"max_steps": 2},
        evaluation={"eval_steps": 2, "max_eval_samples": 2},
        checkpointing={"save_steps": 2},
        estimate=ESTIMATE,
    )
    folder = plan_folder(root, plan)
    assert run_plan(folder, log=lambda *_: None).status == "completed"
    return folder


@pytest.fixture(scope="module")
def lora_plan(tmp_path_factory, model_dir) -> Path:
    return _train(tmp_path_factory.mktemp("lora"), model_dir, "lora", "fp32")


def _front_matter(readme: Path) -> tuple[dict, str]:
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _probe(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "7+8"}], tokenize=False,
                                         add_generation_prompt=True)
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def _all_text(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


def test_lora_export_loads_alone_matches_the_adapter_and_has_a_card(lora_plan, model_dir, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftplan.cli import main

    out = tmp_path / "merged"
    assert main(["export", str(lora_plan), "--merged", str(out), "--max-shard-size", "100KB"]) == 0
    printed = capsys.readouterr().out
    assert "max |diff|" in printed and str(out) in printed

    # sharded safetensors + index, no adapter files, no half-written sibling left behind
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    assert not (out / "adapter_config.json").exists() and not list(tmp_path.glob(".merged.partial-*"))

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert merged.dtype == torch.float32  # the plan's precision
    assert not any("lora" in n for n, _ in merged.named_parameters())
    final = lora_plan / "output" / "final"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and tok.chat_template == AutoTokenizer.from_pretrained(final).chat_template
    ids = _probe(tok)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), final).eval()
    with adapted.disable_adapter():
        base = _logits(adapted, ids)
    tuned = _logits(adapted, ids)
    assert (tuned - base).abs().max() > 1e-3  # the adapter changed the model: the comparison means something
    torch.testing.assert_close(_logits(merged, ids), tuned, atol=1e-4, rtol=1e-4)

    meta, body = _front_matter(out / "README.md")
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["datasets"] == ["alpaca.jsonl"] and meta["license"] == "other"
    assert "base_model" not in meta  # a local folder is not a hub id; named in the text instead
    assert "local folder `tiny-llama`" in body
    assert {"ftplan", "lora", "sft"} <= set(meta["tags"])
    summary = json.loads((lora_plan / "output" / "run_summary.json").read_text())
    assert meta["ftplan"]["metrics"]["loss"] == {"base": summary["base"]["loss"], "tuned": summary["tuned"]["loss"]}
    assert meta["ftplan"]["settings"]["lora"]["r"] == 4 and meta["ftplan"]["settings"]["training"]["lr"] == 0.01
    rows = {c["quantity"]: c for c in meta["ftplan"]["estimate_vs_measured"]}
    assert rows["optimizer steps"]["estimate"] == 2 and rows["optimizer steps"]["measured"] == summary["global_step"]
    check = meta["ftplan"]["merge_check"]
    assert 0 <= check["max_abs_logit_diff"] <= check["tolerance"]
    for heading in ("## Training settings", "## Base vs fine-tuned", "## Planner estimate vs measured"):
        assert heading in body
    assert "| training.lr | 0.01 |" in body and "| optimizer steps | steps | 2 |" in body

    text = _all_text(out)
    assert str(tmp_path.parent) not in text and str(model_dir) not in text  # no local path published

    # exporting again into the same folder is refused, nothing touched
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["export", str(lora_plan), "--merged", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_qlora_merges_onto_the_dequantized_nf4_base(tmp_path, model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from executor.merge import export_merged
    from executor.model import load_base_model
    from planner.plan import load_plan

    folder = _train(tmp_path / "q", model_dir, "qlora", "bf16")
    out = tmp_path / "merged"
    result = export_merged(folder, out, max_shard_size="100KB", log=lambda *_: None)
    assert result.dtype == "bf16" and result.shards > 1 and result.max_abs_diff <= result.tolerance

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert merged.dtype == torch.bfloat16
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    final = folder / "output" / "final"
    tok = AutoTokenizer.from_pretrained(out)
    ids = _probe(tok)
    # the adapter model as trained: NF4 base (the plan's BitsAndBytesConfig) + adapter
    nf4 = load_base_model(load_plan(folder), tok)
    assert type(nf4.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    reference = _logits(PeftModel.from_pretrained(nf4, final).eval(), ids)
    got = _logits(merged, ids)
    scale = max(1.0, reference.abs().max().item())
    assert (got - reference).abs().max().item() <= 5e-2 * scale
    # merging into the original bf16 weights instead (which the adapter never saw) lands further away
    naive = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16), final
    ).merge_and_unload()
    assert (got - reference).abs().max() < (_logits(naive, ids) - reference).abs().max()

    meta, body = _front_matter(out / "README.md")
    assert meta["ftplan"]["method"] == "qlora" and meta["ftplan"]["dtype"] == "bf16"
    assert "dequantized" in body


def test_full_fine_tune_is_resaved_with_the_card(tmp_path, model_dir):
    from transformers import AutoModelForCausalLM

    from executor.merge import export_merged

    folder = _train(tmp_path / "full", model_dir, "full", "fp32")
    out = tmp_path / "merged"
    result = export_merged(folder, out, max_shard_size="200KB", log=lambda *_: None)
    assert result.max_abs_diff == 0.0 and result.shards > 1
    final = AutoModelForCausalLM.from_pretrained(folder / "output" / "final").eval()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(_logits(merged, ids), _logits(final, ids), atol=0, rtol=0)
    meta, _ = _front_matter(out / "README.md")
    assert "full" in meta["tags"] and "merged" not in meta["tags"]


def test_added_tokens_and_saved_modules_survive_the_merge(tmp_path, model_dir):
    """model.added_tokens grow the vocabulary; lora.modules_to_save trains whole embedding/head copies."""
    import dataclasses

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from executor.merge import export_merged
    from executor.run import run_plan

    plan = make_plan(tmp_path, model=model_dir, training={"max_steps": 2}, evaluation={"eval_steps": 2,
                     "max_eval_samples": 2}, checkpointing={"save_steps": 2},
                     lora={"r": 4, "alpha": 8, "dropout": 0.0, "modules_to_save": ["embed_tokens", "lm_head"]})
    plan = dataclasses.replace(plan, model=dataclasses.replace(plan.model, added_tokens=["<tool>", "</tool>"]))
    folder = plan_folder(tmp_path, plan)
    assert run_plan(folder, log=lambda *_: None).status == "completed"
    out = tmp_path / "merged"
    export_merged(folder, out, log=lambda *_: None)
    tok = AutoTokenizer.from_pretrained(out)
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert len(tok) == merged.get_input_embeddings().weight.shape[0] == 302
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    base.resize_token_embeddings(len(tok))
    adapted = PeftModel.from_pretrained(base, folder / "output" / "final").eval()
    ids = torch.tensor([tok("<tool> 7+8 </tool>", add_special_tokens=False)["input_ids"]])
    assert ids.max() >= 300  # the new tokens are in the probe
    torch.testing.assert_close(_logits(merged, ids), _logits(adapted, ids), atol=1e-4, rtol=1e-4)


class FakeHfApi:
    """Stands in for huggingface_hub.HfApi: records the calls, no network."""

    calls: list = []
    fail_with: str | None = None

    def __init__(self, token=None, **kw):
        FakeHfApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kw):
        FakeHfApi.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, repo_id, folder_path, **kw):
        if FakeHfApi.fail_with:
            raise RuntimeError(FakeHfApi.fail_with)
        names = sorted(p.name for p in Path(folder_path).iterdir())
        FakeHfApi.calls.append(("upload_folder", repo_id, folder_path, names))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeHfApi.calls, FakeHfApi.fail_with = [], None
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    for k, v in FAKE_TOKENS.items():
        monkeypatch.setenv(k, v)
    return FakeHfApi


def test_push_to_hub_reads_the_token_from_the_environment_and_writes_it_nowhere(
    lora_plan, tmp_path, fake_hub, capsys
):
    from ftplan.cli import main

    out = tmp_path / "pushed"
    assert main(["export", str(lora_plan), "--merged", str(out), "--push-to-hub", "me/tiny-sft"]) == 0
    printed = capsys.readouterr()
    token = FAKE_TOKENS["HF_TOKEN"]
    assert fake_hub.calls[0] == ("init", token)
    assert fake_hub.calls[1][:2] == ("create_repo", "me/tiny-sft") and fake_hub.calls[1][2]["private"] is True
    _, repo, folder, names = fake_hub.calls[2]
    assert repo == "me/tiny-sft" and Path(folder) == out and "README.md" in names and "config.json" in names
    assert "https://huggingface.co/me/tiny-sft" in printed.out
    assert 'from_pretrained("me/tiny-sft")' in (out / "README.md").read_text()
    written = _all_text(out) + _all_text(lora_plan) + printed.out + printed.err
    for secret in FAKE_TOKENS.values():
        assert secret not in written

    # an upload failure whose text carries the token: one line, exit 2, the token scrubbed, the model kept
    fake_hub.fail_with = f"401 Unauthorized for token {token}"
    out2 = tmp_path / "pushed2"
    assert main(["export", str(lora_plan), "--merged", str(out2), "--push-to-hub", "me/tiny-sft"]) == 2
    err = capsys.readouterr().err  # progress bars of the loading, then one error line
    assert token not in err
    [line] = [x for x in err.splitlines() if x.startswith("ftplan: error:")]
    assert "upload failed" in line and "401 Unauthorized for token ***" in line
    assert (out2 / "config.json").is_file()


def _fake_trained(tmp_path: Path, model_dir: Path, **kw) -> Path:
    """A plan folder whose final/ carries the completion marker (enough for the checks before merging)."""
    from executor.paths import FINAL_MARKER

    folder = plan_folder(tmp_path, make_plan(tmp_path, model=model_dir, **kw))
    (folder / "output" / "final").mkdir(parents=True)
    (folder / "output" / "final" / FINAL_MARKER).write_text("{}")
    return folder


def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, model_dir, monkeypatch, capsys):
    from ftplan.cli import main

    def run(*args) -> str:
        assert main(["export", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ftplan: error:") and err.count("\n") == 1 and "Traceback" not in err
        return err

    untrained = plan_folder(tmp_path / "u", make_plan(tmp_path / "u", model=model_dir))
    assert "not trained yet" in run(untrained, "--merged", tmp_path / "o1")
    (untrained / "output" / "final").mkdir(parents=True)
    assert "incomplete" in run(untrained, "--merged", tmp_path / "o1")
    assert not (tmp_path / "o1").exists()

    prompt = _fake_trained(tmp_path / "p", model_dir, method="prompt", strategy={"method": "prompt"})
    assert "nothing to merge" in run(prompt, "--merged", tmp_path / "o2")
    head = _fake_trained(tmp_path / "h", model_dir, task="classification", fmt="classification",
                         training={"classification_mode": "head"})
    assert "classification" in run(head, "--merged", tmp_path / "o3")

    lora = _fake_trained(tmp_path / "l", model_dir)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert "HF_TOKEN is not set" in run(lora, "--merged", tmp_path / "o4", "--push-to-hub", "me/x")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKENS["HF_TOKEN"])
    assert "not a repo id" in run(lora, "--merged", tmp_path / "o4", "--push-to-hub", "not a repo")
    assert "not a size" in run(lora, "--merged", tmp_path / "o4", "--max-shard-size", "lots")
    assert "goes with --merged" in run(lora, "--to", "axolotl", "--max-shard-size", "1GB")
    (tmp_path / "o5").write_text("x")
    assert "is a file" in run(lora, "--merged", tmp_path / "o5")
    assert not list(tmp_path.glob("o4*")) and not list(tmp_path.glob(".o*"))


def test_card_names_a_hub_base_model_and_reuses_a_local_base_license(tmp_path, model_dir):
    import dataclasses
    import shutil

    from executor.merge import MergeResult, card_text
    from executor.paths import RunPaths

    result = MergeResult(out=str(tmp_path / "m"), method="lora", dtype="bf16", shards=2, bytes=10,
                         probe_tokens=5, max_abs_diff=0.001, tolerance=0.05)
    plan = make_plan(tmp_path, model=model_dir)
    paths = RunPaths.of(tmp_path, plan.output_dir)  # no run_summary.json: the tables say so
    hub = dataclasses.replace(plan, model=dataclasses.replace(plan.model, name_or_path="Qwen/Qwen2.5-0.5B"))
    meta, body = _front_matter_of(card_text(hub, paths, result, "me/tuned"))
    assert meta["base_model"] == "Qwen/Qwen2.5-0.5B" and meta["license"] == "other"
    assert "No evaluation was recorded" in body and "no estimate to compare with" in body

    local = tmp_path / "base-with-card"
    shutil.copytree(model_dir, local)
    (local / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    licensed = dataclasses.replace(plan, model=dataclasses.replace(plan.model, name_or_path=str(local)))
    meta, body = _front_matter_of(card_text(licensed, paths, result))
    assert meta["license"] == "apache-2.0" and "license_name" not in meta and "base_model" not in meta
    assert str(tmp_path) not in card_text(licensed, paths, result)


def _front_matter_of(text: str) -> tuple[dict, str]:
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body
