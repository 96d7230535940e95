"""The chat widget: a conversation with the Data Agent inside the notebook's output area.

``%dataagent chat`` or ``dataagent_jupyter.chat()`` shows it. It is plain ipywidgets, so it
works wherever ipywidgets work (JupyterLab, Notebook 7, VS Code), and it shares the
session (history, config, sandbox) with ``%%ask``: a follow-up typed here sees the
question asked in a cell, and the other way round.

How it behaves, and why:

- **Questions run on a background thread.** A button callback runs inside the kernel's
  message loop; asking the model there would freeze the kernel, and the Stop click, being
  itself a comm message, could never arrive. The answer streams into the conversation
  (redrawn at most every ``REDRAW`` seconds) and the status line ticks with the engine's
  one-second heartbeats. Stop sets the ``cancel`` event the engine watches; in run mode the
  engine interrupts the child kernel.
- **Answers are Markdown in ``Output`` widgets.** Setting an ``Output``'s ``outputs`` to a
  ``text/markdown`` bundle works from any thread and renders with the front end's own
  Markdown and code highlighting.
- **Insert cell.** A button callback cannot use ``set_next_input`` (that payload belongs to
  an ``execute_reply``, and a click is a comm message). The project's labextension
  listens on the ``dataagent.frontend`` comm target (``comm.request_insert``) and inserts
  the cell below the widget's cell (its id is captured when the widget is created).
  *Fallback:* a front end without the labextension refuses the comm (JupyterLab and
  Notebook 7 close a comm to an unknown target) or does not answer within
  ``INSERT_ACK_TIMEOUT`` seconds (VS Code); the code is then kept as the extension's
  pending code and the conversation says to run ``%dataagent insert`` in any cell, which
  puts it in a new cell below that one (through ``set_next_input``, which every front end
  honours). A late "inserted" answer still replaces the fallback message.
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
  stops what it is running. ``close_all(extension)`` closes every chat widget of an
  extension, for ``%unload_ext``.
"""

from __future__ import annotations

import functools
import html
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import ipywidgets as widgets

from . import errors
from .cell_output import PHASES  # the same phase names as the magics' status line
from .events import CodeProposed, Delta, Done, Event, Failed, Output, RunFailed, Status
from .frames import FrameInfo
from .magics import cell_text
from .options import AskOptions

log = logging.getLogger("dataagent_jupyter.widget")

__all__ = [
    "FALLBACK_INSERT",
    "INSERT_ACK_TIMEOUT",
    "REDRAW",
    "UPLOAD_ACCEPT",
    "ChatWidget",
    "close_all",
    "fenced",
]

#: seconds between two redraws of a streaming answer (a stream may be hundreds of chunks)
REDRAW = 0.1
#: seconds to wait for the labextension to confirm an inserted cell before falling back
INSERT_ACK_TIMEOUT = 1.5
#: what the upload button offers (the loader checks the content, not only the name)
UPLOAD_ACCEPT = ".csv,.tsv,.txt,.gz,.bz2,.zip,.xz,.xlsx,.xlsm,.xls,.ods,.xlsb,.parquet,.jsonl,.json"

FALLBACK_INSERT = (
    "This front end cannot insert cells from a button; run `%dataagent insert` in any "
    "cell to get it as a new cell below."
)

F = TypeVar("F", bound=Callable[..., Any])

# One question or run at a time per session, across every chat widget on it: the session
# keeps one history and one sandbox, and two answers interleaving would corrupt both.
_session_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()
# The open chat widgets of each extension, so that unloading it can close them.
_open_widgets: weakref.WeakKeyDictionary[Any, weakref.WeakSet[ChatWidget]] = (
    weakref.WeakKeyDictionary()
)


def _session_lock(session: Any) -> threading.Lock:
    with _locks_guard:
        lock = _session_locks.get(session)
        if lock is None:
            lock = _session_locks[session] = threading.Lock()
        return lock


def close_all(extension: Any) -> None:
    """Close every open chat widget of ``extension`` (call it when the extension unloads)."""
    for chat in list(_open_widgets.get(extension, ())):
        chat.close()


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


# --- rendering helpers ---------------------------------------------------------------------


def _markdown(text: str) -> dict[str, Any]:
    """An output (for ``Output.outputs``) that the front end renders as Markdown."""
    return {
        "output_type": "display_data",
        "data": {"text/markdown": text, "text/plain": text},
        "metadata": {},
    }


