"""executor/packing.py: packs kept as rows give the same loss as TRL's flat padding-free batch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
trl_sft = pytest.importorskip("trl.trainer.sft_trainer")

from examples.tiny_model import build_tiny_model  # noqa: E402
from executor.packing import PackedRowsCollator  # noqa: E402


def test_rows_layout_matches_flat_padding_free_loss(tmp_path):
    path = build_tiny_model(tmp_path / "m", corpus_texts=["the cat sat on the mat"] * 4, seed=1)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa")
    gen = torch.Generator().manual_seed(0)
    examples = []
    for lengths in ([5, 7, 3], [9, 4], [6]):
        total = sum(lengths)
        ids = torch.randint(0, model.config.vocab_size, (total,), generator=gen).tolist()
        labels = [i if k % 3 else -100 for k, i in enumerate(ids)]  # some prompt tokens masked
        examples.append({"input_ids": ids, "labels": labels, "seq_lengths": lengths})
    flat = trl_sft.DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    rows = PackedRowsCollator(pad_token_id=0)(examples)
    assert "attention_mask" not in rows and rows["input_ids"].shape == (3, 15)
    # The same tokens carry labels in both layouts.
    assert sorted(rows["labels"][rows["labels"] != -100].tolist()) == sorted(
        flat["labels"][flat["labels"] != -100].tolist()
    )
    with torch.no_grad():
        flat_loss = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"],
                          labels=flat["labels"], use_cache=False).loss
        rows_loss = model(**rows, use_cache=False).loss
    # Equal losses: examples are isolated in both (a leak across examples would change the logits).
    assert torch.allclose(flat_loss, rows_loss, atol=1e-5)
