"""The kernel side of the side panel's protocol (see ``js/PROTOCOL.md``).

The JupyterLab panel opens the ``dataagent`` comm target registered here and sends small
JSON requests (hello, list_frames, ask, run, cancel, status, reset). Questions and runs
are answered on a background thread (``background.stream_in_background``) as a stream of
``{"type": "event", "id", "event"}`` messages, so the kernel keeps answering (the frame
list, a Stop) while the model writes. One question at a time is the session's rule; a
second one gets the session's refusal as its only event.

The other direction, the kernel asking JupyterLab to insert a cell, is ``frontend.py``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import errors
from ._version import __version__
from .background import Stop, stream_in_background
from .events import Event, Failed, event_to_json
from .fixes import fix_question, nothing_to_fix
from .options import AskOptions
from .session import Session

log = logging.getLogger("dataagent_jupyter.comm")

__all__ = ["PROTOCOL_VERSION", "TARGET", "register", "unregister"]

#: comm target the panel opens
TARGET = "dataagent"
#: bumped when a message changes incompatibly; sent in the hello reply
PROTOCOL_VERSION = 1

# one registration per shell, so that unload_ext removes exactly what load_ext added
_registrations: dict[int, _Registration] = {}


def register(shell: Any, session: Session) -> None:
    """Register the ``dataagent`` comm target on ``shell``'s kernel (no-op without a kernel)."""
    manager = _comm_manager(shell)
    if manager is None:
        return  # terminal IPython: there is no front end to talk to
    unregister(shell)
    registration = _Registration(session)
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
    """The open panel comms of one kernel, all talking to the kernel's session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.channels: list[_Channel] = []

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
        self.running: dict[str, Stop] = {}
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
            "step": self._step,
            "reset": self._reset,
            "fix": self._fix,
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
        session = self.registration.session
        self.send(
            {
                "type": "hello",
                "version": __version__,
                "protocol": PROTOCOL_VERSION,
                "status": session.status_info(),
                "frames": [f.to_json() for f in session.list_frames()],
                "history": session.transcript(),
                "running": self.registration.session.busy,
            }
        )

    def _list_frames(self, data: dict[str, Any]) -> None:
        session = self.registration.session
        self.send({"type": "frames", "frames": [f.to_json() for f in session.list_frames()]})

    def _status(self, data: dict[str, Any]) -> None:
        session = self.registration.session
        self.send({"type": "status", **session.status_info(), "history": session.transcript()})

    def _reset(self, data: dict[str, Any]) -> None:
        self.registration.session.reset()
        self.send({"type": "reset", "ok": True})

    def _cancel(self, data: dict[str, Any]) -> None:
        event = self.running.get(str(data.get("id", "")))
        if event is not None:
            event.set()

    def _step(self, data: dict[str, Any]) -> None:
        # an agent step waiting for Run / Skip / Stop (agent_approval = "each-step")
        self.registration.session.step_gate.decide(str(data.get("decision")))

    def _ask(self, data: dict[str, Any]) -> None:
        request_id = _request_id(data)
        question = data.get("question")
        if not isinstance(question, str):
            raise errors.UsageError("an ask request needs a question (a string).")
        options = AskOptions(frames=_frame_names(data.get("frames")), mode=data.get("mode"))
        session = self.registration.session
        self._start(request_id, lambda cancel: session.ask(question, options, cancel=cancel))

    def _fix(self, data: dict[str, Any]) -> None:
        """The panel's "Fix with Data Agent": a fix turn, streamed like an answer."""
        request_id = _request_id(data)
        options = AskOptions(mode=data.get("mode"))
        session = self.registration.session
        failure = session.failures.last
        if failure is None:
            raise errors.UsageError(nothing_to_fix(session.failures))
        fix = fix_question(failure, privacy=session.config.privacy, namespace=session.namespace)
        self._start(request_id, lambda cancel: session.fix(fix, options, cancel=cancel))

    def _run(self, data: dict[str, Any]) -> None:
        request_id = _request_id(data)
        code = data.get("code")
        if not isinstance(code, str) or not code.strip():
            raise errors.UsageError("a run request needs code to run.")
        frames = _frame_names(data.get("frames"))
        session = self.registration.session
        self._start(request_id, lambda cancel: session.run_code(code, frames=frames, cancel=cancel))

    # --- streaming -------------------------------------------------------------------
    def _start(self, request_id: str, events: Callable[[Stop], Iterator[Event]]) -> None:
        """Answer on a background thread; a refusal (busy) arrives as the only event."""
        cancel = Stop()
        self.running[request_id] = cancel
        stream_in_background(
            events(cancel),
            lambda event: self.send_event(request_id, event),
            cancel=cancel,
            name=f"dataagent-ask-{request_id}",
            on_end=lambda: self._forget(request_id),
        )

    def _forget(self, request_id: str) -> None:
        self.running.pop(request_id, None)

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
