"""Rendering a question's events into the asking cell's output (the magics' front end).

Two live displays are updated in place: a status line (phase, model, elapsed seconds) and
the streamed answer (Markdown). Outputs of a run are displayed in order as they arrive,
through the display system, so they render the same in JupyterLab, Notebook 7, VS Code
and a terminal. :func:`render_events` drives a whole question into the cell and proposes
the next cell (:func:`cell_text`); the chat widget proposes cells in the same words.
Model text and anything else not written by the user is shown through ``sanitize``
(cleaned HTML, never raw ``text/markdown``): JupyterLab trusts cell output.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from IPython.display import DisplayHandle, display

from . import errors
from .events import (
    CodeProposed,
    Delta,
    Done,
    Event,
    Failed,
    Mode,
    Output,
    ProposedCell,
    RunFailed,
    Status,
    StepApproval,
    StepFinished,
    StepStarted,
)
from .options import AskOptions
from .provenance import announce_proposal, provenance
from .sanitize import clean_output, markdown_bundle, markdown_html

if TYPE_CHECKING:
    from .session import Session

#: seconds between two redraws of the streamed answer (the stream may be 100s of chunks)
REDRAW = 0.12

PHASES = {
    "describing": "Describing the data",
    "asking": "Asking",
    "fixing": "Asking for a fix",
    "running": "Running",
    "checking": "Checking the code",
    "loading": "Loading",
    "waiting": "Waiting",
}


def highlight(code: str) -> str:
    """Python source as highlighted HTML (pygments ships with IPython)."""
    try:
        from pygments import highlight as _hl
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        return _hl(code, PythonLexer(), HtmlFormatter(noclasses=True, nobackground=True))
    except ImportError:  # pragma: no cover - pygments is an IPython dependency
        return f"<pre>{html.escape(code)}</pre>"


def show_markdown(md: str) -> None:
    """Display Markdown that also reads well where only text/plain renders (terminals)."""
    display(markdown_bundle(md), raw=True)


def show_rich(obj: Any) -> None:
    """Display an object's HTML and Markdown, with the Markdown as plain text too.

    A terminal IPython renders only text/plain; an object's Markdown reads better there
    than its repr.
    """
    bundle: dict[str, Any] = {}
    for mime, method in (("text/html", "_repr_html_"), ("text/markdown", "_repr_markdown_")):
        render = getattr(obj, method, None)
        if render is not None:
            value = render()
            if value:
                bundle[mime] = value
    bundle["text/plain"] = bundle.get("text/markdown") or repr(obj)
    display(clean_output(bundle)[0], raw=True)


def status_bundle(text: str, *, tone: str = "busy") -> dict[str, str]:
    colour = {"busy": "#1565c0", "ok": "#2e7d32", "error": "#c62828"}[tone]
    icon = {"busy": "⏳", "ok": "✓", "error": "✗"}[tone]
    return {
        "text/plain": f"{icon} {text}",
        "text/html": f'<div class="dataagent-status" style="font-size:0.85em;color:{colour}">'
        f"{icon} {html.escape(text)}</div>",
    }


def render_events(events: Iterable[Event], *, mode: Mode, shell: Any, question: str) -> Done:
    """Drive a question's events into the cell; propose the code as the next cell.

    Returns the ``Done`` event; a ``Failed`` one is raised as its error (IPython shows
    it without a traceback). When a run failed, the last code is still offered as a
    cell to review and fix, so the work is not lost.
    """
    view = CellOutput(mode=mode)
    last_code = ""
    for event in events:
        view.handle(event)
        if isinstance(event, CodeProposed):
            last_code = event.code
        elif isinstance(event, Done):
            if event.mode == "insert":
                shell.set_next_input(cell_text(question, event.code), replace=False)
            elif event.mode == "agent" and event.cells:
                # set_next_input makes one code cell: the steps go in it as # %% cells
                shell.set_next_input(percent_cells(event.cells), replace=False)
            return event
        elif isinstance(event, Failed):
            code = event.code or last_code
            if (
                code
                and isinstance(event.error, errors.SandboxError)
                and not isinstance(event.error, errors.Cancelled)
            ):
                # keep the work: the last code is offered as a cell to review and fix
                shell.set_next_input(cell_text(question, code, failed=True), replace=False)
            raise event.error
    raise errors.DataAgentError("the question ended without an answer.")  # pragma: no cover


def render_in_cell(
    session: Session, shell: Any, question: str, options: AskOptions, events: Iterable[Event]
) -> None:
    """Render a turn into the running cell; a proposal also goes to the labextension.

    The proposal is the ``set_next_input`` payload everywhere; with a cell id, the
    labextension is told too, so it records the provenance and replaces this cell's
    previous proposal instead of stacking a copy (``provenance.py``). An agent run's
    payload is one ``# %%`` cell; the labextension swaps it for the separate cells.
    """
    done = render_events(events, mode=options.mode or "insert", shell=shell, question=question)
    if done.mode == "insert":
        session.pending_cell = cell_text(question, done.code)
        if options.cell_id is not None:
            announce_proposal(options.cell_id, session.pending_cell, provenance(question, done))
    elif done.mode == "agent" and done.cells:
        session.pending_cell = percent_cells(done.cells)
        if options.cell_id is not None:
            # the labextension puts the cells in place of the one ``# %%`` cell
            announce_proposal(
                options.cell_id, session.pending_cell, provenance(question, done), done.cells
            )


def cell_text(question: str, code: str, *, failed: bool = False) -> str:
    """The proposed cell: a one-line comment recording the question, then the code."""
    first = " ".join(question.strip().split())
    if len(first) > 100:
        first = first[:99] + "…"
    tag = "dataagent (failed, review it)" if failed else "dataagent"
    return f"# {tag}: {first}\n{code.rstrip()}\n"


def percent_cells(cells: Iterable[ProposedCell]) -> str:
    """Cells as one text in the ``# %%`` format (Jupytext, VS Code, Spyder read it)."""
    parts = []
    for cell in cells:
        if cell.cell_type == "markdown":
            lines = [f"# {line}".rstrip() for line in cell.source.strip().splitlines()]
            parts.append("# %% [markdown]\n" + "\n".join(lines))
        else:
            parts.append("# %%\n" + cell.source.strip())
    return "\n\n".join(parts) + "\n"


