"""Small building blocks of the chat widget: outputs, boxes and the messages' HTML.

Answers go in ``Output`` widgets: setting an ``Output``'s ``outputs`` works from any
thread. The front end trusts an ``Output`` widget's content, so model text reaches it only
as HTML made by ``sanitize.markdown_bundle``, and every other bundle passes
``sanitize.clean_output`` (:func:`markdown_output`, :func:`bundle_output`: the one way
in). Text the user typed goes through ``html.escape``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import ipywidgets as widgets

from .. import errors
from ..cell_output import PHASES
from ..events import Done, Event, Failed, Status
from ..frames import FrameInfo
from ..sanitize import clean_output, markdown_bundle


def markdown_output(text: str) -> dict[str, Any]:
    """An output (for ``Output.outputs``) showing untrusted Markdown as cleaned HTML."""
    return {"output_type": "display_data", "data": markdown_bundle(text), "metadata": {}}


def bundle_output(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A MIME bundle as an ``Output`` output, cleaned (new dicts: the caller's stay its own)."""
    clean, meta = clean_output(data, metadata)
    return {"output_type": "display_data", "data": clean, "metadata": meta}


def fenced(code: str, language: str = "python") -> str:
    """``code`` as a Markdown code block whose fence no backtick run in the code can close."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{language}\n{code.rstrip()}\n{ticks}"


def error_output(error: errors.DataAgentError) -> dict[str, Any]:
    """The error's title, message and hint, rich where the front end can, plain elsewhere."""
    plain = f"{error.title}: {error.message}" + (f"\n{error.hint}" if error.hint else "")
    return bundle_output(
        {
            "text/html": error._repr_html_(),
            "text/markdown": error._repr_markdown_(),
            "text/plain": plain,
        }
    )


def as_user_error(exc: BaseException) -> errors.DataAgentError:
    """``exc`` as the one message a user reads (a bug gets a message that says so)."""
    if isinstance(exc, errors.DataAgentError):
        return exc
    return errors.DataAgentError(
        f"the chat widget failed: {type(exc).__name__}: {exc}",
        hint="This is a bug in the Data Agent; the details are in the 'dataagent_jupyter' "
        "log at DEBUG level. The conversation and your notebook are unaffected.",
    )


def frame_label(info: FrameInfo) -> str:
    """How the frame picker lists a frame: name, kind and shape."""
    shape = " × ".join("? rows" if n is None else f"{n:,}" for n in info.shape)
    return f"{info.name}  ({info.kind}, {shape})"


def walk(widget: Any) -> Iterator[Any]:
    """``widget`` and every widget under it, depth first (to close them all)."""
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from walk(child)


def vbox(*classes: str, **layout: str) -> widgets.VBox:
    """A vertical box with CSS classes (tests and the labextension find parts by class)."""
    box = widgets.VBox(layout=widgets.Layout(**layout))
    for name in classes:
        box.add_class(name)
    return box


def append(box: widgets.Box, *children: widgets.Widget) -> None:
    """Add children to a box (a widget's children are an immutable tuple)."""
    box.children = (*box.children, *children)


def user_message(question: str) -> widgets.HTML:
    """The user's question as typed: escaped (it is not Markdown), line breaks kept."""
    user = widgets.HTML(
        '<div style="white-space:pre-wrap;padding:4px 8px;border-radius:4px;'
        'background:var(--jp-layout-color2,#eeeeee)">'
        f"{html.escape(question)}</div>"
    )
    user.add_class("dataagent-chat-user")
    return user


def note_html(text: str, *, colour: str = "var(--jp-ui-font-color2, #616161)") -> str:
    """A small line of already-escaped HTML (status, hints)."""
    return f'<div style="font-size:0.9em;color:{colour}">{text}</div>'


def status_line(event: Event, elapsed: float) -> tuple[str, str] | None:
    """The status line (text, tone) an event calls for, or None; ``elapsed`` since Send.

    One wording for the chat and an agent run shown in its cell: phase and seconds while
    it works, what came of it at the end.
    """
    if isinstance(event, Status):
        label = PHASES.get(event.phase, event.phase)
        detail = f" {event.message}" if event.message else ""
        attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
        return f"{label}{detail}{attempt} · {elapsed:.0f} s", "busy"
    if isinstance(event, Done):
        tokens = ""
        if event.usage.prompt_tokens or event.usage.completion_tokens:
            tokens = f" · {event.usage.prompt_tokens:,} → {event.usage.completion_tokens:,} tokens"
        cached = " · from cache" if event.cached else ""
        what = "Ran the code" if event.outcome == "ran" else "Answered"
        if event.mode == "agent":
            ended = f" ({event.ended_by})" if event.ended_by else ""
            what = f"Analysed in {event.steps} step(s){ended}"
        return f"{what} in {event.elapsed:.1f} s · {event.model}{tokens}{cached}", "ok"
    if isinstance(event, Failed):
        if isinstance(event.error, errors.Cancelled):
            return f"Stopped after {event.elapsed:.1f} s.", "idle"
        return f"{event.error.title} after {event.elapsed:.1f} s.", "error"
    return None


def status_html(text: str, tone: str = "busy") -> str:
    """A status line: plain ``text`` (escaped here) in the colour of its tone."""
    colour, icon = {
        # no icon while busy: an hourglass emoji is missing from many UI fonts
        "busy": ("var(--jp-brand-color1, #1565c0)", ""),
        "ok": ("var(--jp-success-color1, #2e7d32)", "✓"),
        "error": ("var(--jp-error-color1, #c62828)", "✗"),
        "idle": ("var(--jp-ui-font-color2, #616161)", ""),
    }[tone]
    prefix = f"{icon} " if icon else ""
    return note_html(prefix + html.escape(text), colour=colour)
