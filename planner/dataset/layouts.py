"""Record layouts -> the dataset types TRL trains, for every layout published fine-tuning data uses.

One function per layout family turns a raw record into a canonical example (plain dicts, TRL's shapes,
"Dataset formats" in the TRL docs):

========================  =================================================================  ==========
format (plan data.format) canonical example                                                  TRL type
========================  =================================================================  ==========
text                      {"text"}                                                           language modeling
alpaca, prompt_completion {"messages": [user, assistant], "tools": None}                     conversational
chat                      {"messages": [...], "tools": [...] | None}                         conversational (tools)
preference                {"prompt": [...], "chosen": [...], "rejected": [...], "tools"}     preference
kto                       {"prompt": [...], "completion": [...], "label": bool}              unpaired preference
classification            {"text", "label"}                                                  (sequence classification)
========================  =================================================================  ==========

Layouts read (from the projects' documentation): alpaca with ``system`` and ``history`` (LLaMA-Factory
``data/README.md``) and Self-Instruct ``instances``; ShareGPT ``conversations`` with ``from``/``value`` incl.
``function_call`` and ``observation`` (LLaMA-Factory, glaive), OpenAI chat ``messages`` incl. ``tool_calls``,
``tool`` messages and a ``tools`` list (OpenAI fine-tuning guide), content as a list of parts
(``{"type": "text", "text"|"value"}``; ``reasoning`` and ``tool_call`` parts of LLaMA-Factory v1);
prompt/completion and question/answer; preference with an explicit prompt (strings or messages), an
implicit prompt (TRL: chosen/rejected are whole conversations sharing a prefix; Anthropic HH: whole
"\\n\\nHuman: ... \\n\\nAssistant: ..." transcripts), ShareGPT ranking (``conversations`` + ``chosen``/
``rejected`` messages), OpenAI's DPO layout (``input.messages``, ``preferred_output``,
``non_preferred_output``), ``chosen_messages``/``rejected_messages``; KTO (``messages`` or prompt/completion
with a boolean ``label``); classification with a text and a label column.

Malformed records raise :class:`BadRow` with the reason; what is skipped inside a valid record (an
ignored extra instance, a reasoning part) is counted in ``Normalised.notes``. Column mapping
(``--columns label=category``) renames a file's columns to these names before detection.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from planner.dataset.readers import BadRow, type_name
from planner.errors import FtplanError

# Roles as published -> the roles chat templates know (TRL maybe_convert_to_chatml; LLaMA-Factory's
# ShareGPT tags: human/gpt/function_call/observation; Gemma's "model"; OpenAI's "function" and "developer").
ROLE_ALIASES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
    "ipython": "tool",
    "function_call": "assistant",  # glaive/LLaMA-Factory: an assistant turn that is a tool call (JSON)
}
TEXT_PART_TYPES = ("text", "input_text", "output_text")
MEDIA_PART_TYPES = ("image", "image_url", "input_image", "audio", "input_audio", "video", "file")
MEDIA_FIELDS = ("images", "image", "videos", "video", "audios", "audio")
# Aliases of the canonical fields (what the columns are called in published data).
LABEL_COLUMNS = ("label", "labels", "category", "class", "intent", "target")
TEXT_COLUMNS = ("text", "sentence", "content", "input", "review", "document")
# prompt/completion aliases: TRL's names, Q&A sets, OpenAssistant/HH-style SFT `prompt`/`response`.
PROMPT_KEYS = ("prompt", "question", "query")
COMPLETION_KEYS = ("completion", "answer", "response", "output")
# Mapping targets accepted by --columns / data.columns.
COLUMN_NAMES = (
    "text", "label", "prompt", "completion", "instruction", "input", "output", "system", "history",
    "messages", "chosen", "rejected", "tools",
)  # fmt: skip


@dataclass
class Normalised:
    """A canonical example and what was left out of it (counted, never dropped silently)."""

    example: dict
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- helpers


def _maybe_json(value):
    """Nested values stored as JSON text (CSV cells, LLaMA-Factory's ``tools`` string)."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def is_blank(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, dict)):
        return len(value) == 0
    return False


def _string(record: dict, *keys: str, what: str = "", required: bool = True) -> str:
    """The first of ``keys`` present (a field and its aliases), as a non-blank string."""
    key = next((k for k in keys if record.get(k) is not None), None)
    if key is None:
        if required:
            raise BadRow(f"missing field '{keys[0]}'")
        return ""
    value = record[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadRow(f"field '{key}' must be a string, got {type_name(value)}")
    if required and not value.strip():
        raise BadRow(f"empty {what or 'field'}: field '{key}' is blank")
    return value


# ------------------------------------------------------------------------------------------ messages


def _content(value, where: str, notes: list[str]) -> tuple[str | None, str | None, list[dict]]:
    """(text, reasoning, tool_calls) of a message content: a string, or a list of parts."""
    if value is None or isinstance(value, str):
        return value, None, []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise BadRow(f"{where} content must be a string or a list of parts, got {type_name(value)}")
    texts, reasoning, calls = [], [], []
    for part in value:
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict):
            raise BadRow(f"{where} has a content part that is {type_name(part)}, not an object")
        kind = str(part.get("type", "text"))
        body = part.get("text", part.get("value", part.get("content")))
        if kind in TEXT_PART_TYPES and isinstance(body, str):
            texts.append(body)
        elif kind in ("reasoning", "thinking") and isinstance(body, str):
            reasoning.append(body)
        elif kind == "tool_call":
            calls.append(_tool_call(body, where))
        elif kind in MEDIA_PART_TYPES:
            raise BadRow(f"{where} has an {kind} part: ftplan fine-tunes text-only models (remove multimodal rows)")
        else:
            raise BadRow(f"{where} has a content part of unknown type '{kind}' (text parts are read)")
    return "".join(texts), ("\n".join(reasoning) or None), calls


def _tool_call(value, where: str) -> dict:
    """One tool call in OpenAI's shape {"type": "function", "function": {"name", "arguments"}}."""
    value = _maybe_json(value)
    if isinstance(value, dict) and isinstance(value.get("function"), dict):
        fn = value["function"]
    elif isinstance(value, dict):
        fn = value
    else:
        raise BadRow(f"{where} tool call must be a JSON object with a name and arguments, got {type_name(value)}")
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BadRow(f"{where} tool call has no function name")
    args = _maybe_json(fn.get("arguments", fn.get("parameters", {})))
    call = {"type": "function", "function": {"name": name, "arguments": args}}
    if isinstance(value.get("id"), str):
        call["id"] = value["id"]
    return call


def tools_list(value, where: str = "tools") -> list[dict] | None:
    """A ``tools`` field (list or JSON string) as OpenAI function tools; bare schemas are wrapped."""
    value = _maybe_json(value)
    if is_blank(value):
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise BadRow(f"field '{where}' must be a list of tool schemas, got {type_name(value)}")
    out = []
    for i, tool in enumerate(value, 1):
        tool = _maybe_json(tool)
        if not isinstance(tool, dict):
            raise BadRow(f"{where}[{i}] must be an object (a function schema), got {type_name(tool)}")
        out.append(tool if "function" in tool else {"type": "function", "function": tool})
    return out


def messages(value, key: str, notes: list[str]) -> list[dict]:
    """Published messages (OpenAI, ShareGPT, parts) as chat-template messages; BadRow when malformed."""
    value = _maybe_json(value)
    if not isinstance(value, list):
        raise BadRow(f"field '{key}' must be a list of messages, got {type_name(value)}")
    out: list[dict] = []
    for i, raw in enumerate(value, 1):
        where = f"{key}[{i}]"
        if not isinstance(raw, dict):
            raise BadRow(f"{where} must be an object with role and content, got {type_name(raw)}")
        role_raw = raw.get("role", raw.get("from"))
        if not isinstance(role_raw, str):
            raise BadRow(f"{where} has no 'role' (or ShareGPT 'from')")
        role = ROLE_ALIASES.get(role_raw.strip().lower())
        if role is None:
            raise BadRow(f"{where} has unknown role '{role_raw}' (system, user, assistant or tool)")
        text, reasoning, calls = _content(raw.get("content", raw.get("value")), where, notes)
        msg: dict = {"role": role}
        if role_raw.lower() == "function_call":  # glaive: the value is the call itself, as JSON text
            calls.append(_tool_call(text, where))
            text = None
        calls += [_tool_call(c, where) for c in raw.get("tool_calls") or []]
        if raw.get("function_call"):  # OpenAI's legacy single function_call field
            calls.append(_tool_call(raw["function_call"], where))
        if calls and role != "assistant":
            raise BadRow(f"{where} has tool calls but its role is '{role_raw}' (only the assistant calls tools)")
        if text is None and not calls:
            raise BadRow(f"{where} has no content")
        msg["content"] = text if text is not None else ""
        if calls:
            msg["tool_calls"] = calls
        reasoning = reasoning or raw.get("reasoning_content") or raw.get("thinking") or raw.get("reasoning")
        if isinstance(reasoning, str) and reasoning.strip():
            msg["reasoning_content"] = reasoning
        for k in ("name", "tool_call_id"):
            if isinstance(raw.get(k), str):
                msg[k] = raw[k]
        weight = raw.get("loss_weight", raw.get("weight", raw.get("train")))
        if role == "assistant" and weight is not None and not weight:  # axolotl `weight`, LLaMA-Factory v1
            msg["train"] = False
        out.append(msg)
    return out


def _trim_to_last_answer(msgs: list[dict], key: str, notes: list[str]) -> list[dict]:
    """Up to the last assistant turn: trailing user/tool turns have nothing to learn from (counted)."""
    end = len(msgs)
    while end and msgs[end - 1]["role"] != "assistant":
        end -= 1
    if end == 0:
        raise BadRow(f"no assistant message in '{key}' (nothing to train on)")
    if end < len(msgs):
        notes.append("trailing turns after the last assistant message (not trained)")
    last = msgs[end - 1]
    if not last["content"].strip() and not last.get("tool_calls"):
        raise BadRow(f"empty response: the last assistant message in '{key}' is blank")
    if all(m.get("train") is False for m in msgs[:end] if m["role"] == "assistant"):
        raise BadRow(f"every assistant message in '{key}' has loss weight 0 (nothing to train on)")
    return msgs[:end]


def _blank_turns(msgs: list[dict], notes: list[str]) -> list[dict]:
    """An empty assistant turn in the middle (axolotl's missing-turn fixture) is kept, untrained."""
    for m in msgs[:-1]:
        if m["role"] == "assistant" and not m["content"].strip() and not m.get("tool_calls"):
            if m.get("train") is not False:
                m["train"] = False
                notes.append("blank assistant turn (kept in context, not trained)")
    return msgs


# ---------------------------------------------------------------------------------------- normalisers


def _conversation(msgs: list[dict], tools=None) -> dict:
    return {"messages": msgs, "tools": tools}


def norm_chat(rec: dict, notes: list[str]) -> dict:
    key = "messages" if "messages" in rec else "conversations"
    msgs = messages(rec.get(key), key, notes)
    if not msgs:
        raise BadRow(f"field '{key}' is an empty conversation")
    if isinstance(rec.get("system"), str) and rec["system"].strip() and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": rec["system"]})  # LLaMA-Factory sharegpt `system` column
    msgs = _blank_turns(_trim_to_last_answer(msgs, key, notes), notes)
    return _conversation(msgs, tools_list(rec.get("tools")))


def _history(rec: dict) -> list[dict]:
    hist = _maybe_json(rec.get("history"))
    if is_blank(hist):
        return []
    if not isinstance(hist, list):
        raise BadRow(f"field 'history' must be a list of [instruction, response] pairs, got {type_name(hist)}")
    out = []
    for i, pair in enumerate(hist, 1):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise BadRow(f"history[{i}] must be a pair of strings [instruction, response]")
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return out


def norm_alpaca(rec: dict, notes: list[str]) -> dict:
    instruction = _string(rec, "instruction", what="instruction")
    if "instances" in rec and "output" not in rec:  # Self-Instruct seed tasks: instruction + instances
        inst = _maybe_json(rec["instances"])
        if not isinstance(inst, list) or not inst or not isinstance(inst[0], dict):
            raise BadRow("field 'instances' must be a non-empty list of {input, output}")
        if len(inst) > 1:
            notes.append("extra Self-Instruct instances (only the first is trained)")
        extra, output = _string(inst[0], "input", required=False), _string(inst[0], "output", what="response")
    else:
        extra = _string(rec, "input", "context", required=False)  # Dolly's `context` is alpaca's `input`
        output = _string(rec, "output", "response", what="response")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction  # LLaMA-Factory/Stanford Alpaca join
    msgs = _history(rec) + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    system = rec.get("system")
    if isinstance(system, str) and system.strip():
        msgs.insert(0, {"role": "system", "content": system})
    return _conversation(msgs)


def norm_prompt_completion(rec: dict, notes: list[str]) -> dict:
    prompt_val = _maybe_json(next((rec[k] for k in PROMPT_KEYS if rec.get(k) is not None), None))
    completion_val = _maybe_json(next((rec[k] for k in COMPLETION_KEYS if rec.get(k) is not None), None))
    if isinstance(prompt_val, list):  # conversational prompt-completion (TRL)
        prompt = messages(prompt_val, "prompt", notes)
        completion = messages(completion_val, "completion", notes)
        return _conversation(
            _trim_to_last_answer(prompt + completion, "completion", notes), tools_list(rec.get("tools"))
        )
    prompt = _string(rec, *PROMPT_KEYS, what="prompt")
    completion = _string(rec, *COMPLETION_KEYS, what="response")
    msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    if isinstance(rec.get("system"), str) and rec["system"].strip():
        msgs.insert(0, {"role": "system", "content": rec["system"]})
    return _conversation(msgs)


def norm_text(rec: dict, notes: list[str]) -> dict:
    return {"text": _string(rec, "text", "content", "document", what="text")}


def norm_classification(rec: dict, notes: list[str]) -> dict:
    text = _string(rec, *TEXT_COLUMNS, what="text")
    key = next((k for k in LABEL_COLUMNS if k in rec), "label")
    label = rec.get(key)
    # Integer labels become their decimal string (True -> "1", 2.0 -> "2").
    if isinstance(label, (int, bool)) or (isinstance(label, float) and label.is_integer()):
        label = str(int(label))
    if label is None or (isinstance(label, str) and not label.strip()):
        raise BadRow(f"missing label: field '{key}' is blank")
    if not isinstance(label, str):
        raise BadRow(f"field '{key}' must be a string or an integer, got {type_name(label)}")
    return {"text": text, "label": label.strip()}


# Anthropic HH transcripts: "\n\nHuman: ...\n\nAssistant: ..." (hh-rlhf README).
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _hh_transcript(text: str) -> list[dict] | None:
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        return None
    return [
        {"role": "user" if who == "Human" else "assistant", "content": body}
        for who, body in zip(parts[1::2], parts[2::2])
    ]


def _answer(value, key: str, notes: list[str]) -> list[dict]:
    """A preference answer as messages: a string, one message, or a conversation."""
    value = _maybe_json(value)
    if value is None:
        raise BadRow(f"missing field '{key}'")
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if isinstance(value, dict):  # LLaMA-Factory ranking: chosen = {from, value}
        value = [value]
    msgs = messages(value, key, notes)
    if not msgs:
        raise BadRow(f"field '{key}' is an empty conversation")
    return msgs


def _split_implicit(chosen: list[dict], rejected: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """TRL's implicit prompt (trl.data_utils.extract_prompt): the longest common message prefix."""
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def norm_preference(rec: dict, notes: list[str]) -> dict:
    if "input" in rec and "preferred_output" in rec:  # OpenAI/Azure DPO fine-tuning layout
        inp = _maybe_json(rec["input"])
        if not isinstance(inp, dict) or "messages" not in inp:
            raise BadRow("field 'input' must be an object with 'messages' (OpenAI preference layout)")
        prompt = messages(inp["messages"], "input.messages", notes)
        chosen = _answer(rec.get("preferred_output"), "preferred_output", notes)
        rejected = _answer(rec.get("non_preferred_output"), "non_preferred_output", notes)
        tools = tools_list(inp.get("tools", rec.get("tools")))
    else:
        ck = "chosen_messages" if "chosen_messages" in rec and "chosen" not in rec else "chosen"
        rk = "rejected_messages" if "rejected_messages" in rec and "rejected" not in rec else "rejected"
        raw_c, raw_r = _maybe_json(rec.get(ck)), _maybe_json(rec.get(rk))
        prompt_val = _maybe_json(rec.get("prompt", rec.get("question", rec.get("conversations", rec.get("messages")))))
        tools = tools_list(rec.get("tools"))
        if prompt_val is None and isinstance(raw_c, str) and isinstance(raw_r, str):
            hc, hr = _hh_transcript(raw_c), _hh_transcript(raw_r)
            if hc is None or hr is None:
                raise BadRow("missing prompt: no 'prompt' field and chosen/rejected are not conversations")
            raw_c, raw_r = hc, hr
        chosen, rejected = _answer(raw_c, ck, notes), _answer(raw_r, rk, notes)
        if prompt_val is not None and _split_implicit(chosen, rejected)[0]:
            # UltraFeedback-binarized style: a prompt column AND chosen/rejected as whole conversations that
            # already start with it: the conversations' shared turns are the prompt (not repeated twice).
            prompt_val = None
        if isinstance(prompt_val, str):
            if not prompt_val.strip():
                raise BadRow("missing prompt: field 'prompt' is blank")
            prompt = [{"role": "user", "content": prompt_val}]
        elif isinstance(prompt_val, list):
            prompt = messages(prompt_val, "prompt", notes)
        elif prompt_val is None:
            prompt, chosen, rejected = _split_implicit(chosen, rejected)
        else:
            raise BadRow(f"field 'prompt' must be a string or a list of messages, got {type_name(prompt_val)}")
    if system := rec.get("system"):
        if isinstance(system, str) and (not prompt or prompt[0]["role"] != "system"):
            prompt = [{"role": "system", "content": system}] + prompt
    if not prompt:
        raise BadRow("missing prompt: the chosen and rejected answers share no prompt")
    blank = []
    for key, answer in (("chosen", chosen), ("rejected", rejected)):
        if answer[-1]["role"] != "assistant":
            raise BadRow(f"'{key}' does not end with an assistant message")
        if not answer[-1]["content"].strip() and not answer[-1].get("tool_calls"):
            blank.append(key)
    if len(blank) == 2:
        raise BadRow("empty response: both answers are blank")
    if blank:  # still a pair (the model learns to prefer ending the turn); published HH data has a few
        notes.append(f"blank {blank[0]} answer (only its end-of-turn token is scored)")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "tools": tools}


def norm_kto(rec: dict, notes: list[str]) -> dict:
    label = rec.get("label", rec.get("kto_tag"))
    if isinstance(label, str) and label.strip().lower() in ("true", "false"):
        label = label.strip().lower() == "true"
    if not isinstance(label, bool):
        raise BadRow(f"field 'label' must be true or false (desirable or not), got {type_name(label)}")
    if "messages" in rec or "conversations" in rec:
        conv = norm_chat(rec, notes)
        msgs = conv["messages"]
        cut = max(i for i, m in enumerate(msgs) if m["role"] != "assistant") + 1 if len(msgs) > 1 else 0
        if cut == 0:
            raise BadRow("missing prompt: the conversation starts with the assistant")
        return {"prompt": msgs[:cut], "completion": msgs[cut:], "label": label, "tools": conv["tools"]}
    conv = norm_prompt_completion(rec, notes)
    return {"prompt": conv["messages"][:-1], "completion": conv["messages"][-1:], "label": label, "tools": None}


NORMALISERS: dict[str, Callable[[dict, list[str]], dict]] = {
    "alpaca": norm_alpaca,
    "chat": norm_chat,
    "prompt_completion": norm_prompt_completion,
    "text": norm_text,
    "preference": norm_preference,
    "kto": norm_kto,
    "classification": norm_classification,
}


def normalise(record: dict, fmt: str) -> Normalised:
    """The canonical example of one record in format ``fmt``; BadRow when it cannot be trained on."""
    if all(is_blank(v) for v in record.values()):
        raise BadRow("empty row: every field is blank", empty=True)
    media = [k for k in MEDIA_FIELDS if not is_blank(record.get(k))]
    if media:
        raise BadRow(f"row has '{media[0]}': ftplan fine-tunes text-only models (multimodal rows are not trained)")
    notes: list[str] = []
    return Normalised(NORMALISERS[fmt](record, notes), notes)


# ------------------------------------------------------------------------------------------ detection


@dataclass(frozen=True)
class FormatRule:
    """A format matches a record that has one field of every group in ``required``."""

    name: str
    required: tuple[tuple[str, ...], ...]
    describe: str

    def matches(self, keys: set[str]) -> bool:
        return all(any(k in keys for k in group) for group in self.required)


# Priority order: the first rule matching most of the sampled records wins. Preference and KTO before
# chat (they hold message lists), alpaca before prompt/completion, classification before text.
FORMAT_RULES: tuple[FormatRule, ...] = (
    FormatRule("preference", (("chosen", "chosen_messages"), ("rejected", "rejected_messages")),
               "preference (prompt, chosen, rejected; or chosen/rejected conversations)"),
    FormatRule("preference", (("preferred_output",), ("non_preferred_output",)),
               "OpenAI preference (input, preferred_output, non_preferred_output)"),
    FormatRule("kto", (("messages", "conversations", "prompt"), ("label", "kto_tag")),
               "unpaired preference / KTO (messages or prompt+completion, boolean label)"),
    FormatRule("chat", (("messages", "conversations"),),
               "chat (messages: [{role, content}] or ShareGPT conversations: [{from, value}])"),
    FormatRule("alpaca", (("instruction",), ("output", "response", "instances")),
               "alpaca (instruction, input, output)"),
    FormatRule("prompt_completion", (PROMPT_KEYS, COMPLETION_KEYS),
               "prompt/completion (prompt, completion; or question, answer)"),
    FormatRule("classification", (TEXT_COLUMNS, LABEL_COLUMNS), "classification (text, label)"),
    FormatRule("text", (("text", "content", "document"),), "raw text (text)"),
)  # fmt: skip

# A task given by the user picks among formats the data fits equally well.
TASK_FORMAT = {
    "classification": "classification",
    "preference": "preference",
    "continued-pretraining": "text",
    "chat": "chat",
    "kto": "kto",
}


# Formats whose extra fields change what is learnt: they win over a task's preferred format.
PAIRED_FORMATS = ("preference", "kto")


def _is_kto(record: dict) -> bool:
    label = record.get("label", record.get("kto_tag"))
    return isinstance(label, bool) or (isinstance(label, str) and label.strip().lower() in ("true", "false"))


def _formats_of(record: dict) -> list[str]:
    """Every format whose rule the record fits, in priority order (KTO only with a boolean label)."""
    keys = set(record)
    fits = (r.name for r in FORMAT_RULES if r.matches(keys) and (r.name != "kto" or _is_kto(record)))
    return list(dict.fromkeys(fits))


def format_of(record: dict) -> str | None:
    """The format of one record (first matching rule), None when nothing matches."""
    return next(iter(_formats_of(record)), None)


def detect_format(records: list[dict], task: str | None = None) -> str | None:
    """The format most sampled records have (a task's format wins when half the records fit it)."""
    if not records:
        return None
    counts = Counter(name for rec in records for name in _formats_of(rec))
    half = len(records) / 2
    order = list(dict.fromkeys(r.name for r in FORMAT_RULES))
    best = max(order, key=lambda name: (counts.get(name, 0), -order.index(name)))
    if best in PAIRED_FORMATS and counts.get(best, 0) >= half:
        return best  # chosen/rejected or a desirability label are never trained as plain chat
    preferred = TASK_FORMAT.get(task or "")
    if preferred and counts.get(preferred, 0) >= half:
        return preferred
    return best if counts.get(best, 0) >= half else None


# Fields each format reads (anything else in a record is reported as not used).
FIELDS_READ: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "input", "context", "output", "response", "system", "history", "instances"),
    "chat": ("messages", "conversations", "system", "tools"),
    "prompt_completion": PROMPT_KEYS + COMPLETION_KEYS + ("system", "tools"),
    "text": ("text", "content", "document"),
    "preference": (
        "prompt",
        "question",
        "conversations",
        "messages",
        "chosen",
        "rejected",
        "chosen_messages",
        "rejected_messages",
        "input",
        "preferred_output",
        "non_preferred_output",
        "system",
        "tools",
    ),
    "kto": ("messages", "conversations", "prompt", "completion", "label", "kto_tag", "system", "tools"),
    "classification": TEXT_COLUMNS + LABEL_COLUMNS,
}


