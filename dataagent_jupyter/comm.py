"""The kernel side of the side panel's protocol (see ``js/PROTOCOL.md``).

Two comm targets:

``dataagent`` (registered here, opened by the JupyterLab panel)
    The panel sends small JSON requests (hello, list_frames, ask, run, cancel, status,
    reset); questions and runs are answered on a background thread as a stream of
    ``{"type": "event", "id", "event"}`` messages, so the kernel keeps answering (the frame
    list, a Stop) while the model writes.

``dataagent.frontend`` (registered by the labextension on every notebook kernel)
    The kernel opens it to ask JupyterLab to insert a code cell: the chat widget's
    "Insert cell" button runs in a comm callback, where ``set_next_input`` does nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import errors
from ._version import __version__
from .events import Done, Event, Failed, event_to_json
from .options import AskOptions

log = logging.getLogger("dataagent_jupyter.comm")

__all__ = [
    "FRONTEND_TARGET",
    "PROTOCOL_VERSION",
    "TARGET",
    "current_cell_id",
    "register",
    "request_insert",
    "unregister",
]

#: comm target the panel opens
TARGET = "dataagent"
#: comm target the labextension registers on each notebook kernel (cell insertion)
FRONTEND_TARGET = "dataagent.frontend"
#: bumped when a message changes incompatibly; sent in the hello reply
PROTOCOL_VERSION = 1

GetSession = Callable[[], Any]

#: seconds the engine gets to end a stopped question by itself before the stream is cut
STOP_GRACE = 2.0

# one registration per shell, so that unload_ext removes exactly what load_ext added
_registrations: dict[int, _Registration] = {}


def register(shell: Any, get_session: GetSession) -> None:
    """Register the ``dataagent`` comm target on ``shell``'s kernel (no-op without a kernel)."""
    manager = _comm_manager(shell)
    if manager is None:
        return  # terminal IPython: there is no front end to talk to
    unregister(shell)
    registration = _Registration(get_session)
    manager.register_target(TARGET, registration.open)
    _registrations[id(shell)] = registration


def unregister(shell: Any) -> None:
    """Remove the comm target, stop running questions and close the panel's comms."""
    registration = _registrations.pop(id(shell), None)
    if registration is None:
        return
    manager = _comm_manager(shell)
    if manager is not None and manager.targets.get(TARGET) == registration.open:
        manager.unregister_target(TARGET, registration.open)
    registration.close()


def _comm_manager(shell: Any) -> Any:
    return getattr(getattr(shell, "kernel", None), "comm_manager", None)


class _Registration:
    """The open panel comms of one kernel and the one question allowed to run at a time."""

    def __init__(self, get_session: GetSession) -> None:
        self.get_session = get_session
        self.channels: list[_Channel] = []
        # the Session is not built for two questions at once (shared history, one sandbox)
        self.busy = threading.Lock()

    def open(self, comm: Any, msg: dict[str, Any]) -> None:
        channel = _Channel(self, comm)
        self.channels.append(channel)
        data = msg.get("content", {}).get("data") or {}
        if data.get("type"):  # the panel sends hello with the open, saving a round trip
            channel.handle(data)

    def close(self) -> None:
        for channel in list(self.channels):
            channel.close()
        self.channels.clear()


