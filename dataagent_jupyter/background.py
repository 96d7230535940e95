"""Answering on a background thread: the one runner the chat widget and the panel's comm use.

Both front ends receive a question inside the kernel's message loop (a button click, a
comm message). Answering there would freeze the kernel, and a Stop, itself a message,
could never arrive. So the event stream is driven on a thread and each event handed to
the front end's ``deliver``.

The stream's first event is taken on the caller's thread: that is when the session takes
its busy lock, so a second question is refused at once, in order, instead of racing a
thread that has not started yet. Whatever happens, the front end sees exactly one final
``Done`` or ``Failed`` and ``on_end`` runs once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from . import errors
from .events import Done, Event, Failed

log = logging.getLogger("dataagent_jupyter.background")

__all__ = ["STOP_GRACE", "Stop", "stream_in_background"]

#: seconds the engine gets to end a stopped question by itself before the stream is cut
STOP_GRACE = 2.0


class Stop(threading.Event):
    """The cancel event handed to the engine, remembering when Stop was pressed."""

    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def set(self) -> None:
        if self.at is None:
            self.at = time.monotonic()
        super().set()

    def overdue(self, grace: float) -> bool:
        """Whether Stop was pressed more than ``grace`` seconds ago."""
        return self.at is not None and time.monotonic() - self.at > grace


def stream_in_background(
    events: Iterator[Event],
    deliver: Callable[[Event], None],
    *,
    cancel: Stop,
    name: str,
    on_end: Callable[[], None] | None = None,
) -> None:
    """Drive ``events`` (made with ``cancel``) to its end, handing each to ``deliver``.

    The first event is taken here, the rest on a daemon thread called ``name``. After
    Stop the engine normally ends with its own ``Cancelled``; if it has not within
    ``STOP_GRACE`` seconds the stream is closed and a ``Cancelled`` delivered for it (the
    engine yields a heartbeat every second, so the check always gets its chance).
    """
    driver = _Driver(events, deliver, cancel, on_end)
    if not driver.step():
        driver.end()
        return
    thread = threading.Thread(target=driver.run, name=name, daemon=True)
    try:
        thread.start()
    except BaseException:
        driver.end()
        raise


class _Driver:
    """One stream being driven: what has been delivered, and how it must end."""

    def __init__(
        self,
        events: Iterator[Event],
        deliver: Callable[[Event], None],
        cancel: Stop,
        on_end: Callable[[], None] | None,
    ) -> None:
        self.events = events
        self.deliver = deliver
        self.cancel = cancel
        self.on_end = on_end
        self.ended = False

    def step(self) -> bool:
        """Deliver the next event; False once the stream has ended (or must end)."""
        try:
            event = next(self.events)
        except StopIteration:
            return False
        except Exception as exc:  # the session never raises; another stream might
            self._final(Failed(_as_error(exc)))
            return False
        if self.cancel.overdue(STOP_GRACE) and not isinstance(event, Done | Failed):
            return False
        try:
            self.deliver(event)
        except Exception as exc:  # showing it failed: say so once, in the front end
            self._final(Failed(_as_error(exc)))
            return False
        if isinstance(event, Done | Failed):
            self.ended = True
            return False
        return True

    def run(self) -> None:
        """The thread's body: the rest of the stream, then the end."""
        try:
            while self.step():
                pass
        finally:
            self.end()

    def end(self) -> None:
        """Close the stream, make sure one final event was delivered, call ``on_end``."""
        try:
            # closing releases what the engine holds (its busy lock) if it is mid-turn
            close = getattr(self.events, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("closing an event stream failed")
            if not self.ended:
                error: errors.DataAgentError = (
                    errors.Cancelled("stopped.")
                    if self.cancel.is_set()
                    else errors.DataAgentError("the answer ended without a result.")
                )
                self._final(Failed(error))
        finally:
            if self.on_end is not None:
                self.on_end()

    def _final(self, event: Failed) -> None:
        self.ended = True
        try:
            self.deliver(event)
        except Exception:  # the front end cannot show it either; keep the kernel quiet
            log.exception("could not deliver the final event")


def _as_error(exc: Exception) -> errors.DataAgentError:
    if isinstance(exc, errors.DataAgentError):
        return exc
    log.exception("a Data Agent answer failed", exc_info=exc)
    return errors.DataAgentError(f"the Data Agent failed: {type(exc).__name__}: {exc}")
