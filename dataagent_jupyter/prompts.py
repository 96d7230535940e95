"""The messages sent to the model: rules, frame descriptions, recent turns, the question.

Layout, chosen so that answers are good and requests repeat exactly (cache, replay):
``system`` rules (stable), then earlier turns as user/assistant pairs (oldest dropped
first to fit the budget), then one ``user`` message holding the current frame
descriptions and the question. Frames go last because they may have changed since the
earlier turns; the model should read their current state.
"""

from __future__ import annotations

import builtins
import importlib.util
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .engines import ENGINE_BY_NAME
from .events import Mode
from .frames import FrameDescription
from .tokens import estimate_message_tokens


@dataclass(frozen=True)
class PastTurn:
    """What a follow-up needs of an earlier turn: question, code and a short outcome."""

    question: str
    code: str
    outcome: str


def available_libraries() -> list[str]:
    """Libraries the generated code may import, as the model should hear them."""
    libs = [f"pandas {pd.__version__} (as pd)", "numpy (as np)", "matplotlib.pyplot (as plt)"]
    for name, label in (
        ("seaborn", "seaborn (as sns)"),
        ("scipy", "scipy"),
        ("statsmodels", "statsmodels"),
        ("sklearn", "scikit-learn"),
    ):
        if importlib.util.find_spec(name) is not None:
            libs.append(label)
    return libs


def engine_rules(descriptions: Sequence[FrameDescription]) -> list[str]:
    """For frames of other engines: which variable is what (engine and version), and how
    to write code for it, so the answer stays in that engine and its results stay small."""
    by_engine: dict[str, list[FrameDescription]] = {}
    for d in descriptions:
        if d.engine in ENGINE_BY_NAME:
            by_engine.setdefault(d.engine, []).append(d)
    if not by_engine:
        return []
    lines = []
    for name, frames in by_engine.items():
        engine = ENGINE_BY_NAME[name]
        which = ", ".join(f"`{d.name}` is a {d.kind}" for d in frames)
        lines.append(f"{which} ({engine.title} {engine.version()}). {engine.rules()}")
    lines.append(
        "These frames may be far larger than memory: leave in `result` a small computed "
        "value (a collected or computed table of at most a few thousand rows, a number, a "
        "string or a figure), never a lazy query or the whole data."
    )
    return lines


def system_prompt(
    names: Sequence[str],
    mode: Mode,
    rules: str = "",
    descriptions: Sequence[FrameDescription] = (),
    notes: Sequence[str] = (),
) -> str:
    """The rules: which names exist, which libraries, the shape of an answer, ``result``.

    ``rules`` are the user's house rules (``rules.py``); without any the prompt is the
    same as it always was, so earlier cache entries and transcripts still match. Frames of
    other engines add their engine's rules (:func:`engine_rules`).
    """
    where = (
        "The code will run in a separate, sandboxed Python kernel that holds copies of "
        "these variables; it has no network and cannot read the user's files. Each question "
        "starts in a fresh kernel: variables from earlier answers do not exist, so compute "
        "again what you need."
        if mode == "run"
        else "The code will be inserted as a new notebook cell for the user to review and run."
    )
    listed = ", ".join(names) if names else "(none were given)"
    standing = (
        [
            "The user's standing instructions (house rules) follow; obey them unless the "
            "question explicitly says otherwise:",
            rules.strip(),
        ]
        if rules.strip()
        else []
    )
    return "\n".join(
        [
            "You are a careful data analyst writing Python in a Jupyter notebook.",
            f"The user's data is already loaded in these variables: {listed}. Use only these "
            "names for data; never load files, fetch URLs or invent data.",
            f"Available libraries: {', '.join(available_libraries())}. Import what you use.",
            where,
            "Answer with one or two sentences explaining the approach, then exactly one "
            "```python code block.",
            "Rules for the code:",
            "- Never modify the given variables in place and never reassign them; work on a copy "
            "(e.g. `df = sales.copy()`) when you need to change data.",
            "- Leave the final answer in a variable named `result` (a DataFrame, Series, number, "
            "string or matplotlib Figure) and end the code with a line holding just `result`.",
            "- For a chart, draw with matplotlib (`fig, ax = plt.subplots()`), give it a title and "
            "axis labels, and set `result` to the table or figure the chart shows.",
            "- Keep it short and readable; handle missing values explicitly; do not use input().",
            *standing,
            *engine_rules(descriptions),
            *notes,
        ]
    )


def question_message(question: str, descriptions: Sequence[FrameDescription]) -> str:
    """The final user message: the frames as they are now, then the question."""
    if descriptions:
        frames = "\n\n".join(d.text for d in descriptions)
        return f"Data available:\n\n{frames}\n\nQuestion: {question.strip()}"
    return f"Question: {question.strip()}"


def past_turn_messages(turn: PastTurn) -> list[dict[str, str]]:
    answer = (
        f"```python\n{turn.code.strip()}\n```\nOutcome: {turn.outcome}"
        if turn.code
        else f"Outcome: {turn.outcome}"
    )
    return [
        {"role": "user", "content": turn.question.strip()},
        {"role": "assistant", "content": answer},
    ]