def _bundle(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"output_type": "display_data", "data": dict(data), "metadata": dict(metadata or {})}


def fenced(code: str, language: str = "python") -> str:
    """``code`` as a Markdown code block whose fence no backtick run in the code can close."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{language}\n{code.rstrip()}\n{ticks}"


def _error_output(error: errors.DataAgentError) -> dict[str, Any]:
    plain = f"{error.title}: {error.message}" + (f"\n{error.hint}" if error.hint else "")
    return _bundle(
        {
            "text/html": error._repr_html_(),
            "text/markdown": error._repr_markdown_(),
            "text/plain": plain,
        }
    )


def _as_user_error(exc: BaseException) -> errors.DataAgentError:
    if isinstance(exc, errors.DataAgentError):
        return exc
    return errors.DataAgentError(
        f"the chat widget failed: {type(exc).__name__}: {exc}",
        hint="This is a bug in the Data Agent; the details are in the 'dataagent_jupyter' "
        "log at DEBUG level. The conversation and your notebook are unaffected.",
    )


def _frame_label(info: FrameInfo) -> str:
    shape = " × ".join(f"{n:,}" for n in info.shape)
    return f"{info.name}  ({info.kind}, {shape})"


def _walk(widget: Any) -> Iterator[Any]:
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from _walk(child)


def _box(*classes: str, **layout: str) -> widgets.VBox:
    box = widgets.VBox(layout=widgets.Layout(**layout))
    for name in classes:
        box.add_class(name)
    return box


def _append(box: widgets.Box, *children: widgets.Widget) -> None:
    box.children = (*box.children, *children)


def _user_message(question: str) -> widgets.HTML:
    """The user's question as typed: escaped (it is not Markdown), line breaks kept."""
    user = widgets.HTML(
        '<div style="white-space:pre-wrap;padding:4px 8px;border-radius:4px;'
        'background:var(--jp-layout-color2,#eeeeee)">'
        f"{html.escape(question)}</div>"
    )
    user.add_class("dataagent-chat-user")
    return user


def _note_html(text: str, *, colour: str = "var(--jp-ui-font-color2, #616161)") -> str:
    return f'<div style="font-size:0.9em;color:{colour}">{text}</div>'


# --- one message of the conversation -------------------------------------------------------


class _Answer:
    """One answer in the conversation: streamed text, code, run outputs, action buttons.

    It renders a question's (or a run's) events; the chat decides where it goes and what
    the buttons do.
    """

    def __init__(self, chat: ChatWidget, question: str, *, kind: str = "answer") -> None:
        self.chat = chat
        self.question = question
        self.box = _box(
            f"dataagent-chat-{kind}",
            border_left="3px solid var(--jp-brand-color1, #1976d2)",
            padding="2px 0 2px 10px",
            margin="4px 0 10px 0",
        )
        self.code = ""
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
        elif isinstance(event, Done):
            self.flush(force=True)
            self.code = event.code or self.code
            if self.code:
                self.show_actions()
        elif isinstance(event, Failed):
            self.flush(force=True)
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
        self._text.outputs = (_markdown(self._buffer),)

    # --- pieces ----------------------------------------------------------------------
    def _new_section(self, attempt: int) -> None:
        self.flush(force=True)
        self._attempt = attempt
        self._buffer = f"**Attempt {attempt}.** " if attempt > 1 else ""
        self._drawn = ""
        self._text = widgets.Output()
        self._text.add_class("dataagent-chat-text")
        self._results = None
        _append(self.box, self._text)

    def _show_code(self, event: CodeProposed) -> None:
        if self._text is None or event.attempt != self._attempt:
            self._new_section(event.attempt)
        assert self._text is not None
        heading = f"**Attempt {event.attempt}.** " if event.attempt > 1 else ""
        parts = [heading + (event.explanation.strip() or "Proposed code:"), fenced(event.code)]
        if event.warnings:
            parts.append(f"> ⚠️ Review: this code {'; '.join(event.warnings)}.")
        self._buffer = self._drawn = "\n\n".join(parts)
        self._text.outputs = (_markdown(self._buffer),)
        self.code = event.code

    def _show_output(self, event: Output) -> None:
        if self._results is None:
            self._results = widgets.Output()
            self._results.add_class("dataagent-chat-results")
            _append(self.box, self._results)
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
            outputs.append(_bundle(event.data, event.metadata))
        if event.saved:
            outputs.append(_markdown(f"Chart saved to `{event.saved}`."))
        self._results.outputs = tuple(outputs)

    def note(self, markdown: str) -> None:
        """A short Markdown line in this answer (a failed attempt, Stopped, a hint)."""
        out = widgets.Output()
        out.add_class("dataagent-chat-note")
        out.outputs = (_markdown(markdown),)
        _append(self.box, out)

    def error(self, error: errors.DataAgentError) -> None:
        """The error's title, message and hint, as one clear message (never a traceback)."""
        out = widgets.Output()
        out.add_class("dataagent-chat-error")
        out.outputs = (_error_output(error),)
        _append(self.box, out)

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
        insert.on_click(lambda _b: self.chat._insert(self))
        run.on_click(lambda _b: self.chat._run(self))
        copy.on_click(lambda _b: self.chat._copy(self))
        self._actions = widgets.HBox([insert, run, copy])
        self._action_note = widgets.Output()
        self._action_note.add_class("dataagent-chat-action-note")
        _append(self.box, self._actions, self._action_note)

    def action_note(self, markdown: str) -> None:
        """Replace the line under the buttons (the outcome of the last button pressed)."""
        if self._action_note is None:
            self.note(markdown)
        else:
            self._action_note.outputs = (_markdown(markdown),)

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
        _append(self.box, self._copy_box)


