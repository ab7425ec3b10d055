"""The tokenizer matrix helpers: every (tokenizer, template) folder loads offline and behaves like its family.

The rendered strings below are written out in full from each family's documented prompt format, so a template
change that would silently alter training data fails here, not in a downstream test.
"""

from __future__ import annotations

import itertools
import string

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
jinja2 = pytest.importorskip("jinja2")

from tokenizer_matrix import (
    DEFAULT_SYSTEM,
    EXAMPLE_TOOLS,
    SPECIAL_TOKENS,
    TEMPLATE_STYLES,
    TEMPLATES,
    TOKENIZER_STYLES,
    build_model_folder,
    build_tokenizer_folder,
)

PAIRS = list(itertools.product(TOKENIZER_STYLES, TEMPLATE_STYLES))
CHAT_STYLES = [t for t in TEMPLATE_STYLES if TEMPLATES[t] is not None]
ALTERNATION = "Conversation roles must alternate user/assistant/user/assistant/..."

TWO_TURNS = [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "42"}]
# Each style's rendering of TWO_TURNS (no generation prompt), from the documented formats.
RENDERED = {
    "chatml": "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n42<|im_end|>\n",
    "chatml_default_system": (
        f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n42<|im_end|>\n"
    ),
    "chatml_tools": "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n42<|im_end|>\n",
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 12 + 30?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n42<|eot_id|>"
    ),
    "gemma": "<s><start_of_turn>user\nWhat is 12 + 30?<end_of_turn>\n<start_of_turn>model\n42<end_of_turn>\n",
    "mistral": "<s>[INST] What is 12 + 30? [/INST] 42</s>",
}
# What add_generation_prompt=True appends after the user turn (Mistral: nothing, "[/INST]" is the prompt).
GENERATION_PROMPT = {
    "chatml": "<|im_start|>assistant\n",
    "chatml_default_system": "<|im_start|>assistant\n",
    "chatml_tools": "<|im_start|>assistant\n",
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "gemma": "<start_of_turn>model\n",
    "mistral": "",
}
SPECIALS = {  # template style -> (bos, eos, whether plain encoding prepends bos)
    "none": ("<s>", "</s>", True),
    "chatml": (None, "<|im_end|>", False),
    "chatml_default_system": (None, "<|im_end|>", False),
    "chatml_tools": (None, "<|im_end|>", False),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", True),
    "gemma": ("<s>", "<end_of_turn>", True),
    "mistral": ("<s>", "</s>", True),
}
ASCII_TEXT = 'Hello, world! 12 + 30 = 42; {"a": [1, 2.5], "b": null}\n\tdone ~`|\\^_ (ok)?'


@pytest.fixture(scope="session")
def root(tmp_path_factory):
    # One root for the whole session: the helpers cache per root, so each folder is built once.
    return tmp_path_factory.mktemp("tokenizer-matrix")


def _load(root, tokenizer, template):
    return transformers.AutoTokenizer.from_pretrained(build_tokenizer_folder(root, tokenizer, template))


@pytest.mark.parametrize("tokenizer,template", PAIRS)
def test_folder_loads_offline_with_the_style_special_tokens(root, tokenizer, template):
    tok = _load(root, tokenizer, template)
    bos, eos, _ = SPECIALS[template]
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (bos, eos, "<pad>", "<unk>")
    assert tok.model_max_length == 1024
    assert tok.chat_template == TEMPLATES[template]
    # Every marker is one token, with the same id whatever the template (one vocabulary per tokenizer style).
    reference = _load(root, tokenizer, "chatml")
    assert len(tok) == len(reference)
    for marker in SPECIAL_TOKENS:
        ids = tok.encode(marker, add_special_tokens=False)
        assert ids == [reference.convert_tokens_to_ids(marker)], marker
    assert set(SPECIAL_TOKENS) <= set(tok.all_special_tokens)


