"""``%%ask --agent`` with ``agent_approval="each-step"``: the run shown as a widget in its cell.

Approving a step means clicking Run, Skip or Stop, and a click is a comm message the
kernel can only receive when no cell is running. So the cell displays this widget, starts
the run on the background runner (``background.stream_in_background``, as the chat does)
and ends at once; the steps, their outputs and the summary then arrive in the widget,
rendered by the chat's own answer view (``answer.AnswerView``: the same Run / Skip / Stop
buttons, the same step lines). At the end the analysis goes below the asking cell as
separate cells through the labextension (``insert.InsertRequest``), replacing that
cell's previous proposal instead of stacking; where no labextension answers, it is kept
for ``%dataagent insert``.

A plain IPython terminal has no kernel and shows no widgets: there the run is refused
before anything is asked, with a message saying what works instead.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from .. import errors
from ..background import Stop, stream_in_background
from ..cell_output import percent_cells
from ..events import Done, Event
from ..options import AskOptions
from ..session import Session
from .answer import AnswerView
from .chat import track
from .insert import InsertRequest
from .parts import append, as_user_error, note_html, status_html, status_line, vbox, walk

log = logging.getLogger("dataagent_jupyter.widget")

__all__ = ["AgentCell", "ask_with_approval"]


def ask_with_approval(
    session: Session, shell: Any, question: str, options: AskOptions
) -> AgentCell:
    """Show the run of ``question`` in the current cell and start it; the widget.

    Raises a ``UsageError`` where no widget can be shown (no kernel: a terminal IPython).
    """
    if getattr(shell, "kernel", None) is None:
        raise errors.UsageError(
            "approving each step needs the Run / Skip / Stop buttons of a widget, and "
            "this IPython shows no widgets.",
            hint="Run it with %config DataAgent.agent_approval = 'none', or ask in a "
            "notebook (the %%ask cell, the chat widget or the Data Agent side panel).",
        )
    cell = AgentCell(session, question, options)
    display(cell)
    cell.start()
    return cell


class AgentCell(widgets.VBox):
    """One agent run in its asking cell: the answer view, a status line and Stop.

    Stop ends the run at once and keeps the steps that worked (they are still proposed);
    the Stop under a waiting step does the same through the session's step gate.
    """

    def __init__(self, session: Session, question: str, options: AskOptions) -> None:
        self.session = session
        self.question = question
        self.options = options
        self.cancel = Stop()
        self.running = False
        self._started = time.monotonic()
        self._insert: InsertRequest | None = None
        self.answer = AnswerView(
            question, kind="agent", on_action=self._on_action, actions=("insert", "copy")
        )
        self.status = widgets.HTML(note_html("Starting…"))
        self.status.add_class("dataagent-agent-status")
        self.stop_button = widgets.Button(
            description="Stop", icon="stop", tooltip="End the run now, keeping the steps done"
        )
        self.stop_button.add_class("dataagent-agent-stop")
        self.stop_button.on_click(lambda _button: self._guard(self.stop))
        footer = widgets.HBox(
            [self.stop_button, self.status], layout=widgets.Layout(align_items="center")
        )
        body = vbox("dataagent-agent-cell")
        append(body, self.answer.box, footer)
        super().__init__([body])
        track(session, self)

    def start(self) -> None:
        """Start the run on the background runner; returns at once."""
        self.running = True
        stream_in_background(
            self.session.ask(self.question, self.options, cancel=self.cancel),
            self._deliver,
            cancel=self.cancel,
            name="dataagent-agent-cell",
            on_end=self._end,
        )

    def stop(self) -> None:
        """End the run: the loop keeps what was done and writes the summary of it."""
        if self.running and not self.cancel.is_set():
            self.cancel.set()
            self.status.value = status_html("Stopping…")

    def close(self) -> None:
        """Stop the run and close every part (the extension unloads, or the output goes)."""
        self.stop()
        if self._insert is not None:
            self._insert.cancel()
        for part in list(walk(self))[1:]:
            part.close()
        super().close()

    # --- the run's events, on the runner's thread ---------------------------------------
    def _deliver(self, event: Event) -> None:
        self.answer.handle(event)
        line = status_line(event, time.monotonic() - self._started)
        if line is not None:
            self.status.value = status_html(*line)
        if isinstance(event, Done) and event.cells:
            self._propose(event)

    def _end(self) -> None:
        self.answer.flush(force=True)
        self.running = False
        self.stop_button.disabled = True

    def _propose(self, done: Done) -> None:
        """The analysis as cells below the asking cell (or kept for %dataagent insert)."""
        self._insert = InsertRequest(
            self.answer,
            percent_cells(done.cells),
            self.session,
            report=self._report,
            forget=lambda request: None,
            cells=done.cells,
            where="below this cell",
            proposal=True,
        )
        self._insert.start(self.options.cell_id)

    # --- buttons ------------------------------------------------------------------------
    def _on_action(self, name: str, answer: AnswerView) -> None:
        self._guard(lambda: self._act(name, answer))

    def _act(self, name: str, answer: AnswerView) -> None:
        if name in ("step-run", "step-skip", "step-stop"):
            self.session.step_gate.decide(name.removeprefix("step-"))
        elif name == "insert" and answer.done is not None:
            self._propose(answer.done)  # again: it replaces the unedited cells it put there
        elif name == "copy":
            answer.toggle_copy()

    def _guard(self, action: Any) -> None:
        """Run a button's action; an exception is a message here, never a traceback."""
        try:
            action()
        except Exception as exc:
            self._report(exc)

    def _report(self, exc: BaseException) -> None:
        try:
            if not isinstance(exc, errors.DataAgentError):
                log.debug("agent cell callback failed", exc_info=exc)
            self.answer.error(as_user_error(exc))
        except Exception:  # the report itself must never raise into the kernel
            log.debug("could not report an agent cell failure", exc_info=True)
