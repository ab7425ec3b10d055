"""A matrix of small local tokenizer folders (and tiny model folders) in the styles real chat models use.

Code that prepares chat data, masks prompts, packs rows or counts tokens has to work with every tokenizer a
user may point it at, not just the one ``examples.tiny_model`` builds. This module builds, with no download,
a ``save_pretrained`` folder for each (tokenizer style, chat-template style) pair:

* tokenizer styles (``TOKENIZER_STYLES``):

  - ``"bytebpe"``: byte-level BPE with digits split one per token, as GPT-2, Llama 3 and Qwen2 use, trained
    on the fly by ``examples.tiny_model.build_tokenizer`` (vocabulary 600 plus the added special tokens);
  - ``"char"``: every character is one token (``<unk>`` for characters outside the alphabet). It is much
    finer than any chars-per-token heuristic, so it catches code that guesses token counts from text length.

* template styles (``TEMPLATE_STYLES``), each our own Jinja written from the model family's documented prompt
  format (see the comments at each template): ``"none"`` (a base model: no chat template), ``"chatml"``,
  ``"chatml_default_system"`` (Qwen2.5), ``"llama3"``, ``"gemma"`` (no system role, strict alternation),
  ``"mistral"`` (``[INST]``, strict alternation) and ``"chatml_tools"`` (Qwen2.5-style tool calling).

Every tokenizer has the same added special tokens (``SPECIAL_TOKENS``) with the same ids whatever the template,
so a vocabulary never depends on the template; bos/eos differ per template style as in the real families.
Like the real tokenizers, the llama3, gemma, mistral and none styles prepend BOS when text is encoded with
``add_special_tokens=True`` (their templates also render ``bos_token``; ``apply_chat_template`` tokenizes with
``add_special_tokens=False``, so re-encoding rendered chat text with the default would double the BOS, exactly
the trap real Llama 3 / Gemma tokenizers set). The ChatML styles add nothing and have no bos token (Qwen2.5's
``tokenizer_config.json`` has ``"bos_token": null``).

The templates deliberately have no ``{% generation %}`` markers: no real model template above has them, so
``return_assistant_tokens_mask=True`` yields an all-zero mask with these, as it does with the real ones.

    from tokenizer_matrix import build_tokenizer_folder, build_model_folder
    folder = build_tokenizer_folder(tmp_path, "char", "gemma")   # AutoTokenizer.from_pretrained(folder)
    model_dir = build_model_folder(tmp_path, "bytebpe", "llama3")  # + AutoModelForCausalLM.from_pretrained

Folders are cached per (root, tokenizer, template) in-process, so a test session builds each once.
"""

from __future__ import annotations

import functools
import json
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

from examples.tiny_model import _BUILTIN_CORPUS, build_config
from examples.tiny_model import SPECIAL_TOKENS as _TINY_SPECIAL_TOKENS
from examples.tiny_model import build_tokenizer as _build_bytebpe

TOKENIZER_STYLES = ("bytebpe", "char")
TEMPLATE_STYLES = ("none", "chatml", "chatml_default_system", "llama3", "gemma", "mistral", "chatml_tools")

# Every marker any of the template styles uses, added as special tokens to every tokenizer (so each marker is
# one token, never split by BPE or by characters). The first five are examples.tiny_model's, in its order, so
# <pad>, <unk>, <s>, <|im_end|>, <|im_start|> have the same ids 0-4 in both tokenizer styles.
SPECIAL_TOKENS: tuple[str, ...] = tuple(_TINY_SPECIAL_TOKENS) + tuple(
    t
    for t in (
        "<|begin_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
        "<start_of_turn>",
        "<end_of_turn>",
        "[INST]",
        "[/INST]",
        "<tool_call>",
        "</tool_call>",
        "<tool_response>",
        "</tool_response>",
        "</s>",
    )
    if t not in _TINY_SPECIAL_TOKENS
)
PAD, UNK = "<pad>", "<unk>"
BPE_VOCAB_SIZE = 600  # BPE vocabulary incl. the trainer's five special tokens; the other added tokens come on top
MAX_POSITIONS = 1024
DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class _Specials:
    bos: str | None
    eos: str
    add_bos: bool  # whether encoding with add_special_tokens=True prepends bos (the tokenizer's post-processor)


