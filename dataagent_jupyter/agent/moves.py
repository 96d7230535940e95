"""The model's next move in agent mode, read from a tool call or from plain text.

Two dialects, one result. With tool calling the model calls ``run_python(code)``,
``describe_frame(name)`` or ``list_frames()``, and answers without a call when it is done.
Endpoints without tool calling get plain messages: an answer holding a ```python block is
a step, and an answer without one is the final summary. An answer with a code block and
no tool call is a step in either dialect, since some models ignore the tools they are
offered.

Everything here is parsed strictly: tool arguments are model output, so a call with
bad JSON, a missing argument or an unknown name becomes a :class:`BadMove` that is
shown to the model (it can correct itself), never an exception from inside the loop.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ..code import CodeProblem, extract_code
from ..llm import ChatResponse, ToolCall

#: A fence opening a Python block (``` or ~~~, tagged python/py or untagged).
_PYTHON_FENCE = re.compile(r"^[ \t]{0,3}(`{3,}|~{3,})[ \t]*(python3?|py|ipython3?)?[ \t]*$", re.M)

TOOLS: tuple[dict[str, Any], ...] = (
    {
        "type": "function",
        "function": {
            "name": "run_python",
            "description": "Run Python code in the sandboxed analysis kernel, which holds "
            "copies of the user's frames and keeps variables between steps. Returns what "
            "the code printed, a summary of `result` and of any chart, or the error.",
            "parameters": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "description": "The Python code of this step."}
                },
                "required": ["code"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "describe_frame",
            "description": "Describe one of the user's frames: shape, dtypes, statistics and "
            "(unless privacy forbids) a few sample rows.",
            "parameters": {
                "type": "object",
                "properties": {"name": {"type": "string", "description": "The frame's name."}},
                "required": ["name"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "list_frames",
            "description": "List the frames available, with their shapes.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
)


@dataclass(frozen=True)
class RunStep:
    """Run ``code`` as the next step; ``explanation`` is what the model said with it."""

    code: str
    explanation: str = ""
    call: ToolCall | None = None


@dataclass(frozen=True)
class DescribeFrame:
    """Describe the frame ``name`` (no code runs)."""

    name: str
    call: ToolCall


@dataclass(frozen=True)
class ListFrames:
    """List the frames (no code runs)."""

    call: ToolCall


@dataclass(frozen=True)
class Finish:
    """The model is done: ``summary`` is its Markdown summary of the findings."""

    summary: str


@dataclass(frozen=True)
class BadMove:
    """An unusable call or code block; ``reason`` goes back to the model."""

    reason: str
    call: ToolCall | None = None


Move = RunStep | DescribeFrame | ListFrames | Finish | BadMove


def read_moves(response: ChatResponse) -> list[Move]:
    """The moves in one answer, in order (a model may call several tools at once)."""
    if response.tool_calls:
        return [_tool_move(call) for call in response.tool_calls]
    text = response.text
    if not _PYTHON_FENCE.search(text):
        return [Finish(text.strip())]
    try:
        extracted = extract_code(text)
    except CodeProblem as problem:
        return [BadMove(f"{problem}; send the whole step again as one ```python block")]
    return [RunStep(extracted.code, extracted.explanation)]


def _tool_move(call: ToolCall) -> Move:
    known = {tool["function"]["name"] for tool in TOOLS}
    if call.name not in known:
        return BadMove(f"there is no tool {call.name[:60]!r}; use {', '.join(sorted(known))}", call)
    try:
        args = json.loads(call.arguments or "{}")
    except (ValueError, RecursionError):
        return BadMove("the arguments are not valid JSON", call)
    if not isinstance(args, dict):
        return BadMove("the arguments must be a JSON object", call)
    if call.name == "list_frames":
        return ListFrames(call)
    if call.name == "describe_frame":
        name = args.get("name")
        if not isinstance(name, str) or not name:
            return BadMove("describe_frame needs a 'name' string", call)
        return DescribeFrame(name, call)
    code = args.get("code")
    if not isinstance(code, str) or not code.strip():
        return BadMove("run_python needs a non-empty 'code' string", call)
    try:
        compile(code, "<step>", "exec")
    except (SyntaxError, ValueError) as exc:
        where = f" on line {exc.lineno}" if isinstance(exc, SyntaxError) and exc.lineno else ""
        message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        return BadMove(f"the code does not parse: {message}{where}", call)
    return RunStep(code.strip() + "\n", "", call)