class _InsertRequest:
    """One "Insert cell" click: waits for the labextension's answer, else falls back."""

    def __init__(self, chat: ChatWidget, answer: _Answer, text: str) -> None:
        self.chat = chat
        self.answer = answer
        self.text = text
        self._lock = threading.Lock()
        self._done = False
        self.timer = threading.Timer(INSERT_ACK_TIMEOUT, self.on_timeout)
        self.timer.daemon = True

    def on_ack(self, ok: bool) -> None:
        """The front end answered (or closed the comm: ``ok`` False)."""
        try:
            with self._lock:
                late = self._done
                self._done = True
            self.timer.cancel()
            self.chat._forget_timer(self.timer)
            if ok:
                # a late "yes" after the fallback was shown still means the cell is there
                self.answer.action_note("✓ Inserted a new cell below the chat.")
            elif not late:
                self.fall_back()
        except Exception as exc:
            self.chat._report(exc)

    def on_timeout(self) -> None:
        """Runs on the timer's thread: no answer in time, so this front end cannot insert."""
        try:
            with self._lock:
                if self._done:
                    return
                self._done = True
            self.chat._forget_timer(self.timer)
            self.fall_back()
        except Exception as exc:
            self.chat._report(exc)

    def fall_back(self) -> None:
        """Keep the code for ``%dataagent insert`` and say so under the buttons."""
        self.chat.extension.session.pending_cell = self.text
        self.answer.action_note(FALLBACK_INSERT)


# --- the widget ----------------------------------------------------------------------------


