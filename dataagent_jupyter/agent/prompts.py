"""The messages of agent mode: the rules for working in steps, and the step-result turns.

The frame descriptions and the question go in the first user message exactly as in the
other modes (:func:`dataagent_jupyter.prompts.question_message`), so the same privacy
level applies to them. What changes is the system message (work in steps, keep state,
finish with a summary) and, in the plain-message dialect, how a step's outcome comes back.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..prompts import available_libraries


def agent_system_prompt(
    names: Sequence[str], *, tools: bool, max_steps: int, notes: Sequence[str] = ()
) -> str:
    """The rules of agent mode; ``tools`` says whether the model may call functions.

    ``notes`` are the question's frame sentences (a polars or DuckDB frame's API, a pandas
    sample standing in for a Dask or Spark frame); without any the prompt is unchanged.
    """
    listed = ", ".join(names) if names else "(none were given)"
    if tools:
        how = [
            "Work in steps. Each step calls the tool run_python with the code of that step; "
            "you get back what it printed, a summary of `result` and of any chart, or the "
            "error. describe_frame and list_frames tell you about the data without running "
            "code.",
            "When you have the answer, reply WITHOUT calling a tool: that reply is the final "
            "summary.",
        ]
    else:
        how = [
            "Work in steps. Each step is one answer holding a sentence on what you check "
            "next and exactly one ```python code block; it is run and its outcome comes back "
            "as the next message.",
            "When you have the answer, reply WITHOUT any code block: that reply is the final "
            "summary.",
        ]
    return "\n".join(
        [
            "You are a careful data analyst investigating a question in a Jupyter notebook.",
            f"The user's data is already loaded in these variables: {listed}. Use only these "
            "names for data; never load files, fetch URLs or invent data.",
            f"Available libraries: {', '.join(available_libraries())}. Import what you use.",
            "The code runs in a separate, sandboxed Python kernel that holds copies of these "
            "variables and keeps your variables from one step to the next; it has no network "
            "and cannot read the user's files.",
            *how,
            f"You have at most {max_steps} steps: start with a short plan (one line per step), "
            "look at each outcome before going on, and fix a step that failed or gave a "
            "suspicious result (the outcome says when a result is empty, all missing, or a "
            "merge multiplied rows).",
            "Rules for the code:",
            "- Never modify the given variables in place and never reassign them; work on a copy.",
            "- Leave each step's answer in a variable named `result` (a DataFrame, Series, "
            "number, string or matplotlib Figure) and end the step with a line holding just "
            "`result`.",
            "- For a chart, draw with matplotlib (`fig, ax = plt.subplots()`), with a title and "
            "axis labels; the user sees it, you get its title, labels and what is drawn.",
            "- Each step must make sense on its own when read as a notebook cell.",
            *notes,
            "The final summary is Markdown for the user: the findings with the numbers that "
            "support them, in a few short paragraphs or bullets; no code.",
        ]
    )


def step_result_message(step_text: str) -> str:
    """The user message carrying a step's outcome back (plain-message dialect)."""
    return (
        f"{step_text}\n\nGo on with the next step (one ```python block), or, if you have the "
        "answer, reply with the final summary and no code block."
    )


def bad_move_message(reason: str) -> str:
    """Sent when an answer could not be used as a step."""
    return f"That step could not be run: {reason}."


def budget_summary(ended_by: str, explanations: Sequence[str], steps: Sequence[str]) -> str:
    """The summary when a budget ran out: no further request (it might not be affordable),
    so it is assembled from what the model said and what each step gave."""
    lines = [f"**Stopped early: {ended_by}.** What was found so far:", ""]
    said = [text.strip() for text in explanations if text.strip()]
    if said:
        lines.extend([said[-1], ""])
    lines.extend(f"- {line}" for line in steps)
    if not steps:
        lines.append("- no step ran.")
    return "\n".join(lines).strip()