@pytest.mark.parametrize("tokenizer,template", PAIRS)
def test_two_turn_conversation_renders_and_tokenizes(root, tokenizer, template):
    tok = _load(root, tokenizer, template)
    if template == "none":
        assert tok.chat_template is None
        with pytest.raises(ValueError, match="chat_template"):
            tok.apply_chat_template(TWO_TURNS, tokenize=False)
        return
    text = tok.apply_chat_template(TWO_TURNS, tokenize=False)
    assert text == RENDERED[template]
    prompt = tok.apply_chat_template(TWO_TURNS[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith(GENERATION_PROMPT[template])
    assert text.startswith(prompt)  # the prompt is a prefix of the full conversation: prompt masking works
    ids = tok.apply_chat_template(TWO_TURNS)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids
    assert tok.eos_token_id in ids  # every style closes the assistant turn with its eos
    if tok.bos_token_id is not None:
        assert ids.count(tok.bos_token_id) == 1  # the template's bos only: apply_chat_template adds none


@pytest.mark.parametrize("tokenizer,template", PAIRS)
def test_bos_is_prepended_on_plain_encode_as_in_the_family(root, tokenizer, template):
    tok = _load(root, tokenizer, template)
    bos, _, adds_bos = SPECIALS[template]
    with_specials = tok("hi there")["input_ids"]
    without = tok("hi there", add_special_tokens=False)["input_ids"]
    if adds_bos:
        assert with_specials == [tok.convert_tokens_to_ids(bos)] + without
    else:
        assert with_specials == without


@pytest.mark.parametrize("tokenizer", TOKENIZER_STYLES)
def test_gemma_rejects_system_messages_and_broken_alternation(root, tokenizer):
    tok = _load(root, tokenizer, "gemma")
    with pytest.raises(jinja2.TemplateError, match="System role not supported"):
        tok.apply_chat_template([{"role": "system", "content": "Be brief."}] + TWO_TURNS, tokenize=False)
    for roles in (["user", "user"], ["assistant", "user"], ["user", "assistant", "assistant"]):
        msgs = [{"role": r, "content": "x"} for r in roles]
        with pytest.raises(jinja2.TemplateError, match="must alternate"):
            tok.apply_chat_template(msgs, tokenize=False)


@pytest.mark.parametrize("tokenizer", TOKENIZER_STYLES)
def test_mistral_alternates_strictly_and_folds_the_system_message_into_the_first_user_turn(root, tokenizer):
    tok = _load(root, tokenizer, "mistral")
    for roles in (["user", "user"], ["system", "assistant"], ["user", "assistant", "assistant"]):
        msgs = [{"role": r, "content": "x"} for r in roles]
        with pytest.raises(jinja2.TemplateError, match="must alternate"):
            tok.apply_chat_template(msgs, tokenize=False)
    msgs = [{"role": "system", "content": "Be brief."}] + TWO_TURNS + [{"role": "user", "content": "And 1 + 1?"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == (
        "<s>[INST] Be brief.\n\nWhat is 12 + 30? [/INST] 42</s>[INST] And 1 + 1? [/INST]"
    )


def test_chatml_default_system_is_inserted_only_when_there_is_none(root):
    tok = _load(root, "bytebpe", "chatml_default_system")
    assert tok.apply_chat_template(TWO_TURNS, tokenize=False).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    )
    own = tok.apply_chat_template([{"role": "system", "content": "Be brief."}] + TWO_TURNS, tokenize=False)
    assert own.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")
    assert DEFAULT_SYSTEM not in own


@pytest.mark.parametrize("tokenizer", TOKENIZER_STYLES)
def test_chatml_tools_renders_tools_calls_and_responses(root, tokenizer):
    tok = _load(root, tokenizer, "chatml_tools")
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris, and 2 + 3?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
            ],
        },
        {"role": "tool", "content": '{"temperature": 21}'},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "content": "21 C, and 5."},
    ]
    text = tok.apply_chat_template(msgs, tools=EXAMPLE_TOOLS, tokenize=False)
    # One system turn: the caller's system text, then the tool list (one JSON object per line).
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n")
    assert text.count("<|im_start|>system") == 1
    tools_block = text[text.index("<tools>\n") + len("<tools>\n") : text.index("\n</tools>")]
    assert tools_block.split("\n") == [
        '{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city.", '
        '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name."}, '
        '"unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}',
        '{"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": '
        '{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, '
        '"required": ["a", "b"]}}}',
    ]
    # Dict arguments go through tojson, string arguments are inserted as given; content None renders nothing.
    assert (
        "<|im_start|>user\nWeather in Paris, and 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call><|im_end|>\n'
        # Consecutive tool results share one user turn.
        '<|im_start|>user\n<tool_response>\n{"temperature": 21}\n</tool_response>\n'
        "<tool_response>\n5\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n21 C, and 5.<|im_end|>\n"
    ) in text
    assert text.endswith("<|im_start|>assistant\n21 C, and 5.<|im_end|>\n")
    ids = tok.apply_chat_template(msgs, tools=EXAMPLE_TOOLS)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids
    for marker in ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"):
        assert ids.count(tok.convert_tokens_to_ids(marker)) == text.count(marker), marker
    # Bare {"name", "arguments"} calls (no "function" wrapper) render the same way.
    bare = [{"role": "assistant", "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}]
    assert tok.apply_chat_template(bare, tokenize=False) == (
        '<|im_start|>assistant\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call><|im_end|>\n'
    )


def test_char_tokenizer_is_one_token_per_character_with_exact_offsets(root):
    tok = _load(root, "char", "chatml")
    enc = tok(ASCII_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    assert len(enc["input_ids"]) == len(ASCII_TEXT)
    assert enc["offset_mapping"] == [(i, i + 1) for i in range(len(ASCII_TEXT))]
    assert tok.decode(enc["input_ids"]) == ASCII_TEXT
    printable = "".join(c for c in string.printable if c not in "\r\x0b\x0c")
    assert tok.decode(tok.encode(printable, add_special_tokens=False)) == printable
    cjk = "你好，世界。"
    assert tok.convert_ids_to_tokens(tok.encode(cjk, add_special_tokens=False)) == list(cjk)
    assert tok.encode("\U0001f600", add_special_tokens=False) == [tok.unk_token_id]  # outside the alphabet
    # Chat markers are still single tokens inside text.
    assert tok.encode("a<|im_end|>b", add_special_tokens=False) == [
        tok.convert_tokens_to_ids(t) for t in ("a", "<|im_end|>", "b")
    ]


def test_bytebpe_splits_digits_and_never_needs_unk(root):
    tok = _load(root, "bytebpe", "chatml")
    assert 590 <= len(tok) <= 620  # ~600 BPE entries plus the added markers
    tokens = tok.tokenize("year 20240315")
    assert tokens[-8:] == list("20240315")
    for text in (ASCII_TEXT, "你好，世界。こんにちは", "emoji \U0001f600 and café"):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert tok.unk_token_id not in enc["input_ids"]
        assert tok.decode(enc["input_ids"]) == text
        assert len(enc["offset_mapping"]) == len(enc["input_ids"])
    assert len(tok.encode(ASCII_TEXT, add_special_tokens=False)) < len(ASCII_TEXT)  # merges were learned


def test_folders_are_cached_and_unknown_styles_fail(root):
    first = build_tokenizer_folder(root, "char", "llama3")
    mtime = (first / "tokenizer.json").stat().st_mtime_ns
    assert build_tokenizer_folder(root, "char", "llama3") == first
    assert (first / "tokenizer.json").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="tokenizer style"):
        build_tokenizer_folder(root, "wordpiece", "chatml")
    with pytest.raises(ValueError, match="template style"):
        build_model_folder(root, "char", "vicuna")


@pytest.mark.parametrize("tokenizer,template", PAIRS)
def test_model_folder_loads_and_runs_a_forward_pass(root, tokenizer, template):
    folder = build_model_folder(root, tokenizer, template)
    assert build_model_folder(root, tokenizer, template) == folder
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    cfg = model.config
    assert (cfg.model_type, cfg.hidden_size, cfg.num_hidden_layers) == ("llama", 64, 2)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size) == (4, 2, 128)
    assert cfg.max_position_embeddings == 1024
    assert cfg.vocab_size == len(tok)
    assert (cfg.eos_token_id, cfg.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)
    assert cfg.bos_token_id == tok.bos_token_id  # None for the ChatML styles, as in Qwen2.5
    assert tok.chat_template == TEMPLATES[template]
    batch = tok(["What is 12 + 30? 42", "hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, len(tok))
    assert torch.isfinite(logits).all()
