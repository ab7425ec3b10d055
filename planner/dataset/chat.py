"""The model's chat template, rendered without transformers, exactly as ``apply_chat_template`` renders it.

The plan sizes sequences and the executor trains them through this one renderer: the profile's token
counts and the trained ``input_ids`` come from the same text. Rendering must equal transformers', so the
Jinja environment is the one transformers 5 builds in ``utils/chat_template_utils.py``
(``_cached_compile_jinja_template``: an ``ImmutableSandboxedEnvironment`` with ``trim_blocks``,
``lstrip_blocks`` and ``loopcontrols``; ``tojson`` without HTML escaping; ``raise_exception``,
``strftime_now``, ``dict`` and ``namespace`` globals; the ``{% generation %}`` tag) and the template
variables are the ones ``apply_chat_template`` passes (``messages``, ``tools``, ``documents``,
``add_generation_prompt`` and the tokenizer's named special tokens). ``tests/test_dataset_chat.py``
checks the equality against ``tokenizer.apply_chat_template`` for every template style of the test
matrix. It imports only jinja2, so ``ftplan plan`` stays free of torch and transformers.

A template that refuses a conversation (Gemma's "System role not supported", Mistral's "Conversation
roles must alternate ...") raises :class:`TemplateRefusal` with the template's own words; the fixes a
user can ask for (``data.system_turn: merge|drop``, ``data.merge_consecutive``) are applied by
:func:`apply_fixes` before rendering, at plan time and at run time alike.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from planner.errors import FtplanError

# The documented default when a tokenizer ships no chat template (base models usually don't) and the plan
# sets none: ChatML (the format of Qwen2 and OpenAI chat models), with the tokenizer's EOS closing every
# turn so the model learns to stop and ``generate`` stops on eos_token_id. Tools and tool calls render
# the way Qwen2.5's template does (a <tools> block in the system turn, <tool_call> JSON in the assistant
# turn, <tool_response> in a user turn), so tool-calling data is never dropped by the default.
DEFAULT_CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\n\n' }}{%- endif %}"
    "{{- '# Tools\n\n<tools>' }}"
    "{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\n</tools>' + eos_token + '\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + eos_token + '\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}"
    "{%- if not loop.first %}{{- '<|im_start|>system\n' + message['content'] + eos_token + '\n' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}"
    "{%- generation %}"
    "{%- if message['content'] %}{{- message['content'] }}{%- endif %}"
    "{%- for call in message.get('tool_calls', []) %}"
    "{%- set fn = call['function'] if call['function'] is defined else call %}"
    "{%- if message['content'] or not loop.first %}{{- '\n' }}{%- endif %}"
    "{{- '<tool_call>\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' }}"
    "{%- if fn['arguments'] is string %}{{- fn['arguments'] }}{%- else %}{{- fn['arguments'] | tojson }}{%- endif %}"
    "{{- '}\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- eos_token }}"
    "{%- endgeneration %}"
    "{{- '\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>user\n<tool_response>\n' + message['content'] + '\n</tool_response>' + eos_token + '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + eos_token + '\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

# plan.yaml ``data.chat_template: ftplan`` asks for DEFAULT_CHAT_TEMPLATE even when the tokenizer has one.
DEFAULT_TEMPLATE_NAME = "ftplan"

# The named special tokens apply_chat_template passes to the template (transformers 5
# PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES via ``special_tokens_map``).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

SYSTEM_TURN_CHOICES = ("keep", "merge", "drop")


class TemplateRefusal(Exception):
    """The chat template raised (``raise_exception`` or a Jinja error) for this conversation."""


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template with the special tokens it renders with; ``source`` says where it came from."""

    text: str
    special_tokens: dict[str, str] = field(default_factory=dict)
    source: str = "tokenizer"  # tokenizer | plan | default (ftplan's ChatML: the tokenizer has none)

    @property
    def eos_token(self) -> str:
        return self.special_tokens.get("eos_token", "")

    def render(self, messages: list[dict], tools: list | None = None, add_generation_prompt: bool = False) -> str:
        """The conversation as text (what apply_chat_template(tokenize=False) returns); TemplateRefusal."""
        import jinja2

        compiled = _compile(self.text)
        # apply_chat_template drops None-valued keys of every message (OpenAI's content=None with tool calls).
        msgs = [{k: v for k, v in m.items() if v is not None} for m in messages]
        try:
            return compiled.render(
                messages=msgs,
                tools=tools or None,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except jinja2.TemplateError as exc:
            raise TemplateRefusal(str(exc) or type(exc).__name__) from None
        except (TypeError, KeyError, IndexError, AttributeError, ValueError) as exc:
            # A template that indexes what this conversation lacks (messages[0] of an empty list, a missing
            # key): the same refusal for the user, worded by Python.
            raise TemplateRefusal(f"{type(exc).__name__}: {exc}") from None


@lru_cache(maxsize=32)
def _compile(text: str):
    """The template compiled in transformers' environment (see the module docstring)."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        # ``{% generation %}...{% endgeneration %}`` marks assistant text for transformers' assistant masks;
        # rendering is unchanged by it (masks here come from prefix renders, see planner.dataset.encode).
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_support"), [], [], body).set_lineno(lineno)

        def _support(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    class TemplateDict:
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = jinja2.utils.Namespace
    try:
        return env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise FtplanError(f"the chat template does not parse (line {exc.lineno}: {exc.message})") from None


# ------------------------------------------------------------------------------------------- loading


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json stores it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise FtplanError(f"cannot read {path} ({exc})") from None
    return data if isinstance(data, dict) else {}


def template_from_folder(folder: str | None, override: str | None = None) -> ChatTemplate:
    """The chat template a model folder's tokenizer renders with, as transformers 5 loads it.

    transformers reads ``chat_template.jinja`` (written by save_pretrained since 4.43) before the
    ``chat_template`` key of ``tokenizer_config.json`` (a string, or a list of named templates of which
    "default" is used). ``override`` (plan.yaml ``data.chat_template``) wins; no template at all gives
    ftplan's DEFAULT_CHAT_TEMPLATE, as the executor sets it on the tokenizer.
    """
    config: dict = {}
    text = None
    if folder and os.path.isdir(folder):
        cfg_path = os.path.join(folder, "tokenizer_config.json")
        if os.path.isfile(cfg_path):
            config = _read_json(cfg_path)
        jinja_path = os.path.join(folder, "chat_template.jinja")
        if os.path.isfile(jinja_path):
            with open(jinja_path, encoding="utf-8") as f:
                text = f.read()
        else:
            text = _named_template(config.get("chat_template"))
        special_path = os.path.join(folder, "special_tokens_map.json")
        if os.path.isfile(special_path):  # legacy file: merged under tokenizer_config.json's values
            config = {**_read_json(special_path), **config}
    special = {name: tok for name in SPECIAL_TOKEN_NAMES if (tok := _token_text(config.get(name))) is not None}
    return _choose(text, special, override)


def _choose(tokenizer_text: str | None, special: dict[str, str], override: str | None) -> ChatTemplate:
    """The plan's template (``ftplan`` = the default), else the tokenizer's, else the default."""
    if override == DEFAULT_TEMPLATE_NAME:
        return ChatTemplate(DEFAULT_CHAT_TEMPLATE, special, "default")
    if override:
        return ChatTemplate(override, special, "plan")
    if tokenizer_text:
        return ChatTemplate(tokenizer_text, special, "tokenizer")
    return ChatTemplate(DEFAULT_CHAT_TEMPLATE, special, "default")


def _named_template(value) -> str | None:
    """A template, or the "default" of named templates (a list in tokenizer_config.json, a dict on a
    loaded tokenizer), else the first one."""
    if isinstance(value, str):
        return value
    named = value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
    if isinstance(named, dict) and named:
        return named.get("default") or next(iter(named.values()), None)
    return None


def template_of_tokenizer(tokenizer, override: str | None = None) -> ChatTemplate:
    """The same ChatTemplate for a loaded transformers tokenizer (the executor's side)."""
    special = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if k in SPECIAL_TOKEN_NAMES}
    return _choose(_named_template(tokenizer.chat_template), special, override)


# -------------------------------------------------------------------------------------------- fixes


@dataclass(frozen=True)
class TemplateFixes:
    """What the user asked to change in conversations before rendering (plan.yaml ``data``)."""

    system_turn: str = "keep"  # keep | merge (into the first user turn) | drop
    merge_consecutive: bool = False  # join consecutive turns of the same role (strict alternation)

    def any(self) -> bool:
        return self.system_turn != "keep" or self.merge_consecutive


NO_FIXES = TemplateFixes()


def apply_fixes(messages: list[dict], fixes: TemplateFixes) -> list[dict]:
    """The conversation with the fixes applied (a new list; the input is not changed).

    ``merge`` prepends the system text to the first user turn followed by a blank line, which is what
    Mistral's and Gemma's own templates do with a system prompt; ``drop`` removes system turns.
    """
    if not fixes.any():
        return messages
    msgs = [dict(m) for m in messages]
    if fixes.system_turn != "keep":
        system = [m["content"] for m in msgs if m.get("role") == "system" and isinstance(m.get("content"), str)]
        msgs = [m for m in msgs if m.get("role") != "system"]
        if fixes.system_turn == "merge" and system:
            first_user = next((m for m in msgs if m.get("role") == "user"), None)
            prefix = "\n\n".join(s for s in system if s.strip())
            if first_user is not None and prefix:
                first_user["content"] = f"{prefix}\n\n{first_user.get('content') or ''}"
            elif prefix:
                msgs.insert(0, {"role": "user", "content": prefix})
    if fixes.merge_consecutive:
        merged: list[dict] = []
        for m in msgs:
            prev = merged[-1] if merged else None
            if (
                prev is not None
                and prev.get("role") == m.get("role")
                and m.get("role") in ("user", "assistant")
                and not prev.get("tool_calls")
                and not m.get("tool_calls")
            ):
                prev["content"] = f"{prev.get('content') or ''}\n\n{m.get('content') or ''}"
                if m.get("train") is False and prev.get("train") is not False:
                    prev["train"] = prev.get("train", True)
                continue
            merged.append(m)
        msgs = merged
    return msgs


def suggest_fix(template: ChatTemplate, messages: list[dict], tools, fixes: TemplateFixes) -> TemplateFixes | None:
    """The smallest fix (on top of ``fixes``) under which this conversation renders, or None."""
    candidates = [
        TemplateFixes("merge", fixes.merge_consecutive),
        TemplateFixes(fixes.system_turn, True),
        TemplateFixes("merge", True),
        TemplateFixes("drop", fixes.merge_consecutive),
        TemplateFixes("drop", True),
    ]
    for cand in candidates:
        if cand == fixes:
            continue
        try:
            template.render(apply_fixes(messages, cand), tools)
        except TemplateRefusal:
            continue
        return cand
    return None


def fix_options(fixes: TemplateFixes) -> str:
    """The command-line options that ask for these fixes."""
    out = []
    if fixes.system_turn != "keep":
        out.append(f"--system-turn {fixes.system_turn}")
    if fixes.merge_consecutive:
        out.append("--merge-consecutive")
    return " ".join(out)