class ChatWidget(widgets.VBox):
    """A chat with the Data Agent about the notebook's DataFrames.

    Built on ``extension.session``, so it shares history and configuration with the
    magics. The parts are public attributes (``input``, ``send_button``, ``stop_button``,
    ``frames``, ``mode``, ``upload``, ``messages``, ``status``) so a notebook can script
    it; ``ask(question)`` is the same as typing and pressing Send.
    """

    def __init__(self, extension: Any, **kwargs: Any) -> None:
        self.extension = extension
        self.session = extension.session
        self.config = extension.config
        self.shell = extension.shell
        #: the cell the widget was created in: "Insert cell" puts the new cell below it
        self.cell_id = self._current_cell_id()
        self._closed = False
        self._busy = False
        self._cancel: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = 0.0
        self._timers: set[threading.Timer] = set()
        self._frames_seen: tuple[Any, ...] | None = None
        self._hook_registered = False

        self.title = widgets.HTML("<b>Data Agent</b>")
        self.mode = widgets.ToggleButtons(
            options=[("insert", "insert"), ("run", "run")],
            value=self.config.mode,
            tooltips=[
                "Propose code to review; nothing runs",
                "Run the code in the sandboxed child kernel and show the answer",
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
        self.messages = _box("dataagent-chat-messages", width="100%")
        self.status = widgets.HTML(_note_html("Ready."))
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
        _open_widgets.setdefault(extension, weakref.WeakSet()).add(self)

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
        user = _user_message(question)
        answer = _Answer(self, question)

        def work(cancel: threading.Event) -> None:
            options = AskOptions(frames=frames, mode=mode)
            events = self.session.ask(question, options, cancel=cancel)
            self._drive(answer, events)

        _append(self.messages, user, answer.box)
        if not self._start(work):
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
        self.frames.options = [(_frame_label(i), i.name) for i in infos]
        self.frames.value = tuple(keep)
        self.frames.rows = min(max(len(infos), 2), 6)
        if infos:
            text = "Frames (select some to focus the question; none selected: all of them)"
        else:
            text = "No DataFrames yet: define one in a cell, or upload a file."
        self.frames_label.value = _note_html(text)

    def close(self) -> None:
        """Stop what is running, remove the hooks, and close every part of the widget."""
        if getattr(self, "_closed", True):
            super().close()
            return
        self._closed = True
        if self._cancel is not None:
            self._cancel.set()
        for timer in list(self._timers):
            timer.cancel()
        self._timers.clear()
        if self._hook_registered:
            self._hook_registered = False
            try:
                self.shell.events.unregister("post_run_cell", self._after_cell)
            except ValueError:
                pass
        registered = _open_widgets.get(self.extension)
        if registered is not None:
            registered.discard(self)
        for part in list(_walk(self))[1:]:
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
        for part in list(_walk(self.messages))[1:]:
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
            message = _Answer(self, "", kind="upload")
            message.note(f"Loading `{name}` ({len(content):,} bytes)…")
            _append(self.messages, message.box)
            thread = threading.Thread(
                target=self._load,
                args=(message, name, content),
                daemon=True,
                name="dataagent-chat-upload",
            )
            thread.start()

    def _load(self, message: _Answer, name: str, content: bytes) -> None:
        """Runs on a worker thread: a large workbook must not freeze the kernel."""
        try:
            from .loaders import load

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
            summary = widgets.Output()
            summary.add_class("dataagent-chat-loaded")
            summary.outputs = (_bundle(data),)
            _append(message.box, summary)
            self.session.tracker.update(self.shell.user_ns)
            self.refresh_frames()
        except Exception as exc:
            if not isinstance(exc, errors.DataAgentError):
                log.debug("loading %s failed", name, exc_info=True)
            message.error(_as_user_error(exc))

    # --- actions on an answer's code --------------------------------------------------
    @_guarded
    def _insert(self, answer: _Answer) -> None:
        text = cell_text(answer.question or "(chat)", answer.code)
        request = _InsertRequest(self, answer, text)
        try:
            from .comm import request_insert
        except ImportError:  # a build without the front-end comm
            request.fall_back()
            return
        # keep it for %dataagent insert too: the magic gives the same code with one action
        self.extension.session.pending_cell = text
        answer.action_note("Inserting a new cell below the chat…")
        self._timers.add(request.timer)
        request.timer.start()
        request_insert(text, cell_id=self.cell_id, replace=False, on_ack=request.on_ack)

    @_guarded
    def _run(self, answer: _Answer) -> None:
        code = answer.code
        self.refresh_frames()
        frames = list(self.frames.value) or None
        result = _Answer(self, answer.question, kind="run")
        result.note("▶ Running the code in the sandbox kernel…")

        def work(cancel: threading.Event) -> None:
            self._drive(result, self.session.run_code(code, frames=frames, cancel=cancel))

        _append(self.messages, result.box)
        if not self._start(work):
            self._remove(result.box)

    @_guarded
    def _copy(self, answer: _Answer) -> None:
        answer.toggle_copy()

    # --- running work in the background -----------------------------------------------
    def _start(self, work: Callable[[threading.Event], None]) -> bool:
        """Run ``work(cancel)`` on a background thread, one at a time per session."""
        if self._closed:
            return False
        lock = _session_lock(self.session)
        if not lock.acquire(blocking=False):
            self._set_status(
                "Another answer is still being written; wait for it or press Stop.", tone="idle"
            )
            return False
        cancel = threading.Event()
        self._cancel = cancel
        self._started = time.monotonic()
        self._set_busy(True)
        self._set_status("Starting…")

        def target() -> None:
            try:
                work(cancel)
            except Exception as exc:
                self._report(exc)
            finally:
                self._cancel = None
                lock.release()
                self._set_busy(False)

        self._thread = threading.Thread(target=target, daemon=True, name="dataagent-chat")
        try:
            self._thread.start()
        except BaseException:
            self._cancel = None
            lock.release()
            self._set_busy(False)
            raise
        return True

    def _drive(self, answer: _Answer, events: Iterable[Event]) -> None:
        """Render ``events`` into ``answer`` and the status line (on the worker thread)."""
        ended = False
        try:
            for event in events:
                answer.handle(event)
                self._status_for(event)
                if isinstance(event, Done | Failed):
                    ended = True
                    break
        except Exception as exc:
            if not isinstance(exc, errors.DataAgentError):
                log.debug("a chat question failed", exc_info=True)
            answer.error(_as_user_error(exc))
            self._set_status(f"Failed after {self._elapsed():.1f} s.", tone="error")
            ended = True
        finally:
            answer.flush(force=True)
            if not ended:
                self._set_status("The answer ended without a result.", tone="error")

    def _status_for(self, event: Event) -> None:
        if isinstance(event, Status):
            label = PHASES.get(event.phase, event.phase)
            detail = f" {event.message}" if event.message else ""
            attempt = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            self._set_status(f"{label}{detail}{attempt} · {self._elapsed():.0f} s")
        elif isinstance(event, Done):
            tokens = ""
            if event.usage.prompt_tokens or event.usage.completion_tokens:
                tokens = (
                    f" · {event.usage.prompt_tokens:,} → {event.usage.completion_tokens:,} tokens"
                )
            cached = " · from cache" if event.cached else ""
            what = "Ran the code" if event.outcome == "ran" else "Answered"
            self._set_status(
                f"{what} in {event.elapsed:.1f} s · {event.model}{tokens}{cached}", tone="ok"
            )
        elif isinstance(event, Failed):
            if isinstance(event.error, errors.Cancelled):
                self._set_status(f"Stopped after {event.elapsed:.1f} s.", tone="idle")
            else:
                self._set_status(f"{event.error.title} after {event.elapsed:.1f} s.", tone="error")

    # --- small helpers ----------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.monotonic() - self._started

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.send_button.disabled = busy
        self.stop_button.disabled = not busy
        self.new_button.disabled = busy

    def _set_status(self, text: str, *, tone: str = "busy") -> None:
        colour, icon = {
            # no icon while busy: an hourglass emoji is missing from many UI fonts
            "busy": ("var(--jp-brand-color1, #1565c0)", ""),
            "ok": ("var(--jp-success-color1, #2e7d32)", "✓"),
            "error": ("var(--jp-error-color1, #c62828)", "✗"),
            "idle": ("var(--jp-ui-font-color2, #616161)", ""),
        }[tone]
        prefix = f"{icon} " if icon else ""
        self.status.value = _note_html(prefix + html.escape(text), colour=colour)

    def _report(self, exc: BaseException) -> None:
        """Show an exception from a callback as one message in the conversation."""
        try:
            if not isinstance(exc, errors.DataAgentError):
                log.debug("chat widget callback failed", exc_info=exc)
            message = _Answer(self, "", kind="message")
            message.error(_as_user_error(exc))
            _append(self.messages, message.box)
        except Exception:  # the report itself must never raise into the kernel
            log.debug("could not report a chat widget failure", exc_info=True)

    def _remove(self, *parts: widgets.Widget) -> None:
        """Take messages out of the conversation again (work that could not start)."""
        self.messages.children = tuple(c for c in self.messages.children if c not in parts)
        for part in parts:
            for piece in list(_walk(part)):
                piece.close()

    def _forget_timer(self, timer: threading.Timer) -> None:
        self._timers.discard(timer)

    def _show_transcript(self) -> None:
        """Earlier turns of the shared session (from %%ask or another chat), compactly."""
        turns = self.session.transcript()
        if not turns:
            return
        header = widgets.HTML(_note_html(f"Earlier in this session ({len(turns)}):"))
        boxes: list[widgets.Widget] = [header]
        for turn in turns:
            user = _user_message(turn.get("question", ""))
            answer = _Answer(self, turn.get("question", ""))
            code = turn.get("code") or ""
            if code:
                answer.handle(CodeProposed(code, turn.get("explanation") or ""))
                answer.show_actions()
            elif turn.get("outcome"):
                answer.note(str(turn["outcome"]))
            boxes += [user, answer.box]
        self.messages.children = tuple(boxes)

    @staticmethod
    def _current_cell_id() -> str | None:
        """The executing cell's id, as JupyterLab sends it in the request's metadata."""
        try:
            from .comm import current_cell_id
        except ImportError:
            return None
        try:
            return current_cell_id()
        except Exception:
            return None