# bos/eos per template style, from each family's tokenizer_config.json / tokenizer.json:
# - Qwen2.5 (ChatML): bos_token null, eos "<|im_end|>" for the instruct models, no BOS prepended on encode.
# - Llama 3: bos "<|begin_of_text|>", instruct eos "<|eot_id|>", and tokenizer.json's TemplateProcessing
#   post-processor prepends <|begin_of_text|>.
# - Gemma: add_bos_token true, eos "<end_of_turn>" in the instruct generation config. The real bos is "<bos>";
#   "<s>" stands in for it here so every style shares one special-token list.
# - Mistral v0.1-v0.3 and Llama-2-style base models: bos "<s>" prepended on encode, eos "</s>".
_STYLE_SPECIALS: dict[str, _Specials] = {
    "none": _Specials("<s>", "</s>", True),
    "chatml": _Specials(None, "<|im_end|>", False),
    "chatml_default_system": _Specials(None, "<|im_end|>", False),
    "chatml_tools": _Specials(None, "<|im_end|>", False),
    "llama3": _Specials("<|begin_of_text|>", "<|eot_id|>", True),
    "gemma": _Specials("<s>", "<end_of_turn>", True),
    "mistral": _Specials("<s>", "</s>", True),
}

_ALTERNATION_ERROR = "Conversation roles must alternate user/assistant/user/assistant/..."

# --- Chat templates -------------------------------------------------------------------------------------------
# transformers renders chat templates with trim_blocks and lstrip_blocks, and every tag below strips the
# whitespace around it ({%- ... %}, {{- ... }}), so the layout of this source never leaks into the output: only
# the string literals do. Raw strings keep "\n" as a Jinja escape.