class CellOutput:
    """Turns events into displays in the current cell; ``handle`` each event in order."""

    def __init__(self, *, mode: str, show_code: bool | None = None) -> None:
        self.mode = mode
        self.show_code = mode == "run" if show_code is None else show_code
        self.started = time.perf_counter()
        self._status: DisplayHandle | None = None
        self._answer: DisplayHandle | None = None
        self._answer_attempt = 0
        self._buffer = ""
        self._last_draw = 0.0
        self._phase = "describing"
        self._detail = ""
        self._attempt = 1
        self.saved: list[str] = []

    # --- entry point -----------------------------------------------------------------
    def handle(self, event: Event) -> None:
        if isinstance(event, Status):
            self._phase, self._detail, self._attempt = event.phase, event.message, event.attempt
            self._draw_status()
        elif isinstance(event, Delta):
            if event.attempt != self._answer_attempt:
                self._new_answer(event.attempt)
            self._buffer += event.text
            self._draw_answer()
        elif isinstance(event, CodeProposed):
            self._finish_answer(event)
        elif isinstance(event, Output):
            self._show_output(event)
        elif isinstance(event, RunFailed):
            what = "asking the model to fix it" if event.will_retry else "no attempts left"
            display(
                markdown_bundle(
                    f"**Attempt {event.attempt} failed:** "
                    f"`{event.ename}: {_one_line(event.evalue)}` — {what}."
                ),
                raw=True,
            )
        elif isinstance(event, StepStarted):
            self._show_step(event)
        elif isinstance(event, StepApproval):
            pass  # approval needs buttons: the magic refuses each-step approval up front
        elif isinstance(event, StepFinished):
            self._show_step_end(event)
        elif isinstance(event, Done):
            if event.mode == "agent" and event.ended_by:
                show_markdown(event.explanation)  # written here when a budget ended the run
            self._draw_done(event)
        elif isinstance(event, Failed):
            self._set_status(f"failed after {event.elapsed:.1f} s", tone="error")

    # --- pieces ----------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _set_status(self, text: str, *, tone: str = "busy") -> None:
        bundle = status_bundle(text, tone=tone)
        if self._status is None:
            self._status = display(bundle, raw=True, display_id=True)
        else:
            self._status.update(bundle, raw=True)

    def _draw_status(self) -> None:
        label = PHASES.get(self._phase, self._phase)
        attempt = f" (attempt {self._attempt})" if self._attempt > 1 else ""
        detail = f" {self._detail}" if self._detail else ""
        self._set_status(f"{label}{detail}{attempt} · {self._elapsed():.1f} s")

    def _new_answer(self, attempt: int) -> None:
        self._answer_attempt = attempt
        self._buffer = ""
        self._answer = display(markdown_bundle(""), raw=True, display_id=True)

    def _draw_answer(self, *, force: bool = False) -> None:
        now = time.perf_counter()
        if self._answer is None or (not force and now - self._last_draw < REDRAW):
            return
        self._last_draw = now
        self._answer.update(markdown_bundle(self._buffer), raw=True)
        self._draw_status()

    def _finish_answer(self, event: CodeProposed) -> None:
        if self._answer is None or event.attempt != self._answer_attempt:
            self._new_answer(event.attempt)
        text = event.explanation or ("Proposed code:" if not self.show_code else "")
        heading = f"**Attempt {event.attempt}.** " if event.attempt > 1 else ""
        md = heading + text
        plain = heading.replace("*", "") + text
        if event.warnings:
            notes = "; ".join(event.warnings)
            md += f"\n\n> ⚠️ Review: this code {notes}."
            plain += f"\n\nReview: this code {notes}."
        bundle: dict[str, Any] = {**markdown_bundle(md), "text/plain": plain}
        if self.show_code:
            summary = f"Code (attempt {event.attempt})" if event.attempt > 1 else "Code"
            bundle["text/html"] = (
                f"<div>{markdown_html(md)}</div><details><summary>{summary}"
                f"</summary>{highlight(event.code)}</details>"
            )
            bundle["text/plain"] = plain + "\n\n" + event.code
        assert self._answer is not None
        self._answer.update(bundle, raw=True)

    def _show_output(self, event: Output) -> None:
        if event.kind == "stream":
            stream = "stderr" if event.name == "stderr" else "stdout"
            import sys

            target = sys.stderr if stream == "stderr" else sys.stdout
            target.write(str(event.data.get("text/plain", "")))
            target.flush()
            return
        display(event.data, raw=True, metadata=event.metadata or None)
        if event.saved:
            self.saved.append(event.saved)

    def _show_step(self, event: StepStarted) -> None:
        title = f"Step {event.step}"
        display(
            {
                "text/plain": f"{title}\n{event.code}",
                "text/html": f"<details><summary><b>{title}</b> (code)</summary>"
                f"{highlight(event.code)}</details>",
            },
            raw=True,
        )

    def _show_step_end(self, event: StepFinished) -> None:
        said = {"ok": "worked", "failed": "failed", "skipped": "was skipped"}[event.outcome]
        error = f": `{_one_line(event.error)}`" if event.error else ""
        tokens = event.usage.prompt_tokens + event.usage.completion_tokens
        md = f"Step {event.step} {said}{error} · {event.elapsed:.1f} s · {tokens:,} tokens so far"
        md += "".join(f"\n\n> ⚠️ {_one_line(note)}" for note in event.notes)
        display(markdown_bundle(md), raw=True)

    def _draw_done(self, event: Done) -> None:
        tokens = ""
        if event.usage.prompt_tokens or event.usage.completion_tokens:
            tokens = f" · {event.usage.prompt_tokens:,} → {event.usage.completion_tokens:,} tokens"
        cached = " · from cache" if event.cached else ""
        if event.replayed:
            cached = " · replayed from the transcript"
        attempts = f" · {event.attempts} attempts" if event.attempts > 1 else ""
        what = {
            "inserted": "Code proposed in a new cell below",
            "ran": "Done",
            "proposed": "Code proposed",
            "failed": "Failed",
        }[event.outcome]
        if event.mode == "agent":
            ended = f" ({event.ended_by})" if event.ended_by else ""
            what = f"Analysis in {event.steps} step(s){ended} proposed below"
        into = f" · result bound to `{event.into}`" if event.into else ""
        saved = f" · charts saved: {', '.join(self.saved)}" if self.saved else ""
        self._set_status(
            f"{what} in {event.elapsed:.1f} s · {event.model}{tokens}{cached}"
            f"{attempts}{into}{saved}",
            tone="ok",
        )


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
