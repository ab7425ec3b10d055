"""Build a tiny, random-initialised causal LM + tokenizer locally, with no download.

Tests, the demo and the benchmarks need a real Hugging Face model folder (``config.json``,
``model.safetensors``, ``tokenizer.json``, chat template) but must never download weights. This module
trains a byte-level BPE tokenizer on the fly with the ``tokenizers`` library, builds a model of the
requested architecture from its config (random init, seeded), and saves both with ``save_pretrained``.

    python -m examples.tiny_model OUT_DIR --arch llama --corpus examples/data/dates.jsonl

Everything is deterministic for a given ``seed`` and corpus: the BPE trainer is deterministic for a fixed
input order, and the weights come from ``transformers.set_seed(seed)`` before ``from_config``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.errors import FtplanError

# Special tokens. ChatML markers (as in Qwen2 / OpenAI ChatML) delimit turns; ``<|im_end|>`` doubles as
# EOS so that generation after an assistant turn stops by itself (Qwen2-Instruct does the same).
BOS, EOS, PAD, UNK, IM_START = "<s>", "<|im_end|>", "<pad>", "<unk>", "<|im_start|>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, IM_START]

# ChatML-like template. The ``{% generation %}`` block marks the tokens the assistant produces, so
# ``apply_chat_template(..., return_assistant_tokens_mask=True)`` (used by TRL's SFTTrainer when
# ``assistant_only_loss=True``) can mask everything else out of the loss. The closing ``<|im_end|>`` is
# inside the block: the model must learn to emit it, otherwise generation never stops.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

# A small built-in corpus, used when the caller gives none: enough English, digits and punctuation for
# the BPE trainer to learn a few hundred merges.
_BUILTIN_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A tiny model is trained from random weights to check that the pipeline works end to end.",
    "Fine-tuning adapts a pretrained language model to a new task with a small learning rate.",
    "What is 12 + 30? The answer is 42.",
    "Low-rank adapters train a small number of parameters while the base weights stay frozen.",
    "Question: reverse the word planner. Answer: rennalp.",
    "The date 2024-03-15 is the fifteenth of March, two thousand twenty-four.",
    "Memory per parameter: two bytes for weights, two for gradients, twelve for Adam states.",
]


@dataclass(frozen=True)
class ArchSpec:
    """How to express the common tiny-model sizes in one architecture's config class."""

    config_class: str  # name in ``transformers``
    keys: dict[str, str]  # our size name -> that config's keyword
    extra: dict[str, Any]


# Rules as data: the size keywords of each config class (from each model's configuration_*.py in
# transformers). ``None`` in ``keys`` means the architecture has no such knob.
_LLAMA_KEYS = {
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "intermediate_size": "intermediate_size",
    "max_position_embeddings": "max_position_embeddings",
}
ARCHS: dict[str, ArchSpec] = {
    "llama": ArchSpec("LlamaConfig", _LLAMA_KEYS, {}),
    "mistral": ArchSpec("MistralConfig", _LLAMA_KEYS, {"sliding_window": None}),
    "qwen2": ArchSpec("Qwen2Config", _LLAMA_KEYS, {}),
    "qwen3": ArchSpec("Qwen3Config", _LLAMA_KEYS, {}),
    "phi3": ArchSpec("Phi3Config", _LLAMA_KEYS, {}),
    "gemma": ArchSpec("GemmaConfig", _LLAMA_KEYS, {}),
    "gpt2": ArchSpec(
        "GPT2Config",
        {
            "hidden_size": "n_embd",
            "num_layers": "n_layer",
            "num_heads": "n_head",
            "intermediate_size": "n_inner",
            "max_position_embeddings": "n_positions",
        },
        {},
    ),
}


