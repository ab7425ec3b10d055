"""The tiny local model builder: reloads like a Hub checkpoint, has a working chat template, deterministic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from examples.tiny_model import ARCHS, build_tiny_model, main
from planner.errors import FtplanError

CORPUS = [f"What is {a} + {b}? {a + b}" for a in range(0, 60, 7) for b in range(3, 50, 5)]


def _digest(folder: Path, name: str) -> str:
    return hashlib.sha256((folder / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_reloads_with_matching_vocab_and_runs(tmp_path, arch):
    out = build_tiny_model(tmp_path / arch, arch=arch, corpus_texts=CORPUS)
    assert (out / "model.safetensors").is_file()
    model = transformers.AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == arch
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    batch = tok(["What is 1 + 2? 3", "hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape
    assert logits.shape[-1] == len(tok)
    assert torch.isfinite(logits).all()


def test_chat_template_renders_chatml_and_masks_only_the_assistant_reply(tmp_path):
    out = build_tiny_model(tmp_path / "m", corpus_texts=CORPUS)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 23 + 58?"},
        {"role": "assistant", "content": "81"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_start|>assistant\n81<|im_end|>\n")
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    enc = tok.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    # The reply and its closing EOS are trained on; nothing else is.
    assert tok.decode(masked) == "81<|im_end|>"
    assert masked[-1] == tok.eos_token_id


def test_digits_are_single_tokens_and_text_roundtrips(tmp_path):
    out = build_tiny_model(tmp_path / "m", corpus_texts=CORPUS)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = tok("1234 + 98765", add_special_tokens=False)["input_ids"]
    assert [t for t in tok.convert_ids_to_tokens(ids) if t.isdigit()] == list("123498765")
    sample = "Ünïcode ✓ and emoji 🙂 survive byte-level BPE"
    assert tok.decode(tok(sample)["input_ids"]) == sample


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    a = build_tiny_model(tmp_path / "a", corpus_texts=CORPUS, seed=3)
    b = build_tiny_model(tmp_path / "b", corpus_texts=CORPUS, seed=3)
    c = build_tiny_model(tmp_path / "c", corpus_texts=CORPUS, seed=4)
    assert _digest(a, "tokenizer.json") == _digest(b, "tokenizer.json")
    assert _digest(a, "model.safetensors") == _digest(b, "model.safetensors")
    assert _digest(a, "model.safetensors") != _digest(c, "model.safetensors")


def test_sizes_are_honoured(tmp_path):
    out = build_tiny_model(
        tmp_path / "m", corpus_texts=CORPUS, hidden_size=32, num_layers=3, num_heads=2, num_kv_heads=1
    )
    cfg = transformers.AutoConfig.from_pretrained(out)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        32,
        3,
        2,
        1,
    )


def test_bad_arch_and_bad_heads_are_one_line_errors(tmp_path):
    with pytest.raises(FtplanError, match="unknown tiny-model arch"):
        build_tiny_model(tmp_path / "x", arch="nope", corpus_texts=CORPUS)
    with pytest.raises(FtplanError, match="num_heads"):
        build_tiny_model(tmp_path / "y", corpus_texts=CORPUS, num_heads=3)


def test_cli_reads_a_jsonl_corpus(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        '{"messages": [{"role": "user", "content": "zebra zebra zebra"}, '
        '{"role": "assistant", "content": "quagga quagga"}]}\n' * 5,
        encoding="utf-8",
    )
    assert main([str(tmp_path / "m"), "--arch", "qwen2", "--corpus", str(corpus)]) == 0
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "m")
    # The BPE learned merges from the corpus: a frequent word becomes few tokens.
    assert len(tok.tokenize(" zebra")) <= 2
    assert main([str(tmp_path / "n"), "--corpus", str(tmp_path / "missing.jsonl")]) == 2