class _Channel:
    """One open ``dataagent`` comm: dispatches requests, streams events back."""

    def __init__(self, registration: _Registration, comm: Any) -> None:
        self.registration = registration
        self.comm = comm
        self.running: dict[str, threading.Event] = {}
        self._send_lock = threading.Lock()
        comm.on_msg(self._on_msg)
        comm.on_close(self._on_close)

    # --- incoming --------------------------------------------------------------------
    def _on_msg(self, msg: dict[str, Any]) -> None:
        self.handle(msg.get("content", {}).get("data") or {})

    def _on_close(self, msg: dict[str, Any]) -> None:
        self._stop_all()
        if self in self.registration.channels:
            self.registration.channels.remove(self)

    def handle(self, data: dict[str, Any]) -> None:
        """Answer one request; a failure becomes an ``error`` message, never a traceback."""
        kind = data.get("type")
        handler = {
            "hello": self._hello,
            "list_frames": self._list_frames,
            "status": self._status,
            "ask": self._ask,
            "run": self._run,
            "cancel": self._cancel,
            "reset": self._reset,
        }.get(str(kind))
        try:
            if handler is None:
                raise errors.UsageError(f"unknown request type {kind!r}.")
            handler(data)
        except errors.DataAgentError as exc:
            self.send(
                {"type": "error", "request": kind, "id": data.get("id"), "error": exc.to_json()}
            )
        except Exception as exc:
            log.exception("dataagent comm request %r failed", kind)
            error = errors.DataAgentError(
                f"the kernel could not answer {kind!r}: {type(exc).__name__}: {exc}"
            )
            self.send(
                {"type": "error", "request": kind, "id": data.get("id"), "error": error.to_json()}
            )

    def _hello(self, data: dict[str, Any]) -> None:
        session = self.registration.get_session()
        self.send(
            {
                "type": "hello",
                "version": __version__,
                "protocol": PROTOCOL_VERSION,
                "status": session.status_info(),
                "frames": [f.to_json() for f in session.list_frames()],
                "history": session.transcript(),
                "running": self.registration.busy.locked(),
            }
        )

    def _list_frames(self, data: dict[str, Any]) -> None:
        session = self.registration.get_session()
        self.send({"type": "frames", "frames": [f.to_json() for f in session.list_frames()]})

    def _status(self, data: dict[str, Any]) -> None:
        session = self.registration.get_session()
        self.send({"type": "status", **session.status_info(), "history": session.transcript()})

    def _reset(self, data: dict[str, Any]) -> None:
        self.registration.get_session().reset()
        self.send({"type": "reset", "ok": True})

    def _cancel(self, data: dict[str, Any]) -> None:
        event = self.running.get(str(data.get("id", "")))
        if event is not None:
            event.set()

    def _ask(self, data: dict[str, Any]) -> None:
        request_id = _request_id(data)
        question = data.get("question")
        if not isinstance(question, str):
            raise errors.UsageError("an ask request needs a question (a string).")
        options = AskOptions(frames=_frame_names(data.get("frames")), mode=data.get("mode"))
        session = self.registration.get_session()
        self._start(request_id, lambda cancel: session.ask(question, options, cancel=cancel))

    def _run(self, data: dict[str, Any]) -> None:
        request_id = _request_id(data)
        code = data.get("code")
        if not isinstance(code, str) or not code.strip():
            raise errors.UsageError("a run request needs code to run.")
        frames = _frame_names(data.get("frames"))
        session = self.registration.get_session()
        self._start(request_id, lambda cancel: session.run_code(code, frames=frames, cancel=cancel))

    # --- streaming -------------------------------------------------------------------
    def _start(self, request_id: str, events: Callable[[threading.Event], Iterator[Event]]) -> None:
        if not self.registration.busy.acquire(blocking=False):
            self.send_event(
                request_id,
                Failed(
                    errors.UsageError(
                        "another question is still being answered in this kernel.",
                        hint="Wait for it to finish, or press Stop.",
                    )
                ),
            )
            return
        cancel = _Stop()
        self.running[request_id] = cancel
        thread = threading.Thread(
            target=self._stream,
            args=(request_id, events, cancel),
            name=f"dataagent-ask-{request_id}",
            daemon=True,
        )
        try:
            thread.start()
        except BaseException:
            self.running.pop(request_id, None)
            self.registration.busy.release()
            raise

    def _stream(
        self, request_id: str, events: Callable[[threading.Event], Iterator[Event]], cancel: _Stop
    ) -> None:
        """Runs on the background thread: forwards events until Done or Failed.

        After Stop the engine normally ends with its own Cancelled event; if a phase does
        not notice within ``STOP_GRACE`` seconds, the generator is closed here (the engine
        yields a heartbeat every second, so this loop always gets the chance).
        """
        ended = False
        stream = events(cancel)
        try:
            for event in stream:
                if cancel.overdue(STOP_GRACE) and not isinstance(event, Done | Failed):
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()
                    break
                self.send_event(request_id, event)
                if isinstance(event, Done | Failed):
                    ended = True
                    break
        except errors.DataAgentError as exc:
            self.send_event(request_id, Failed(exc))
            ended = True
        except Exception as exc:
            log.exception("dataagent question %s failed", request_id)
            self.send_event(
                request_id,
                Failed(
                    errors.DataAgentError(f"the Data Agent failed: {type(exc).__name__}: {exc}")
                ),
            )
            ended = True
        finally:
            if not ended:
                error: errors.DataAgentError = (
                    errors.Cancelled("stopped.")
                    if cancel.is_set()
                    else errors.DataAgentError("the answer ended without a result.")
                )
                self.send_event(request_id, Failed(error))
            self.running.pop(request_id, None)
            self.registration.busy.release()

    def send_event(self, request_id: str, event: Event) -> None:
        try:
            payload = event_to_json(event)
        except Exception as exc:  # an unserialisable event must not kill the stream
            log.exception("could not encode a %s event", type(event).__name__)
            payload = event_to_json(
                Failed(errors.DataAgentError(f"an event could not be sent to the panel: {exc}"))
            )
        self.send({"type": "event", "id": request_id, "event": payload})

    def send(self, data: dict[str, Any]) -> None:
        # a round trip through json keeps odd values (numpy scalars, paths) from
        # breaking the kernel's serializer; both threads send, hence the lock
        clean = json.loads(json.dumps(data, default=_jsonable))
        with self._send_lock:
            self.comm.send(clean)

    def _stop_all(self) -> None:
        for event in list(self.running.values()):
            event.set()

    def close(self) -> None:
        self._stop_all()
        try:
            self.comm.close()
        except Exception:  # the kernel may be shutting down
            log.debug("closing a dataagent comm failed", exc_info=True)