def build_tokenizer(
    corpus_texts: Iterable[str] | None, vocab_size: int = 512, max_position_embeddings: int = 512
):
    """Train a byte-level BPE tokenizer and wrap it as a transformers fast tokenizer with a chat template.

    Digits are split one per token (as Llama and Qwen2 do), so arithmetic answers are spelled digit by
    digit instead of depending on which numbers the BPE happened to merge.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(corpus_texts) if corpus_texts is not None else []
    if not texts:
        texts = list(_BUILTIN_CORPUS)
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    # trim_offsets=False keeps character offsets exact, which the assistant-token mask relies on.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        # Every byte is in the vocabulary, so any text (any language, emoji) encodes without <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[IM_START],
        model_max_length=max_position_embeddings,
        padding_side="right",
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def build_config(arch: str, tokenizer, sizes: dict[str, int]):
    """A transformers config of ``arch`` with the given sizes and the tokenizer's vocabulary and ids."""
    import transformers

    if arch not in ARCHS:
        raise FtplanError(f"unknown tiny-model arch {arch!r}", hint=f"use one of: {', '.join(sorted(ARCHS))}")
    spec = ARCHS[arch]
    kwargs: dict[str, Any] = dict(spec.extra)
    for ours, theirs in spec.keys.items():
        kwargs[theirs] = sizes[ours]
    if sizes["hidden_size"] % sizes["num_heads"]:
        raise FtplanError(
            f"hidden_size={sizes['hidden_size']} is not divisible by num_heads={sizes['num_heads']}",
            hint="pick num_heads that divides hidden_size",
        )
    if "num_kv_heads" in spec.keys and sizes["num_heads"] % sizes["num_kv_heads"]:
        raise FtplanError(
            f"num_heads={sizes['num_heads']} is not divisible by num_kv_heads={sizes['num_kv_heads']}",
            hint="pick num_kv_heads that divides num_heads",
        )
    if arch in ("gemma", "qwen3"):
        kwargs["head_dim"] = sizes["hidden_size"] // sizes["num_heads"]
    config_cls = getattr(transformers, spec.config_class)
    return config_cls(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )


def build_tiny_model(
    out_dir: str | Path,
    *,
    arch: str = "llama",
    corpus_texts: list[str] | None = None,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on ``corpus_texts``, build a random-init ``arch`` model, save both to ``out_dir``.

    Returns ``out_dir`` as a Path. The folder loads with ``AutoModelForCausalLM.from_pretrained`` and
    ``AutoTokenizer.from_pretrained`` (weights in safetensors) like any Hub checkpoint.
    """
    import torch
    import transformers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(
        corpus_texts, vocab_size=vocab_size, max_position_embeddings=max_position_embeddings
    )
    sizes = {
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_kv_heads": num_kv_heads,
        "intermediate_size": intermediate_size,
        "max_position_embeddings": max_position_embeddings,
    }
    config = build_config(arch, tokenizer, sizes)
    transformers.set_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def iter_corpus_file(path: str | Path) -> Iterator[str]:
    """Every string value in a .jsonl file (any format: chat messages, alpaca, text...), or lines of .txt."""
    p = Path(path)
    if not p.is_file():
        raise FtplanError(f"corpus file not found: {p}", hint="pass an existing .jsonl or .txt file")
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if p.suffix != ".jsonl":
                yield line.rstrip("\n")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise FtplanError(
                    f"{p}:{lineno}: not valid JSON ({err.msg})", hint="one JSON object per line"
                ) from None
            yield from _strings(row)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.tiny_model",
        description="Build a tiny random-init causal LM + BPE tokenizer trained on a corpus (no download).",
    )
    parser.add_argument("out_dir")
    parser.add_argument("--arch", default="llama", choices=sorted(ARCHS))
    parser.add_argument("--corpus", action="append", default=[], help=".jsonl or .txt (repeatable)")
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--num-kv-heads", type=int, default=2)
    parser.add_argument("--intermediate-size", type=int, default=128)
    parser.add_argument("--max-position-embeddings", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        texts = [t for f in args.corpus for t in iter_corpus_file(f)] or None
        out = build_tiny_model(
            args.out_dir,
            arch=args.arch,
            corpus_texts=texts,
            vocab_size=args.vocab_size,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            num_heads=args.num_heads,
            num_kv_heads=args.num_kv_heads,
            intermediate_size=args.intermediate_size,
            max_position_embeddings=args.max_position_embeddings,
            seed=args.seed,
        )
    except FtplanError as err:
        print(f"error: {err}")
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
