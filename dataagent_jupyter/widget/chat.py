"""The chat widget: a conversation with the Data Agent inside the notebook's output area.

``%dataagent chat`` or ``dataagent_jupyter.chat()`` shows it. It is plain ipywidgets, so it
works wherever ipywidgets work (JupyterLab, Notebook 7, VS Code), and it shares the
session (history, config, sandbox) with ``%%ask``: a follow-up typed here sees the
question asked in a cell, and the other way round.

How it behaves, and why:

- **Questions run on a background thread** (``background.stream_in_background``). A
  button callback runs inside the kernel's message loop; asking the model there would
  freeze the kernel, and the Stop click, being itself a comm message, could never
  arrive. The answer streams into the conversation (``answer.AnswerView``) and the status
  line ticks with the engine's one-second heartbeats. Stop sets the ``cancel`` event the
  engine watches; in run mode the engine interrupts the child kernel. One answer at a
  time is the session's rule, shared with ``%%ask`` and the panel.
- **Insert cell** asks the labextension for a new cell below the widget's cell (its id is
  captured when the widget is created), and falls back to ``%dataagent insert`` where no
  labextension answers: see ``insert.py``.
- **Copy.** The kernel has no way to reach the browser's clipboard. "Copy" shows the code
  in a read-only text box (class ``dataagent-chat-copy``) that selects all of its text
  when clicked (or focused), with the hint "press Ctrl+C / ⌘C". Where a front end blocks
  inline handlers, the text is still there to select by hand.
- **Enter sends, Shift+Enter adds a line** where the labextension is installed: ipywidgets
  have no key events, so the input carries the CSS class ``dataagent-chat-input`` and the
  Send button ``dataagent-chat-send``, and the labextension clicks Send on a plain Enter
  in that input. Elsewhere Enter adds a line and the Send button sends.
- **Errors are messages, never tracebacks.** Every callback is wrapped: a
  ``DataAgentError`` shows its title, message and hint in the conversation, anything else
  a one-line "the chat widget failed" message (details go to the ``dataagent_jupyter``
  logger at DEBUG level).
- **Closing the widget removes its hooks** (the frame picker's ``post_run_cell`` hook) and
  stops what it is running. ``close_all(session)`` closes every chat widget of a session,
  for ``%unload_ext``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import ipywidgets as widgets

from .. import errors
from ..background import Stop, stream_in_background

# the same phase names and proposed-cell texts as the magics
from ..cell_output import cell_text, percent_cells
from ..events import CodeProposed, Event
from ..frontend import current_cell_id
from ..options import AskOptions
from ..session import Session
from .answer import AnswerView
from .insert import InsertRequest
from .parts import (
    append,
    as_user_error,
    bundle_output,
    frame_label,
    note_html,
    status_html,
    status_line,
    user_message,
    vbox,
    walk,
)

log = logging.getLogger("dataagent_jupyter.widget")

__all__ = ["UPLOAD_ACCEPT", "ChatWidget", "close_all"]

#: what the upload button offers (the loader checks the content, not only the name)
UPLOAD_ACCEPT = ".csv,.tsv,.txt,.gz,.bz2,.zip,.xz,.xlsx,.xlsm,.xls,.ods,.xlsb,.parquet,.jsonl,.json"

F = TypeVar("F", bound=Callable[..., Any])

# The open chat widgets of each session, so that unloading the extension can close them.
_open_widgets: weakref.WeakKeyDictionary[Session, weakref.WeakSet[widgets.Widget]] = (
    weakref.WeakKeyDictionary()
)


def close_all(session: Session) -> None:
    """Close every open chat widget (and agent cell) of ``session``, when the extension
    unloads."""
    for chat in list(_open_widgets.get(session, ())):
        chat.close()


def track(session: Session, widget: widgets.Widget) -> None:
    """Have ``close_all(session)`` close ``widget`` too (it stops what it runs)."""
    _open_widgets.setdefault(session, weakref.WeakSet()).add(widget)


def _guarded(method: F) -> F:
    """Wrap a widget callback so that no exception reaches the kernel log as a traceback.

    ipywidgets prints a callback's exception as a traceback into whatever output area
    happens to be current (often none: it lands in the log console). The user sees the
    failure in the conversation instead.
    """

    @functools.wraps(method)
    def wrapper(self: ChatWidget, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            self._report(exc)
            return None

    return wrapper  # type: ignore[return-value]


def _current_cell_id() -> str | None:
    """The executing cell's id, as JupyterLab sends it in the request's metadata."""
    try:
        return current_cell_id()
    except Exception:
        return None


class ChatWidget(widgets.VBox):
    """A chat with the Data Agent about the notebook's DataFrames.

    Built on a ``session`` (shared with the magics and the panel: same history, config
    and sandbox) and the ``shell`` whose namespace it loads files into. The parts are
    public attributes (``input``, ``send_button``, ``stop_button``, ``frames``, ``mode``,
    ``upload``, ``messages``, ``status``) so a notebook can script it; ``ask(question)``
    is the same as typing and pressing Send::

        chat = ChatWidget(session, get_ipython())
        chat.ask("which region sells most?")
    """

    def __init__(self, session: Session, shell: Any, **kwargs: Any) -> None:
        self.session = session
        self.config = session.config
        self.shell = shell
        #: the cell the widget was created in: "Insert cell" puts the new cell below it
        self.cell_id = _current_cell_id()
        self._closed = False
        self._busy = False
        self._cancel: Stop | None = None
        self._started = 0.0
        self._inserts: set[InsertRequest] = set()
        self._frames_seen: tuple[Any, ...] | None = None
        self._hook_registered = False

        self.title = widgets.HTML("<b>Data Agent</b>")
        self.mode = widgets.ToggleButtons(
            options=[("insert", "insert"), ("run", "run"), ("agent", "agent")],
            value=self.config.mode,
            tooltips=[
                "Propose code to review; nothing runs",
                "Run the code in the sandboxed child kernel and show the answer",
                "Work in steps in the sandboxed child kernel, then summarise and propose "
                "the steps as cells",
            ],
            style={"button_width": "70px"},
        )
        self.mode.add_class("dataagent-chat-mode")
        self.upload = widgets.FileUpload(
            accept=UPLOAD_ACCEPT,
            multiple=True,
            description="Upload",
            tooltip="Load a CSV, Excel, OpenDocument, Parquet or JSON file as a DataFrame",
        )
        self.upload.add_class("dataagent-chat-upload")
        self.new_button = widgets.Button(
            description="New conversation",
            icon="refresh",
            tooltip="Forget earlier questions: the next one starts a fresh conversation",
        )
        self.new_button.add_class("dataagent-chat-new")
        self.frames = widgets.SelectMultiple(
            options=[],
            rows=3,
            layout=widgets.Layout(width="100%"),
            tooltip="Frames the question is about; none selected: all of them",
        )
        self.frames.add_class("dataagent-chat-frames")
        self.frames_label = widgets.HTML()
        self.messages = vbox("dataagent-chat-messages", width="100%")
        self.status = widgets.HTML(note_html("Ready."))
        self.status.add_class("dataagent-chat-status")
        self.input = widgets.Textarea(
            placeholder="Ask a question about your DataFrames…",
            rows=3,
            layout=widgets.Layout(flex="1 1 auto", width="auto"),
        )
        self.input.add_class("dataagent-chat-input")
        self.send_button = widgets.Button(
            description="Send", button_style="primary", icon="paper-plane", tooltip="Ask"
        )
        self.send_button.add_class("dataagent-chat-send")
        self.stop_button = widgets.Button(
            description="Stop", icon="stop", disabled=True, tooltip="Stop the current answer"
        )
        self.stop_button.add_class("dataagent-chat-stop")

        self.send_button.on_click(self._on_send)
        self.stop_button.on_click(self._on_stop)
        self.new_button.on_click(self._on_new)
        self.upload.observe(self._on_upload, names="value")

        header = widgets.HBox(
            [self.title, self.mode, self.upload, self.new_button],
            layout=widgets.Layout(align_items="center", flex_flow="row wrap"),
        )
        prompt = widgets.HBox(
            [self.input, widgets.VBox([self.send_button, self.stop_button])],
            layout=widgets.Layout(width="100%"),
        )
        super().__init__(
            [header, self.frames_label, self.frames, self.messages, self.status, prompt],
            **kwargs,
        )
        self.add_class("dataagent-chat")
        self.refresh_frames()
        self._show_transcript()
        if getattr(self.shell, "events", None) is not None:
            self.shell.events.register("post_run_cell", self._after_cell)
            self._hook_registered = True
        track(session, self)

    # --- public API ------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """Whether a question or a run of this widget is in progress."""
        return self._busy

    def ask(self, question: str) -> bool:
        """Ask ``question`` as if typed and sent; False when it could not start."""
        question = question.strip()
        if not question:
            self._set_status("Type a question first.", tone="idle")
            return False
        self.refresh_frames()
        frames = tuple(self.frames.value) or None
        mode = self.mode.value
        options = AskOptions(frames=frames, mode=mode)
        user = user_message(question)
        answer = self._answer_view(question)
        append(self.messages, user, answer.box)
        if not self._start(
            answer, lambda cancel: self.session.ask(question, options, cancel=cancel)
        ):
            self._remove(user, answer.box)
            return False
        return True

    def stop(self) -> None:
        """Cancel the running question or run (the engine interrupts the child kernel)."""
        cancel = self._cancel
        if cancel is not None and not cancel.is_set():
            cancel.set()
            self._set_status("Stopping…")

    def refresh_frames(self) -> None:
        """List the live DataFrames again, keeping the selection that still exists."""
        infos = self.session.list_frames()
        seen = tuple((i.name, i.kind, tuple(i.shape)) for i in infos)
        if seen == self._frames_seen:
            return
        self._frames_seen = seen
        keep = [name for name in self.frames.value if any(i.name == name for i in infos)]
        # not under hold_trait_notifications: the new options must be in place (the
        # options observer resets the selection) before the kept selection is set
        self.frames.options = [(frame_label(i), i.name) for i in infos]
        self.frames.value = tuple(keep)
        self.frames.rows = min(max(len(infos), 2), 6)
        if infos:
            text = "Frames (select some to focus the question; none selected: all of them)"
        else:
            text = "No DataFrames yet: define one in a cell, or upload a file."
        self.frames_label.value = note_html(text)

    def close(self) -> None:
        """Stop what is running, remove the hooks, and close every part of the widget."""
        if getattr(self, "_closed", True):
            super().close()
            return
        self._closed = True
        if self._cancel is not None:
            self._cancel.set()
        for request in list(self._inserts):
            request.cancel()
        self._inserts.clear()
        if self._hook_registered:
            self._hook_registered = False
            try:
                self.shell.events.unregister("post_run_cell", self._after_cell)
            except ValueError:
                pass
        registered = _open_widgets.get(self.session)
        if registered is not None:
            registered.discard(self)
        for part in list(walk(self))[1:]:
            part.close()
        super().close()

    # --- callbacks (each one guarded) -------------------------------------------------
    @_guarded
    def _on_send(self, _button: Any = None) -> None:
        if self.ask(self.input.value):
            self.input.value = ""

    @_guarded
    def _on_stop(self, _button: Any = None) -> None:
        self.stop()

    @_guarded
    def _on_new(self, _button: Any = None) -> None:
        if self._busy:
            self._set_status("Wait for the current answer to finish, or press Stop.", tone="idle")
            return
        self.session.reset()
        for part in list(walk(self.messages))[1:]:
            part.close()
        self.messages.children = ()
        self._set_status("Started a new conversation: earlier questions are forgotten.")

    @_guarded
    def _after_cell(self, result: Any = None) -> None:
        if not self._closed:
            self.refresh_frames()

    @_guarded
    def _on_upload(self, change: dict[str, Any]) -> None:
        files = tuple(change.get("new") or ())
        if not files:
            return
        # clear it, so the same file can be uploaded again after a fix
        self.upload.value = ()
        for entry in files:
            name = str(entry.get("name") or "upload")
            content = bytes(entry.get("content") or b"")
            message = AnswerView("", kind="upload")
            message.note(f"Loading `{name}` ({len(content):,} bytes)…")
            append(self.messages, message.box)
            thread = threading.Thread(
                target=self._load,
                args=(message, name, content),
                daemon=True,
                name="dataagent-chat-upload",
            )
            thread.start()

    def _load(self, message: AnswerView, name: str, content: bytes) -> None:
        """Runs on a worker thread: a large workbook must not freeze the kernel."""
        try:
            from ..loaders import load

            loaded = load(
                content,
                filename=name,
                namespace=self.shell.user_ns,
                max_mb=self.config.max_upload_mb,
            )
            data = {"text/plain": repr(loaded)}
            for mime, method in (
                ("text/html", "_repr_html_"),
                ("text/markdown", "_repr_markdown_"),
            ):
                render = getattr(loaded, method, None)
                if render is not None:
                    data[mime] = render()
            # as in %%ask: the Markdown reads better than the repr where HTML is not shown
            data["text/plain"] = data.get("text/markdown") or data["text/plain"]
            summary = widgets.Output()
            summary.add_class("dataagent-chat-loaded")
            summary.outputs = (bundle_output(data),)
            append(message.box, summary)
            self.session.tracker.update(self.shell.user_ns)
            self.refresh_frames()
        except Exception as exc:
            if not isinstance(exc, errors.DataAgentError):
                log.debug("loading %s failed", name, exc_info=True)
            message.error(as_user_error(exc))

    # --- actions on an answer's code --------------------------------------------------
    @_guarded
    def _on_action(self, name: str, answer: AnswerView) -> None:
        """A button under an answer: insert its code, run it, or show it for copying."""
        if name == "insert":
            self._insert(answer)
        elif name == "run":
            self._run(answer)
        elif name == "copy":
            answer.toggle_copy()
        elif name in ("step-run", "step-skip", "step-stop"):
            # an approval asked for by the agent loop (agent_approval="each-step")
            self.session.step_gate.decide(name.removeprefix("step-"))

    def _insert(self, answer: AnswerView) -> None:
        if answer.cells:  # an agent run: its summary and steps, as cells
            text = percent_cells(answer.cells)
        else:
            text = cell_text(answer.question or "(chat)", answer.code)
        request = InsertRequest(
            answer,
            text,
            self.session,
            report=self._report,
            forget=self._inserts.discard,
            cells=answer.cells,
        )
        self._inserts.add(request)
        request.start(self.cell_id)

    def _run(self, answer: AnswerView) -> None:
        code = answer.code
        self.refresh_frames()
        frames = list(self.frames.value) or None
        result = self._answer_view(answer.question, kind="run")
        result.note("▶ Running the code in the sandbox kernel…")
        append(self.messages, result.box)
        if not self._start(
            result, lambda cancel: self.session.run_code(code, frames=frames, cancel=cancel)
        ):
            self._remove(result.box)

    # --- answering in the background --------------------------------------------------
    def _start(self, answer: AnswerView, events: Callable[[Stop], Iterator[Event]]) -> bool:
        """Render ``events(cancel)`` into ``answer`` on a background thread.

        False (and nothing started) when the widget is closed or the session is busy:
        the session's lock is the one "one answer at a time" rule, read here only to
        say so on the status line instead of in the conversation.
        """
        if self._closed:
            return False
        if self.session.busy:
            self._set_status(
                "Another answer is still being written; wait for it or press Stop.", tone="idle"
            )
            return False
        cancel = Stop()
        self._cancel = cancel
        self._started = time.monotonic()
        self._set_busy(True)
        self._set_status("Starting…")

        def deliver(event: Event) -> None:
            answer.handle(event)
            self._status_for(event)

        def end() -> None:
            answer.flush(force=True)
            self._cancel = None
            self._set_busy(False)

        stream_in_background(
            events(cancel), deliver, cancel=cancel, name="dataagent-chat", on_end=end
        )
        return True

    def _status_for(self, event: Event) -> None:
        line = status_line(event, self._elapsed())
        if line is not None:
            self._set_status(*line)

    # --- small helpers ----------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.send_button.disabled = busy
        self.stop_button.disabled = not busy
        self.new_button.disabled = busy

    def _set_status(self, text: str, tone: str = "busy") -> None:
        self.status.value = status_html(text, tone)

    def _answer_view(self, question: str, *, kind: str = "answer") -> AnswerView:
        return AnswerView(question, kind=kind, on_action=self._on_action)

    def _report(self, exc: BaseException) -> None:
        """Show an exception from a callback as one message in the conversation."""
        try:
            if not isinstance(exc, errors.DataAgentError):
                log.debug("chat widget callback failed", exc_info=exc)
            message = AnswerView("", kind="message")
            message.error(as_user_error(exc))
            append(self.messages, message.box)
        except Exception:  # the report itself must never raise into the kernel
            log.debug("could not report a chat widget failure", exc_info=True)

    def _remove(self, *parts: widgets.Widget) -> None:
        """Take messages out of the conversation again (work that could not start)."""
        self.messages.children = tuple(c for c in self.messages.children if c not in parts)
        for part in parts:
            for piece in list(walk(part)):
                piece.close()

    def _show_transcript(self) -> None:
        """Earlier turns of the shared session (from %%ask or another chat), compactly."""
        turns = self.session.transcript()
        if not turns:
            return
        header = widgets.HTML(note_html(f"Earlier in this session ({len(turns)}):"))
        boxes: list[widgets.Widget] = [header]
        for turn in turns:
            user = user_message(turn.get("question", ""))
            answer = self._answer_view(turn.get("question", ""))
            code = turn.get("code") or ""
            if code:
                answer.handle(CodeProposed(code, turn.get("explanation") or ""))
                answer.show_actions()
            elif turn.get("outcome"):
                answer.note(str(turn["outcome"]))
            boxes += [user, answer.box]
        self.messages.children = tuple(boxes)