class _Stop(threading.Event):
    """The cancel event handed to the engine, remembering when Stop was pressed."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def set(self) -> None:
        if self.at is None:
            self.at = time.monotonic()
        super().set()

    def overdue(self, grace: float) -> bool:
        return self.at is not None and time.monotonic() - self.at > grace


def _request_id(data: dict[str, Any]) -> str:
    request_id = data.get("id")
    if not isinstance(request_id, str) or not request_id:
        raise errors.UsageError("the request has no id (a non-empty string).")
    return request_id


def _frame_names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.UsageError("frames must be a list of names, or null for all frames.")
    return tuple(value) or None


def _jsonable(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return item()
        except Exception:
            pass
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


# --- kernel → front end: cell insertion ------------------------------------------------


def current_cell_id() -> str | None:
    """The id of the cell being executed, as JupyterLab sends it (``metadata.cellId``).

    Call it while a cell runs (e.g. when the chat widget is created) and keep it: in a
    widget's button callback the parent message is the widget's comm message instead.
    """
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent()
    except Exception:
        return None
    cell_id = (parent or {}).get("metadata", {}).get("cellId")
    return cell_id if isinstance(cell_id, str) and cell_id else None


def request_insert(
    code: str,
    *,
    cell_id: str | None,
    replace: bool = False,
    on_ack: Callable[[bool], None] | None = None,
) -> None:
    """Ask JupyterLab to insert ``code`` as a new cell below ``cell_id`` (or the active cell).

    ``replace=True`` replaces that cell's source instead. ``on_ack(ok)`` is called once: with
    the front end's answer, or ``False`` when it closes the comm without one (a front end
    that does not know the ``dataagent.frontend`` target, such as classic Notebook).
    Nothing is called when no front end answers at all.
    """
    import comm as comm_package

    answered = False

    def finish(ok: bool) -> None:
        nonlocal answered
        if answered:
            return
        answered = True
        if on_ack is not None:
            try:
                on_ack(ok)
            except Exception:
                log.exception("insert-cell acknowledgement callback failed")

    # open only after the callbacks are set: a reply may be handled on another thread
    channel = comm_package.create_comm(target_name=FRONTEND_TARGET, primary=False)

    def on_msg(msg: dict[str, Any]) -> None:
        data = msg.get("content", {}).get("data") or {}
        if data.get("type") == "inserted":
            finish(bool(data.get("ok")))
            channel.close()

    channel.on_msg(on_msg)
    channel.on_close(lambda msg: finish(False))
    channel.open(
        data={"type": "insert_cell", "code": code, "cell_id": cell_id, "replace": bool(replace)}
    )