def unused_fields(fields, fmt: str) -> list[str]:
    """Columns of the file that the format does not read (reported, never ignored silently)."""
    read = set(FIELDS_READ.get(fmt, ()))
    if fmt == "classification":  # only the first text and label column present are read
        text = next((k for k in TEXT_COLUMNS if k in fields), None)
        label = next((k for k in LABEL_COLUMNS if k in fields), None)
        read = {text, label}
    return [f for f in fields if f not in read]


def describe_formats() -> str:
    return "; ".join(r.describe for r in FORMAT_RULES)


# ----------------------------------------------------------------------------------------- column map


def parse_columns(spec: str | dict | None) -> dict[str, str]:
    """``label=category,prompt=question`` (or a mapping) -> {canonical name: file column}."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = []
        for item in (p.strip() for p in spec.split(",")):
            if not item:
                continue
            name, sep, column = item.partition("=")
            if not sep or not name.strip() or not column.strip():
                raise FtplanError(f"--columns: '{item}' is not NAME=COLUMN", hint="e.g. --columns label=category")
            pairs.append((name.strip(), column.strip()))
    out = {}
    for name, column in pairs:
        if name not in COLUMN_NAMES:
            raise FtplanError(
                f"--columns: unknown name '{name}'", hint=f"map one of: {', '.join(COLUMN_NAMES)} (NAME=COLUMN)"
            )
        out[name] = str(column)
    return out


def map_columns(record: dict, columns: dict[str, str]) -> dict:
    """The record with the mapped file columns renamed to their canonical names (others kept)."""
    if not columns:
        return record
    out = dict(record)
    for name, column in columns.items():
        if column in record:
            out.pop(column, None)
            out[name] = record[column]
    return out


def suggest_columns(records: list[dict], task: str | None) -> str:
    """A --columns mapping that would make these columns a format of the task, when one is obvious."""
    if not records:
        return ""
    keys = list(dict.fromkeys(k for r in records[:50] for k in r))
    strings = [k for k in keys if all(isinstance(r.get(k), str) for r in records[:50] if k in r)]
    scalars = [k for k in keys if all(isinstance(r.get(k), (str, int, bool)) for r in records[:50] if k in r)]
    longest = sorted(strings, key=lambda k: -sum(len(r.get(k) or "") for r in records[:50]))
    if task == "classification" and len(scalars) >= 2 and longest:
        text = longest[0]
        label = next(k for k in scalars if k != text)
        return f"--columns text={text},label={label}"
    if task == "preference":  # which answer is the better one only the data's documentation says
        return "--columns prompt=COLUMN,chosen=BETTER_COLUMN,rejected=WORSE_COLUMN"
    if task == "continued-pretraining" and longest:
        return f"--columns text={longest[0]}"
    if len(longest) >= 2:
        return f"--columns prompt={longest[1]},completion={longest[0]}"
    return ""


# ----------------------------------------------------------------------------------- task shapes

# The task a format trains by default (``ftplan profile`` without --task).
DEFAULT_TASK = {
    "alpaca": "sft",
    "chat": "chat",
    "prompt_completion": "sft",
    "text": "continued-pretraining",
    "preference": "preference",
    "kto": "kto",
    "classification": "classification",
}


def shape_for_task(example: dict, fmt: str, task: str, classification_mode: str = "generate") -> dict:
    """The canonical example in the shape the task trains: classification rows become a one-turn chat
    (user: text, assistant: label) for sft/chat and for classification by generation."""
    if fmt == "classification" and (task in ("sft", "chat") or classification_mode != "head"):
        return {
            "messages": [
                {"role": "user", "content": example["text"]},
                {"role": "assistant", "content": example["label"]},
            ],
            "tools": None,
            "label": example["label"],
        }
    return example