def build_messages(
    question: str,
    descriptions: Sequence[FrameDescription],
    history: Sequence[PastTurn],
    *,
    mode: Mode,
    max_history_turns: int,
    history_budget_tokens: int,
    rules: str = "",
    notes: Sequence[str] = (),
) -> list[dict[str, str]]:
    """All messages for one question; earlier turns trimmed to the count and the budget.

    ``notes`` are extra rules for this question (a frame replaced by a sample for a run).
    """
    names = [d.name for d in descriptions]
    messages = [
        {"role": "system", "content": system_prompt(names, mode, rules, descriptions, notes)}
    ]
    kept: list[list[dict[str, str]]] = []
    used = 0
    recent = list(history)[-max_history_turns:] if max_history_turns > 0 else []
    for turn in reversed(recent):  # newest first, so the budget drops the oldest
        pair = past_turn_messages(turn)
        cost = estimate_message_tokens(pair)
        if used + cost > history_budget_tokens:
            break
        kept.append(pair)
        used += cost
    for pair in reversed(kept):
        messages.extend(pair)
    messages.append({"role": "user", "content": question_message(question, descriptions)})
    return messages


def retry_no_code_message(reason: str) -> str:
    """Sent once when the answer had no usable code."""
    return (
        f"I could not use your answer: {reason}. Answer again with a one-sentence "
        "explanation and exactly one complete ```python code block."
    )


def fix_message(traceback: str) -> str:
    """Sent in run mode when the code raised: the trimmed traceback, asking for a fix."""
    return (
        "Running that code raised an error:\n```\n" + traceback.strip() + "\n```\n"
        "Fix the code. Answer again with a one-sentence explanation of the fix and one "
        "complete ```python code block (the whole code, not a diff)."
    )


# What privacy='schema' lets through of a traceback (see schema_traceback).
_CELL_FRAME = re.compile(r"^Cell In ?\[\d+\], line (\d+)")
_LIB_FRAME = re.compile(r"^File (site-packages/[\w./-]+\.py|<[\w-]+>):(\d+)(?:, in (\w+))?$")
_LIB_FRAME_OLD = re.compile(r"^File (site-packages/[\w./-]+\.py), line (\d+)(?:, in (\w+))?")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_CHAIN_LINES = (
    "The above exception was the direct cause of the following exception:",
    "During handling of the above exception, another exception occurred:",
)
_EXCEPTION_SUFFIXES = ("Error", "Exception", "Warning", "Exit", "Interrupt", "Iteration")


def _is_exception_name(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    builtin = getattr(builtins, last, None)
    return (isinstance(builtin, type) and issubclass(builtin, BaseException)) or last.endswith(
        _EXCEPTION_SUFFIXES
    )


def schema_traceback(traceback: str, code: str, *, ename: str = "") -> str:
    """A traceback for privacy='schema': exception types, line numbers, the failing lines.

    An exception message may quote cell values ("could not convert 'Alice'"), over several
    lines, and a chained exception carries its own. So nothing of the traceback text is
    passed on except what is checked to be structure: exception class names, library
    frame locations and line numbers of the generated code, whose lines are taken from
    ``code`` itself (the model wrote them), never from the traceback.
    """
    lines = code.splitlines()
    out = ["(privacy='schema': exception messages are withheld; the types and lines follow)"]
    types = 0
    for raw in traceback.splitlines():
        line = raw.strip()
        if not line or raw[:1].isspace():
            continue  # source context, or the continuation of a message
        if line in _CHAIN_LINES:
            out.append(line)
        elif m := _CELL_FRAME.match(line):
            number = int(m.group(1))
            if 1 <= number <= len(lines):
                out.append(f"  at line {number} of the code: {lines[number - 1].strip()}")
        elif m := _LIB_FRAME.match(line) or _LIB_FRAME_OLD.match(line):
            where = f"  in {m.group(1)}, line {m.group(2)}"
            out.append(where + (f", in {m.group(3)}" if m.group(3) else ""))
        elif (m := _EXCEPTION.match(line)) and _is_exception_name(m.group(1)):
            out.append(m.group(1))
            types += 1
    if not types and ename and _is_exception_name(ename):
        out.append(ename)
    return "\n".join(out)


def outcome_summary(
    value_repr: str | None, *, error: str | None = None, inserted: bool = False
) -> str:
    """A one-line outcome for the history sent with follow-ups."""
    if error:
        return f"failed: {error[:200]}"
    if inserted:
        return "proposed as a notebook cell for the user to run"
    return f"ran ok; result = {value_repr[:200]}" if value_repr else "ran ok"


def fix_cell_message(source: str, report: str) -> str:
    """The question of ``%dataagent fix``: the user's failing cell and its error."""
    return (
        "This cell of mine failed:\n```python\n"
        + source.strip()
        + "\n```\n"
        + report.strip()
        + "\nStart with one sentence naming the cause. Then give the whole corrected cell in "
        "one ```python block: keep what the cell was meant to do and change only what is "
        "needed to fix it."
    )
