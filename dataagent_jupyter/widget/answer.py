"""One answer in the chat: streamed text, the proposed code, run outputs, action buttons.

The view only renders a question's (or a run's) events; where it sits and what its
buttons do is the chat's business. A streaming answer is redrawn at most every
``REDRAW`` seconds (a stream may be hundreds of chunks), and on every heartbeat so text
that arrived before a stall is shown.
"""

from __future__ import annotations

import functools
import html
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .. import errors
from ..events import (
    CodeProposed,
    Delta,
    Done,
    Event,
    Failed,
    Output,
    ProposedCell,
    RunFailed,
    Status,
    StepApproval,
    StepFinished,
    StepStarted,
)
from .parts import append, bundle_output, error_output, fenced, markdown_output, vbox

__all__ = ["REDRAW", "AnswerView"]

#: seconds between two redraws of a streaming answer (a stream may be hundreds of chunks)
REDRAW = 0.1


class AnswerView:
    """One answer in the conversation: streamed text, code, run outputs, action buttons.

    It renders a question's (or a run's) events; the chat decides where it goes and what
    the buttons do: a button calls ``on_action(name, view)`` with ``name`` one of
    ``insert``, ``run`` and ``copy`` (those of ``actions``), or (an agent step waiting for approval)
    ``step-run``, ``step-skip`` and ``step-stop``.
    """

    def __init__(
        self,
        question: str,
        *,
        kind: str = "answer",
        on_action: Callable[[str, AnswerView], None] | None = None,
        actions: tuple[str, ...] = ("insert", "run", "copy"),
    ) -> None:
        self.question = question
        self.on_action = on_action
        self.actions = actions  # the buttons offered under the code, in order
        self.box = vbox(
            f"dataagent-chat-{kind}",
            border_left="3px solid var(--jp-brand-color1, #1976d2)",
            padding="2px 0 2px 10px",
            margin="4px 0 10px 0",
        )
        self.code = ""
        self.done: Done | None = None  # the answer's end, for the inserted cell's provenance
        #: an agent run's analysis as cells (its summary, then each step that worked)
        self.cells: tuple[ProposedCell, ...] = ()
        self._approval: widgets.HBox | None = None
        self._steps = False  # an agent run: model text is per step, not per attempt
        self._attempt = 0
        self._text: widgets.Output | None = None
        self._results: widgets.Output | None = None
        self._buffer = ""
        self._drawn = ""
        self._last_draw = 0.0
        self._actions: widgets.HBox | None = None
        self._action_note: widgets.Output | None = None
        self._copy_box: widgets.HTML | None = None

    # --- events --------------------------------------------------------------------
    def handle(self, event: Event) -> None:
        """Render one event of ``Session.ask`` / ``Session.run_code``."""
        if isinstance(event, Delta):
            if event.attempt != self._attempt:
                self._new_section(event.attempt)
            self._buffer += event.text
            self.flush()
        elif isinstance(event, Status):
            self.flush(force=True)  # a heartbeat: show what arrived before a stall
        elif isinstance(event, CodeProposed):
            self._show_code(event)
        elif isinstance(event, Output):
            self._show_output(event)
        elif isinstance(event, RunFailed):
            what = "asking the model to fix it" if event.will_retry else "no attempts left"
            # one line, and no backtick that would end the inline code early
            evalue = " ".join(str(event.evalue).split())[:200].replace("`", "'")
            self.note(f"**Attempt {event.attempt} failed:** `{event.ename}: {evalue}` — {what}.")
        elif isinstance(event, StepStarted):
            self.flush(force=True)
            self._steps = True
            self._results = None  # the step's outputs go under it
            self.note(f"**Step {event.step}**\n\n{fenced(event.code)}")
        elif isinstance(event, StepApproval):
            self._ask_approval(event)
        elif isinstance(event, StepFinished):
            self._end_approval()
            said = {"ok": "worked", "failed": "failed", "skipped": "was skipped"}[event.outcome]
            error = " ".join(event.error.split())[:200].replace("`", "'")
            line = f"Step {event.step} {said}" + (f": `{error}`" if error else "")
            tokens = event.usage.prompt_tokens + event.usage.completion_tokens
            line += f" · {event.elapsed:.1f} s · {tokens:,} tokens so far"
            for note in event.notes:
                line += f"\n\n> ⚠️ {' '.join(note.split())[:300]}"
            self.note(line)
        elif isinstance(event, Done):
            self.flush(force=True)
            self.done = event
            self._end_approval()
            if event.mode == "agent":
                self.cells = event.cells
                if event.ended_by:  # the summary was written here, not streamed
                    self.note(event.explanation)
            self.code = event.code or self.code
            if self.code:
                self.show_actions()
        elif isinstance(event, Failed):
            self.flush(force=True)
            self._end_approval()
            self.code = event.code or self.code
            if isinstance(event.error, errors.Cancelled):
                self.note(f"■ Stopped after {event.elapsed:.1f} s.")
            else:
                self.error(event.error)
            if self.code and self.question:
                self.show_actions()

    def flush(self, *, force: bool = False) -> None:
        """Redraw the streamed text, at most every ``REDRAW`` seconds unless ``force``."""
        if self._text is None or self._buffer == self._drawn:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < REDRAW:
            return
        self._last_draw = now
        self._drawn = self._buffer
        self._text.outputs = (markdown_output(self._buffer),)

    # --- pieces ----------------------------------------------------------------------
    def _new_section(self, attempt: int) -> None:
        self.flush(force=True)
        self._attempt = attempt
        self._buffer = f"**Attempt {attempt}.** " if attempt > 1 and not self._steps else ""
        self._drawn = ""
        self._text = widgets.Output()
        self._text.add_class("dataagent-chat-text")
        self._results = None
        append(self.box, self._text)

    def _show_code(self, event: CodeProposed) -> None:
        if self._text is None or event.attempt != self._attempt:
            self._new_section(event.attempt)
        assert self._text is not None
        heading = f"**Attempt {event.attempt}.** " if event.attempt > 1 else ""
        parts = [heading + (event.explanation.strip() or "Proposed code:"), fenced(event.code)]
        if event.warnings:
            parts.append(f"> ⚠️ Review: this code {'; '.join(event.warnings)}.")
        self._buffer = self._drawn = "\n\n".join(parts)
        self._text.outputs = (markdown_output(self._buffer),)
        self.code = event.code

    def _show_output(self, event: Output) -> None:
        if self._results is None:
            self._results = widgets.Output()
            self._results.add_class("dataagent-chat-results")
            append(self.box, self._results)
        outputs = list(self._results.outputs)
        if event.kind == "stream":
            name = "stderr" if event.name == "stderr" else "stdout"
            text = str(event.data.get("text/plain", ""))
            last = outputs[-1] if outputs else None
            if last and last.get("output_type") == "stream" and last.get("name") == name:
                outputs[-1] = {**last, "text": last["text"] + text}
            else:
                outputs.append({"output_type": "stream", "name": name, "text": text})
        else:
            outputs.append(bundle_output(event.data, event.metadata))
        if event.saved:
            outputs.append(markdown_output(f"Chart saved to `{event.saved}`."))
        self._results.outputs = tuple(outputs)

    def note(self, markdown: str) -> None:
        """A short Markdown line in this answer (a failed attempt, Stopped, a hint)."""
        out = widgets.Output()
        out.add_class("dataagent-chat-note")
        out.outputs = (markdown_output(markdown),)
        append(self.box, out)

    def error(self, error: errors.DataAgentError) -> None:
        """The error's title, message and hint, as one clear message (never a traceback)."""
        out = widgets.Output()
        out.add_class("dataagent-chat-error")
        out.outputs = (error_output(error),)
        append(self.box, out)

    def _ask_approval(self, event: StepApproval) -> None:
        """Run / Skip / Stop for an agent step that waits (``agent_approval="each-step"``)."""
        self._end_approval()
        buttons = []
        for name, label, icon in (
            ("run", "Run", "play"),
            ("skip", "Skip", "forward"),
            ("stop", "Stop", "stop"),
        ):
            button = widgets.Button(description=label, icon=icon)
            button.add_class(f"dataagent-chat-step-{name}")
            button.on_click(functools.partial(self._clicked, f"step-{name}"))
            buttons.append(button)
        self._approval = widgets.HBox(buttons)
        self._approval.add_class("dataagent-chat-approval")
        append(self.box, self._approval)

    def _end_approval(self) -> None:
        if self._approval is not None:
            for button in self._approval.children:
                button.disabled = True  # answered: the buttons stay as a record, inert
            self._approval = None

    def show_actions(self) -> None:
        """The Insert cell / Run / Copy buttons for this answer's code."""
        if self._actions is not None:
            return
        insert = widgets.Button(
            description="Insert cell",
            icon="plus",
            tooltip="Insert the code as a new cell below the chat, for you to review and run",
        )
        run = widgets.Button(
            description="Run",
            icon="play",
            tooltip="Run the code in the sandboxed child kernel and show its output here",
        )
        copy = widgets.Button(
            description="Copy", icon="copy", tooltip="Show the code ready to copy"
        )
        insert.add_class("dataagent-chat-insert")
        run.add_class("dataagent-chat-run")
        copy.add_class("dataagent-chat-copy-button")
        offered = {"insert": insert, "run": run, "copy": copy}
        for name, button in offered.items():
            button.on_click(functools.partial(self._clicked, name))
        self._actions = widgets.HBox([offered[name] for name in self.actions])
        self._action_note = widgets.Output()
        self._action_note.add_class("dataagent-chat-action-note")
        append(self.box, self._actions, self._action_note)

    def _clicked(self, name: str, _button: Any) -> None:
        if self.on_action is not None:
            self.on_action(name, self)

    def action_note(self, markdown: str) -> None:
        """Replace the line under the buttons (the outcome of the last button pressed)."""
        if self._action_note is None:
            self.note(markdown)
        else:
            self._action_note.outputs = (markdown_output(markdown),)

    def toggle_copy(self) -> None:
        """Show (or hide again) the code in a read-only box that selects itself on click."""
        if self._copy_box is not None:
            self.box.children = tuple(c for c in self.box.children if c is not self._copy_box)
            self._copy_box.close()
            self._copy_box = None
            return
        code = self.code.rstrip()
        rows = min(max(code.count("\n") + 1, 2), 20)
        # An inline handler is the one piece of browser behaviour a kernel can ship without
        # a front-end extension: ipywidgets' HTML view sets innerHTML, and handlers on
        # elements (unlike <script>) run. Where they are blocked the box still works.
        self._copy_box = widgets.HTML(
            '<div style="font-size:0.9em;margin:2px 0">Click the box to select all of the '
            "code, then press <b>Ctrl+C</b> / <b>⌘C</b>.</div>"
            f'<textarea class="dataagent-chat-copy" readonly rows="{rows}" spellcheck="false"'
            ' onfocus="this.select()" onclick="this.select()"'
            ' style="width:100%;box-sizing:border-box;font-family:var(--jp-code-font-family,'
            'monospace);font-size:var(--jp-code-font-size,13px)">'
            f"{html.escape(code)}</textarea>",
            layout=widgets.Layout(width="100%"),
        )
        self._copy_box.add_class("dataagent-chat-copybox")
        append(self.box, self._copy_box)
