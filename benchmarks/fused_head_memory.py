"""TRL's fused LM head on CPU (torch fallback of trl/kernels/chunked_logprob.py): MemTracker peak vs
planner.memory.estimate_memory(fused_loss=True, device="cpu").

Run: .venv/bin/python benchmarks/fused_head_memory.py   (fake tensors: no weights, no GPU, ~1 min)
Calibrates planner/memory.py FUSED_TORCH_TILE_FP32_COPIES on vocab 32000; the other vocabularies are
held out. The CUDA path (Triton kernels, folded in place) is modelled from the code, not measured here.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from planner.memory import TrainSetup, estimate_memory  # noqa: E402
from planner.model_spec import spec_from_config  # noqa: E402

raw = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
       "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 32000, "max_position_embeddings": 1024,
       "tie_word_embeddings": False, "rms_norm_eps": 1e-5}
CASES = [(32000, 512, 2), (8000, 256, 4), (50000, 384, 2)]  # (vocab, seq, batch); the first is the fit


def measure(config_dict: dict, method: str, seq: int, batch: int, fused: bool) -> int:
    """Peak bytes MemTracker sees over two bf16 training steps (same harness as memory_accuracy.py)."""
    import memory_accuracy as bench
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    config = AutoConfig.for_model(config_dict["model_type"],
                                  **{k: v for k, v in config_dict.items() if k != "model_type"})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    if fused:  # as SFTTrainer does, before peft wraps the model
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    model.train()
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to_empty(device="cpu")
        ids = torch.randint(0, config.vocab_size, (batch, seq))
        return bench.tracked_peak(model, ids, autocast=method != "full",
                                  forward_kwargs={"fused_lm_head": True} if fused else None)


def main() -> None:
    for vocab, seq, batch in CASES:
        cfg = dict(raw, vocab_size=vocab)
        spec = spec_from_config(cfg, "tiny", source="catalog")
        for method in ("full", "lora"):
            m = measure(cfg, method, seq, batch, True)
            setup = TrainSetup(method=method, precision="bf16", seq_len=seq, micro_batch=batch, fused_loss=True,
                               device="cpu")
            e = estimate_memory(spec, setup)
            print(f"vocab {vocab} seq {seq} batch {batch} {method}: measured {m / 2**20:.1f} MiB, "
                  f"estimated {e.peak_allocated / 2**20:.1f} MiB ({e.phase}), "
                  f"error {100 * (e.peak_allocated - m) / m:+.1f}%")


if __name__ == "__main__":
    main()
