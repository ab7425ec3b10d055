"""Token counting for the profile: the model's tokenizer.json (exact) or a character-class heuristic.

The exact counter wraps a ``tokenizers.Tokenizer`` (Rust, no transformers/torch): the same object type
the executor's transformers tokenizer holds as its backend, so both count the same ids
(planner.dataset.encode). Without a local tokenizer the heuristic below estimates content tokens, and
the chat template's tokens are added per message from a table of measured template overheads
(TEMPLATE_OVERHEAD).
"""

from __future__ import annotations

import os
import re

from planner.errors import FtplanError

# --------------------------------------------------------------------------- token counting


class TokenCounter:
    """Counts tokens of many texts at once; ``name`` goes into DataProfile.tokenizer."""

    name: str
    notes: tuple[str, ...] = ()

    def count(self, texts: list[str]) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError


class HFTokenizerCounter(TokenCounter):
    """A model's tokenizer.json through the `tokenizers` library (Rust, no transformers/torch)."""

    def __init__(self, path: str):
        file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise FtplanError(f"no tokenizer.json at {path}", hint="give the folder or file of a fast tokenizer")
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise FtplanError(
                "counting with a tokenizer needs the 'tokenizers' package", hint="pip install tokenizers"
            ) from None
        try:
            self.tokenizer = Tokenizer.from_file(file)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception
            raise FtplanError(f"cannot load tokenizer {file}: {exc}") from None
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.name = f"model:{path}"

    def count(self, texts: list[str]) -> list[int]:
        # encode_batch runs on all cores (Rust); special tokens are added once per sequence instead
        # (SEQUENCE_OVERHEAD_TOKENS), as the chat template or collator would.
        return [len(e.ids) for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


# Heuristic token counts without a tokenizer: a linear model over character classes, tokens =
# sum(coefficient x characters of that class). The coefficients were fitted (non-negative least squares,
# relative error) by benchmarks/profile_heuristic.py on half of a local corpus (Python reference manual,
# licences, git release notes, stdlib code, package READMEs, CJK text, arithmetic Q&A) against real
# tokenizers, and its error on the other half is in BENCHMARKS.md, "Token-count heuristic".
# "small": 32k SentencePiece vocabularies (Llama 2, Mistral 7B, TinyLlama, Phi-3), fitted on Mistral-7B's
# tokenizer.model; "large": >= 100k BPE vocabularies (Llama 3, Qwen2.5/3, Mistral NeMo, Gemma), fitted on
# the mean of Qwen2.5, Qwen3.5 and Mistral Tekken. Unknown vocabulary: "small" (more tokens: the safe side
# for memory and time).
HEURISTIC_FEATURES = (
    "ascii_letters",
    "digits",
    "punctuation",
    "spaces",
    "newlines",
    "cjk",
    "other_non_ascii",
)
HEURISTIC_COEFFS: dict[str, tuple[float, ...]] = {
    "small": (0.230, 1.360, 0.433, 0.095, 2.051, 1.201, 1.403),
    "large": (0.219, 1.376, 0.282, 0.087, 1.394, 0.708, 2.337),
}
LARGE_VOCAB = 64_000  # vocabularies at least this big use the "large" coefficients
_CJK = re.compile(r"[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\U00020000-\U0002fa1f]")
# One translate maps each ASCII class onto one character (digits -> "0", punctuation -> "!"); counting
# those is 2 C-level passes per text (CPython's ASCII fast path for str.translate).
_CLASS_TABLE = str.maketrans(
    {**{d: "0" for d in "0123456789"}, **{c: "!" for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"}}
)


def vocab_family(vocab_size: int | None) -> str:
    return "large" if vocab_size and vocab_size >= LARGE_VOCAB else "small"


def heuristic_features(text: str) -> tuple[int, ...]:
    """Character counts per class (HEURISTIC_FEATURES), with C-speed str methods only."""
    classes = text.translate(_CLASS_TABLE)
    digits, punct = classes.count("0"), classes.count("!")
    spaces, newlines = text.count(" "), text.count("\n")
    if text.isascii():
        return (len(text) - digits - punct - spaces - newlines, digits, punct, spaces, newlines, 0, 0)
    ascii_chars = len(text.encode("ascii", "ignore"))
    cjk = len(_CJK.findall(text))
    return (
        ascii_chars - digits - punct - spaces - newlines,
        digits,
        punct,
        spaces,
        newlines,
        cjk,
        len(text) - ascii_chars - cjk,
    )


def heuristic_tokens(text: str, family: str = "small") -> int:
    """Token estimate without a tokenizer (see HEURISTIC_COEFFS)."""
    if not text:
        return 0
    a, d, p, s, n, c, o = heuristic_features(text)
    ka, kd, kp, ks, kn, kc, ko = HEURISTIC_COEFFS[family]
    return max(1, round(ka * a + kd * d + kp * p + ks * s + kn * n + kc * c + ko * o))


class HeuristicCounter(TokenCounter):
    def __init__(self, vocab_size: int | None = None):
        self.family = vocab_family(vocab_size)
        self.name = f"heuristic:{self.family}-vocab"

    def count(self, texts: list[str]) -> list[int]:
        """heuristic_tokens for each text, with one translate over the whole batch (the per-call
        overhead of str.translate dominates on short texts)."""
        ka, kd, kp, ks, kn, kc, ko = HEURISTIC_COEFFS[self.family]
        classes = "".join(texts).translate(_CLASS_TABLE)
        out, pos = [], 0
        for text in texts:
            n = len(text)
            if n == 0:
                out.append(0)
                continue
            seg = classes[pos : pos + n]
            pos += n
            d, p, s, nl = seg.count("0"), seg.count("!"), text.count(" "), text.count("\n")
            if text.isascii():
                est = ka * (n - d - p - s - nl) + kd * d + kp * p + ks * s + kn * nl
            else:
                ascii_chars = len(text.encode("ascii", "ignore"))
                cjk = len(_CJK.findall(text))
                est = (
                    ka * (ascii_chars - d - p - s - nl)
                    + kd * d
                    + kp * p
                    + ks * s
                    + kn * nl
                    + kc * cjk
                    + ko * (n - ascii_chars - cjk)
                )
            out.append(max(1, round(est)))
        return out


def make_counter(tokenizer_path: str | None, vocab_size: int | None = None) -> TokenCounter:
    """The model's tokenizer.json when there is one, else the heuristic.

    A folder without tokenizer.json (a model that ships only a slow SentencePiece tokenizer.model)
    falls back to the heuristic with a note; a path that does not exist is an error.
    """
    if not tokenizer_path:
        return HeuristicCounter(vocab_size)
    if os.path.isdir(tokenizer_path) and not os.path.isfile(os.path.join(tokenizer_path, "tokenizer.json")):
        counter = HeuristicCounter(vocab_size)
        counter.notes = (f"{tokenizer_path} has no tokenizer.json (fast tokenizer): heuristic used",)
        return counter
    if not os.path.exists(tokenizer_path):
        raise FtplanError(
            f"tokenizer not found: {tokenizer_path}",
            hint="give a tokenizer.json file or the model folder that holds it",
        )
    return HFTokenizerCounter(tokenizer_path)


# Chat-template tokens around each message and once per sequence, for counting without a local tokenizer.
# Derived from each family's template markers, counting a special token as one token and a role name or
# a newline as one token (what their BPE vocabularies do):
#   ChatML (Qwen2/2.5/3, SmolLM2, ftplan's default): "<|im_start|>" role "\n" ... "<|im_end|>" "\n"  -> 5
#   Llama 3: "<|start_header_id|>" role "<|end_header_id|>" "\n\n" ... "<|eot_id|>" -> 5, "<|begin_of_text|>" once
#   Gemma: "<start_of_turn>" role "\n" ... "<end_of_turn>" "\n" -> 5, "<bos>" once
#   Mistral: "[INST]" " " ... "[/INST]" around the user turn, "</s>" after the answer -> about 2 per message, "<s>" once
#   Phi-3: "<|user|>" "\n" ... "<|end|>" "\n" -> 4
# A default system prompt some templates add when the conversation has none is counted by the exact path
# only (it needs the template text). Unknown families: ChatML's 5 and 1 (OpenAI's cookbook counts 3-4).
TEMPLATE_OVERHEAD: dict[str, tuple[int, int]] = {  # model_type -> (per message, per sequence)
    "qwen2": (5, 0),
    "qwen3": (5, 0),
    "qwen2_moe": (5, 0),
    "qwen3_moe": (5, 0),
    "llama": (5, 1),
    "gemma": (5, 1),
    "gemma2": (5, 1),
    "gemma3_text": (5, 1),
    "mistral": (2, 1),
    "mixtral": (2, 1),
    "phi3": (4, 0),
}
DEFAULT_TEMPLATE_OVERHEAD = (5, 1)


def template_overhead(model_type: str | None) -> tuple[int, int]:
    return TEMPLATE_OVERHEAD.get(model_type or "", DEFAULT_TEMPLATE_OVERHEAD)
