"""Small fixtures in every layout published fine-tuning data uses, written from each format's documentation
(LLaMA-Factory data/README.md, OpenAI fine-tuning and DPO guides, TRL "Dataset formats", Anthropic hh-rlhf
README, Stanford Alpaca / Self-Instruct, GLUE/Banking77 column layouts). Not copies of their files.

``LAYOUTS[name] = Layout(task, format, rows, columns)``: the task a user would pick, the format ftplan must
detect, the rows, and the --columns mapping the layout needs (None when detection alone works).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
BARE_TOOLS = json.dumps([t["function"] for t in TOOLS])  # LLaMA-Factory: a JSON string of bare schemas


@dataclass(frozen=True)
class Layout:
    task: str
    format: str
    rows: list[dict]
    columns: dict[str, str] = field(default_factory=dict)
    has_system: bool = False  # some row has a system turn (templates without one refuse it)
    alternates: bool = True  # every row alternates user/assistant strictly


def _qa(i: int) -> tuple[str, str]:
    return f"What is {i} plus {i + 1}?", f"{i} plus {i + 1} is {2 * i + 1}."


LAYOUTS: dict[str, Layout] = {
    "alpaca": Layout(
        "sft",
        "alpaca",
        [
            {"instruction": q, "input": "" if i % 2 else "Show your work.", "output": a}
            for i, (q, a) in enumerate(_qa(i) for i in range(6))
        ],
    ),
    "alpaca_system_history": Layout(
        "sft",
        "alpaca",
        [
            {
                "instruction": q,
                "input": "",
                "output": a,
                "system": "You are a maths tutor.",
                "history": [["Hello", "Hi! Ask me a sum."]],
            }
            for q, a in (_qa(i) for i in range(5))
        ],
        has_system=True,
    ),
    "self_instruct": Layout(
        "sft",
        "alpaca",
        [
            {"id": f"seed_{i}", "instruction": q, "instances": [{"input": "", "output": a}], "is_classification": False}
            for i, (q, a) in enumerate(_qa(i) for i in range(5))
        ],
    ),
    "instruction_response": Layout(
        "sft", "alpaca", [{"instruction": q, "response": a} for q, a in (_qa(i) for i in range(5))]
    ),
    "sharegpt": Layout(
        "chat",
        "chat",
        [
            {
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": q},
                    {"from": "gpt", "value": a},
                    {"from": "human", "value": "Thanks!"},
                    {"from": "gpt", "value": "You are welcome."},
                ]
            }
            for q, a in (_qa(i) for i in range(5))
        ],
        has_system=True,
    ),
    "sharegpt_tools": Layout(
        "chat",
        "chat",
        [
            {
                "conversations": [
                    {"from": "human", "value": f"Weather in city {i}?"},
                    {
                        "from": "function_call",
                        "value": json.dumps({"name": "get_weather", "arguments": {"city": f"c{i}"}}),
                    },
                    {"from": "observation", "value": json.dumps({"temp": 20 + i})},
                    {"from": "gpt", "value": f"It is {20 + i} degrees."},
                ],
                "tools": BARE_TOOLS,
            }
            for i in range(5)
        ],
        alternates=False,
    ),
    "openai_chat": Layout(
        "chat",
        "chat",
        [
            {
                "messages": [
                    {"role": "system", "content": "You solve sums."},
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a},
                ]
            }
            for q, a in (_qa(i) for i in range(6))
        ],
        has_system=True,
    ),
    "openai_tools": Layout(
        "chat",
        "chat",
        [
            {
                "messages": [
                    {"role": "user", "content": f"Weather in city {i}?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": f"call_{i}",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": json.dumps({"city": f"c{i}"})},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps({"temp": 20 + i})},
                    {"role": "assistant", "content": f"It is {20 + i} degrees."},
                ],
                "tools": TOOLS,
            }
            for i in range(4)
        ]
        + [  # a row whose answer is only a tool call (no content), as OpenAI's samples have
            {
                "messages": [
                    {"role": "user", "content": "Weather in Oslo?"},
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "c",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                            }
                        ],
                    },
                ],
                "tools": TOOLS,
            }
        ],
        alternates=False,
    ),
    "content_parts": Layout(
        "chat",
        "chat",
        [
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "value": q}]},
                    {"role": "assistant", "content": [{"type": "text", "text": a}]},
                ]
            }
            for q, a in (_qa(i) for i in range(5))
        ],
    ),
    "dolly": Layout(
        "sft",
        "alpaca",
        [{"instruction": q, "context": "Numbers are added digit by digit.", "response": a, "category": "open_qa"}
         for q, a in (_qa(i) for i in range(5))],
    ),
    "prompt_response": Layout(
        "sft", "prompt_completion", [{"prompt": q, "response": a} for q, a in (_qa(i) for i in range(5))]
    ),
    "preference_ultrafeedback": Layout(
        "preference",
        "preference",
        [
            {"prompt": q, "prompt_id": str(i),
             "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
             "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": "Eleven."}],
             "score_chosen": 9.0, "score_rejected": 2.0}
            for i, (q, a) in enumerate(_qa(i) for i in range(5))
        ],
    ),
    "prompt_completion": Layout(
        "sft", "prompt_completion", [{"prompt": q, "completion": " " + a} for q, a in (_qa(i) for i in range(5))]
    ),
    "question_answer": Layout(
        "sft", "prompt_completion", [{"question": q, "answer": a} for q, a in (_qa(i) for i in range(5))]
    ),
    "text": Layout(
        "continued-pretraining",
        "text",
        [
            {"text": f"Document {i}. " + "The river runs to the sea and the sea is never full. " * (i + 1)}
            for i in range(6)
        ],
    ),
    "preference_explicit": Layout(
        "preference",
        "preference",
        [{"prompt": q, "chosen": a, "rejected": "I do not know."} for q, a in (_qa(i) for i in range(5))],
    ),
    "preference_implicit": Layout(
        "preference",
        "preference",
        [
            {
                "chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": "No idea."}],
            }
            for q, a in (_qa(i) for i in range(5))
        ],
    ),
    "preference_sharegpt": Layout(
        "preference",
        "preference",
        [
            {
                "conversations": [{"from": "human", "value": q}],
                "chosen": {"from": "gpt", "value": a},
                "rejected": {"from": "gpt", "value": "Maybe seven."},
            }
            for q, a in (_qa(i) for i in range(5))
        ],
    ),
    "preference_openai": Layout(
        "preference",
        "preference",
        [
            {
                "input": {"messages": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": q}]},
                "preferred_output": [{"role": "assistant", "content": a}],
                "non_preferred_output": [{"role": "assistant", "content": "Roughly ten."}],
            }
            for q, a in (_qa(i) for i in range(5))
        ],
        has_system=True,
    ),
    "preference_hh": Layout(
        "preference",
        "preference",
        [
            {"chosen": f"\n\nHuman: {q}\n\nAssistant: {a}", "rejected": f"\n\nHuman: {q}\n\nAssistant: Go away."}
            for q, a in (_qa(i) for i in range(5))
        ],
    ),
    "classification_category": Layout(
        "classification",
        "classification",
        [
            {
                "text": f"my card {w} arrived" if i % 2 else f"the app {w} crashed",
                "category": "card" if i % 2 else "app",
            }
            for i, w in enumerate(["never", "has", "still", "not", "finally", "just"])
        ],
    ),
    "classification_mapped": Layout(
        "classification",
        "classification",
        [{"utterance": f"refund number {i} please", "intent": "refund" if i % 2 else "other"} for i in range(6)],
        columns={"text": "utterance", "label": "intent"},
    ),
}

# Layouts that must be refused in one line for the task a user would try, with a word the message must say.
REFUSED: dict[str, tuple[str, list[dict], str]] = {
    "kto": (
        "chat",
        [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "label": i % 2 == 0}
            for i, (q, a) in enumerate(_qa(i) for i in range(4))
        ],
        "KTO",
    ),
    "multimodal": (
        "chat",
        [
            {
                "messages": [
                    {"role": "user", "content": "<image>Who is this?"},
                    {"role": "assistant", "content": "A cat."},
                ],
                "images": ["img/1.jpg"],
            }
            for _ in range(3)
        ],
        "text-only",
    ),
    "unmapped_classification": ("classification", [{"utterance": "hi", "intent": "greet"}] * 3, "--columns"),
}


def write_rows(path: Path, rows: list[dict]) -> Path:
    """The rows as a JSONL file."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