# ChatML (OpenAI's ChatML, used by Qwen): "<|im_start|>{role}\n{content}<|im_end|>\n" per message; the
# generation prompt opens an assistant turn.
_CHATML_MESSAGES = r"""
{%- for message in messages %}
    {{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
{%- endfor %}
"""
_CHATML_GENERATION_PROMPT = r"""
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

# Qwen2.5's template inserts a default system turn when the conversation does not start with one (Qwen2 used
# "You are a helpful assistant.", Qwen2.5 a longer variant naming itself).
_DEFAULT_SYSTEM_TURN = (
    r"""
{%- if not messages or messages[0]['role'] != 'system' %}
    {{- '<|im_start|>system\n"""
    + DEFAULT_SYSTEM
    + r"""<|im_end|>\n' }}
{%- endif %}
"""
)

# Meta's Llama 3 prompt format (llama.com "Model Cards & Prompt formats", Llama 3): <|begin_of_text|> once, then
# per message "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>" with the content stripped; the
# model is prompted to answer by an open assistant header.
_LLAMA3 = r"""
{{- bos_token }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}
    {{- (message['content'] | trim) + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Gemma's formatting (ai.google.dev "Gemma formatting and system instructions"): turns are
# "<start_of_turn>user\n...<end_of_turn>\n" and "<start_of_turn>model\n...<end_of_turn>\n", and "Gemma doesn't
# support system prompts": its template raises on a system message, and on turns that do not alternate
# user/model starting with user. BOS comes first.
_GEMMA = (
    r"""
{%- for message in messages %}
    {%- if message['role'] == 'system' %}
        {{- raise_exception('System role not supported') }}
    {%- endif %}
{%- endfor %}
{{- bos_token }}
{%- for message in messages %}
    {%- if message['role'] != ('user' if loop.index0 % 2 == 0 else 'assistant') %}
        {{- raise_exception('"""
    + _ALTERNATION_ERROR
    + r"""') }}
    {%- endif %}
    {%- set role = 'model' if message['role'] == 'assistant' else 'user' %}
    {{- '<start_of_turn>' + role + '\n' + (message['content'] | trim) + '<end_of_turn>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<start_of_turn>model\n' }}
{%- endif %}
"""
)

# Mistral's instruct format (docs.mistral.ai, "<s>[INST] Instruction [/INST] Model answer</s>[INST] Follow-up
# instruction [/INST]"): strict user/assistant alternation after an optional leading system message, which the
# v0.1-v0.3 templates fold into the first user turn; each answer ends with eos. There is no separate generation
# prompt: "[/INST]" already asks for the answer, so add_generation_prompt changes nothing (as in Mistral's own).
_MISTRAL = (
    r"""
{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set turns = messages[1:] %}
{%- else %}
    {%- set system_message = none %}
    {%- set turns = messages %}
{%- endif %}
{{- bos_token }}
{%- for message in turns %}
    {%- if message['role'] != ('user' if loop.index0 % 2 == 0 else 'assistant') %}
        {{- raise_exception('"""
    + _ALTERNATION_ERROR
    + r"""') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is not none %}
            {{- '[INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- else %}
        {{- ' ' + message['content'] + eos_token }}
    {%- endif %}
{%- endfor %}
"""
)

# Qwen2.5's tool calling (qwen.readthedocs.io "Function Calling", Hermes-style): with `tools`, a system turn
# (the caller's system text first, if any) lists each tool as one JSON line inside <tools></tools> and says how
# to call them; an assistant message's tool_calls become "<tool_call>\n{"name": ..., "arguments": ...}\n
# </tool_call>" (content may be None); "tool" messages become a user turn of <tool_response> blocks, consecutive
# ones sharing one turn. Calls may be OpenAI-shaped ({"type": "function", "function": {...}}) or bare
# {"name", "arguments"}; arguments given as a JSON string are inserted as is, dicts go through tojson. Unlike
# Qwen2.5, no default system turn is added, so this style differs from "chatml" only where tools are involved.
_TOOLS_INSTRUCTIONS = (
    r"# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    r"You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_CALL_FORMAT = (
    r"\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    r'<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    r"<args-json-object>}\n</tool_call><|im_end|>\n"
)
_CHATML_TOOLS = (
    r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages and messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] + '\n\n' }}
    {%- endif %}
    {{- '"""
    + _TOOLS_INSTRUCTIONS
    + r"""' }}
    {%- for tool in tools %}
        {{- '\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '"""
    + _TOOLS_CALL_FORMAT
    + r"""' }}
{%- endif %}
{%- for message in messages %}
    {%- if message['role'] == 'system' and loop.first and tools %}
        {#- already rendered inside the tools system turn #}
    {%- elif message['role'] == 'assistant' and message['tool_calls'] %}
        {{- '<|im_start|>assistant' }}
        {%- if message['content'] %}
            {{- '\n' + message['content'] }}
        {%- endif %}
        {%- for call in message['tool_calls'] %}
            {%- set fn = call['function'] if call['function'] is defined else call %}
            {{- '\n<tool_call>\n{"name": ' + (fn['name'] | tojson) + ', "arguments": ' }}
            {%- if fn['arguments'] is string %}
                {{- fn['arguments'] }}
            {%- else %}
                {{- fn['arguments'] | tojson }}
            {%- endif %}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message['role'] == 'tool' %}
        {%- if loop.first or loop.previtem['role'] != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + message['content'] + '\n</tool_response>' }}
        {%- if loop.last or loop.nextitem['role'] != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- else %}
        {{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
"""
    + _CHATML_GENERATION_PROMPT
)


def _clean(template: str) -> str:
    return template.strip("\n")


TEMPLATES: dict[str, str | None] = {
    "none": None,
    "chatml": _clean(_CHATML_MESSAGES + _CHATML_GENERATION_PROMPT),
    "chatml_default_system": _clean(_DEFAULT_SYSTEM_TURN + _CHATML_MESSAGES + _CHATML_GENERATION_PROMPT),
    "llama3": _clean(_LLAMA3),
    "gemma": _clean(_GEMMA),
    "mistral": _clean(_MISTRAL),
    "chatml_tools": _clean(_CHATML_TOOLS),
}

# --- Corpus ---------------------------------------------------------------------------------------------------
EXAMPLE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city name."},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers.",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
]


def _corpus() -> list[str]:
    """English, digits, punctuation, some CJK and tool-call JSON: enough text for ~600 BPE merges."""
    texts = list(_BUILTIN_CORPUS)
    texts += [
        "You are a helpful assistant. Answer the question briefly and politely.",
        "The user asks a question; the assistant answers it, and the system message sets the rules.",
        "Hello! How are you today? I'm fine, thank you. Let's get started: step 1, step 2, step 3.",
        "Tokenizers split text into tokens: words, sub-words, bytes or single characters (#, $, %, &, *, @).",
        "Paths like /home/user/data.jsonl and URLs like https://example.com/a?b=c&d=e [see (1) and {2}].",
        "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5",
        "你好，世界。今天天气很好。我们一起学习语言模型。",
        "日本語のテキストも少しあります。こんにちは。",
        "北京的天气怎么样？东京的天气很好。",
        "Training loss goes down while the validation loss is checked every few hundred steps.",
        "Gradient checkpointing trades compute for memory: activations are recomputed in the backward pass.",
        "The learning rate warms up, then decays with a cosine schedule until the end of training.",
        "Each batch holds several sequences; padding tokens are masked out of the attention and the loss.",
        "A chat template turns a list of messages into one string that the tokenizer can encode.",
        "Please summarise the following paragraph in one sentence, keeping the numbers exact.",
        "Translate to French: the weather is nice today. Réponse : il fait beau aujourd'hui.",
    ]
    texts += [f"What is {a} + {b}? The answer is {a + b}." for a in range(0, 100, 7) for b in range(1, 60, 9)]
    texts += [
        f"The date {2000 + i}-{1 + i % 12:02d}-{1 + i % 28:02d} was a {d}."
        for i, d in enumerate(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"] * 3)
    ]
    texts += [json.dumps(tool) for tool in EXAMPLE_TOOLS]
    for city in ("Paris", "London", "Tokyo", "Berlin", "北京", "New York"):
        call = {"name": "get_weather", "arguments": {"city": city, "unit": "celsius"}}
        texts.append(f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>")
        texts.append(json.dumps({"city": city, "temperature": 21, "condition": "sunny"}, ensure_ascii=False))
    return texts


CORPUS: tuple[str, ...] = tuple(_corpus())


# --- Tokenizers -----------------------------------------------------------------------------------------------
@functools.cache
def _backend_json(tokenizer: str) -> str:
    """The trained ``tokenizers`` model of one style, with every special token added, as JSON (trained once).

    Kept as JSON because a ``Tokenizer`` is mutable (post-processor, added tokens); each wrapper gets its own copy.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if tokenizer == "bytebpe":
        # examples.tiny_model's byte-level BPE: ByteLevel pre-tokenizer/decoder, digits split individually, every
        # byte in the alphabet (no <unk> ever), trim_offsets=False so offsets stay exact.
        backend = _build_bytebpe(CORPUS, vocab_size=BPE_VOCAB_SIZE, max_position_embeddings=MAX_POSITIONS)
        backend = backend.backend_tokenizer
    elif tokenizer == "char":
        # One token per character: WordLevel over single characters, the input split before every character.
        # Added (special) tokens are matched before pre-tokenization, so chat markers stay single tokens.
        alphabet = sorted(set(string.printable) | {c for text in CORPUS for c in text})
        vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
        for char in alphabet:
            vocab.setdefault(char, len(vocab))
        backend = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
        backend.decoder = decoders.Fuse()  # concatenate: characters carry their own spaces
    else:
        raise ValueError(f"unknown tokenizer style {tokenizer!r}; use one of {TOKENIZER_STYLES}")
    # Same order for every template, so ids never depend on the template style; tokens already in the vocabulary
    # (the BPE trainer's five, all of them for "char") keep their ids.
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    return backend.to_str()


def _bos_post_processor(tokenizer: str, bos: str, bos_id: int):
    """Prepend bos on encode (as Llama 3's TemplateProcessing and Gemma/Mistral's add_bos_token do)."""
    from tokenizers import processors

    template = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, bos_id)]
    )
    if tokenizer == "bytebpe":
        # Keep the ByteLevel step examples.tiny_model sets (trim_offsets=False keeps offsets exact).
        return processors.Sequence([processors.ByteLevel(trim_offsets=False), template])
    return template


def make_tokenizer(tokenizer: str, template: str):
    """A fresh ``PreTrainedTokenizerFast`` of the given styles (not saved). ``build_tokenizer_folder`` saves one."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if template not in TEMPLATES:
        raise ValueError(f"unknown template style {template!r}; use one of {TEMPLATE_STYLES}")
    backend = Tokenizer.from_str(_backend_json(tokenizer))
    specials = _STYLE_SPECIALS[template]
    if specials.add_bos:
        backend.post_processor = _bos_post_processor(tokenizer, specials.bos, backend.token_to_id(specials.bos))
    named = {specials.bos, specials.eos, PAD, UNK}
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=specials.bos,
        eos_token=specials.eos,
        pad_token=PAD,
        unk_token=UNK,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in named],
        model_max_length=MAX_POSITIONS,
        padding_side="right",
        clean_up_tokenization_spaces=False,  # decode must give back exactly the text (char offsets, round trips)
    )
    hf_tok.chat_template = TEMPLATES[template]
    return hf_tok


_FOLDERS: dict[tuple[str, str, str, str], Path] = {}


def _check_styles(tokenizer: str, template: str) -> None:
    if tokenizer not in TOKENIZER_STYLES:
        raise ValueError(f"unknown tokenizer style {tokenizer!r}; use one of {TOKENIZER_STYLES}")
    if template not in TEMPLATE_STYLES:
        raise ValueError(f"unknown template style {template!r}; use one of {TEMPLATE_STYLES}")


def build_tokenizer_folder(root: Path, tokenizer: str, template: str) -> Path:
    """``root/tok-{tokenizer}-{template}``: a tokenizer saved with ``save_pretrained`` (built once per process)."""
    _check_styles(tokenizer, template)
    key = ("tok", str(root), tokenizer, template)
    if key not in _FOLDERS:
        out = Path(root) / f"tok-{tokenizer}-{template}"
        make_tokenizer(tokenizer, template).save_pretrained(out)
        _FOLDERS[key] = out
    return _FOLDERS[key]


def build_model_folder(root: Path, tokenizer: str, template: str) -> Path:
    """``root/model-{tokenizer}-{template}``: the same tokenizer files plus a tiny random-init Llama (built once).

    Sizes: hidden 64, 2 layers, 4 heads, 2 kv heads, intermediate 128, 1024 positions; vocabulary = len(tokenizer).
    A folder of its own, so the tokenizer-only folder stays a tokenizer-only folder.
    """
    _check_styles(tokenizer, template)
    key = ("model", str(root), tokenizer, template)
    if key not in _FOLDERS:
        import torch
        import transformers

        out = Path(root) / f"model-{tokenizer}-{template}"
        shutil.copytree(build_tokenizer_folder(root, tokenizer, template), out, dirs_exist_ok=True)
        tok = transformers.AutoTokenizer.from_pretrained(out)
        sizes = {
            "hidden_size": 64,
            "num_layers": 2,
            "num_heads": 4,
            "num_kv_heads": 2,
            "intermediate_size": 128,
            "max_position_embeddings": MAX_POSITIONS,
        }
        config = build_config("llama", tok, sizes)
        transformers.set_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
        model.save_pretrained(out)
        _FOLDERS[key] = out
    return _FOLDERS[key]
