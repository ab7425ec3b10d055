"""Packed batches as rows, for attention kernels without variable-length support (SDPA, eager).

TRL's best-fit-decreasing packing ("bfd") turns on padding-free batching, whose collator concatenates the
whole micro-batch into ONE row of micro_batch x seq_len tokens. That is ideal for flash-attention's varlen
kernels (no cross-example work at all), but SDPA and eager attention compute the dense (row x row)
score matrix and mask it, so the flat row costs attention quadratic in micro_batch x seq_len. Measured
on CPU (benchmarks/throughput.py, layout probe, 4M-parameter Llama, seq_len 512, micro-batch 8): padded
batches 1,924 real tokens/s, one flat row 1,518, the same packs kept as 8 rows 4,149.

This collator keeps each pack as its own row, with position_ids restarting at every example and no
attention_mask: transformers' masking_utils (``find_packed_sequence_indices``) then builds a
block-diagonal causal mask per row, so examples never attend to each other, exactly as in the flat
layout. The first token of every example gets no label (it must not be predicted from the previous
example), as in TRL's padding-free collator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# attn_implementation values with variable-length kernels: they use the flat layout (TRL's own collator).
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "flash_attention_4", "kernels-community/flash-attn")


@dataclass
class PackedRowsCollator:
    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids = [torch.as_tensor(ex["input_ids"]) for ex in examples]
        labels = [torch.as_tensor(ex.get("labels", ex["input_ids"])) for ex in examples]
        positions = [
            torch.cat([torch.arange(n) for n in ex["seq_lengths"]]) if "seq_lengths" in ex else torch.arange(len(i))
            for ex, i in zip(examples, ids)
        ]
        width = max(len(i) for i in ids)

        def pad(rows, value):
            out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
            for r, row in enumerate(rows):
                out[r, : len(row)] = row
            return out

        position_ids = pad(positions, 0)  # pad tokens: each its own one-token "example", never a label
        label_ids = pad(labels, -100)
        label_ids[position_ids == 0] = -100
        return {"input_ids": pad(ids, self.pad_token_id), "labels": label_ids, "position_ids": position_ids}


def packed_rows_collator(plan, tokenizer) -> PackedRowsCollator | None:
    """The row-layout collator when the plan packs examples (bfd) for a dense attention kernel, else None."""
    if not plan.training.packing or plan.task == "continued-pretraining":  # "wrapped" packing: no padding-free
        return None
    if plan.strategy.attn_implementation in VARLEN_ATTENTION:
        return None
    return PackedRowsCollator(pad_token_id=tokenizer.pad_token_id)
