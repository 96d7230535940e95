"""The child-kernel sandbox: where generated code runs, away from the user's kernel.

:class:`Sandbox` is the one object the engine talks to. It keeps one child kernel per
session (started early, in the background), sends it copies of the frames a question
uses (once per version), runs code there, relays what it shows as ``Output`` events, and
replaces the child when it dies. The pieces:

- :mod:`.launcher` - the child's first code: limits, capabilities, Landlock, then ipykernel;
- :mod:`.limits` - configuration to rlimits, secret scrubbing, death messages (pure);
- :mod:`.pool` - starting, replacing and stopping child kernels;
- :mod:`.executor` - one run: messages to events, timeouts, cancel, death;
- :mod:`.transfer` - frames in, results out, and the fingerprints that avoid resending.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import DataAgent
from ..errors import Cancelled, FrameError, SandboxError
from ..events import Output
from .executor import RunOptions, execute
from .limits import format_bytes, limits_from_config
from .pool import Child, ChildPool, execute_quietly
from .transfer import TransferError, write_pickled
from .untrusted import ResultLimits, import_value, is_cancelled, parse_reply

__all__ = ["Sandbox", "SandboxStatus"]


@dataclass(frozen=True)
class SandboxStatus:
    """A snapshot of the sandbox for ``%dataagent status``."""

    state: str  # "not started" | "starting" | "idle" | "busy" | "dead"
    pid: int | None
    memory: int | None  # resident set size in bytes
    limits: dict[str, str] = field(default_factory=dict)
    protections: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    frames: tuple[str, ...] = ()
    session_id: str = ""

    def _repr_markdown_(self) -> str:
        lines = [
            f"**Analysis kernel:** {self.state}"
            + (f" (pid {self.pid}, {format_bytes(self.memory)} in use)" if self.pid else "")
        ]
        if self.limits:
            lines.append("**Limits:** " + ", ".join(f"{k} {v}" for k, v in self.limits.items()))
        if self.protections:
            lines.append("**Protections:** " + ", ".join(self.protections))
        elif self.state in ("idle", "busy"):
            lines.append("**Protections:** none could be applied on this system")
        if self.problems:
            lines.append("**Not available:** " + "; ".join(self.problems))
        if self.frames:
            lines.append("**Frames held:** " + ", ".join(self.frames))
        return "  \n".join(lines)


class Sandbox:
    """Runs code in an isolated, resource-limited child kernel holding copies of frames."""

    def __init__(self, config: DataAgent, *, session_id: str | None = None) -> None:
        self.config = config
        self.session_id = session_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._pool = ChildPool(config)
        # One run or fetch at a time. A plain Lock, because a run is a generator that may
        # be closed (and release it) from another thread.
        self._lock = threading.Lock()
        self._busy = False
        self._bytes_sent = 0
        self._charts = itertools.count(1)
        self._finalizer = weakref.finalize(self, ChildPool.shutdown, self._pool)

    # --- lifecycle -----------------------------------------------------------------------

    def start_warm(self) -> None:
        """Start the child in the background so the first run pays no start-up."""
        if self.config.warm_child:
            self._pool.start_background()

    def restart(self) -> None:
        """Replace the child with a fresh one (its variables are lost; frames are resent)."""
        with self._lock:
            self._pool.restart()

    def shutdown(self) -> None:
        """Stop the child and delete its folders; idempotent (also runs at exit)."""
        self._finalizer()

    # --- running code --------------------------------------------------------------------

    def run(
        self,
        code: str,
        frames: Mapping[str, Any],
        *,
        attempt: int = 1,
        cancel: threading.Event | None = None,
    ) -> Iterator[Output]:
        """Send the frames that changed, run ``code``, yield its outputs as they arrive.

        Raises ExecutionFailed (the code raised; its trimmed traceback is attached),
        ExecutionTimeout, ChildDied, Cancelled, FrameError (not a frame) or SandboxError.
        """
        _check_frames(frames)
        with self._lock:
            self._busy = True
            try:
                child = self._pool.get()
                files, keep, sizes = self._send(child, frames)
                tracker = child.tracker

                def loaded() -> None:
                    for name in files:
                        tracker.remember(name, frames[name])
                    self._bytes_sent += sum(sizes)

                options = RunOptions(
                    timeout=float(self.config.exec_timeout),
                    attempt=attempt,
                    cancel=cancel,
                    save_png=self._save_png,
                    discard=self._pool.discard,
                    loaded=loaded,
                )
                try:
                    yield from execute(
                        child, code, options, files=files, keep=keep, forget=tracker.pop_expired()
                    )
                finally:
                    for path in files.values():  # normally the child deleted them
                        _unlink_quietly(path)
            finally:
                self._busy = False

    def _send(
        self, child: Child, frames: Mapping[str, Any]
    ) -> tuple[dict[str, str], list[str], list[int]]:
        files: dict[str, str] = {}
        keep: list[str] = []
        sizes: list[int] = []
        try:
            for name, obj in frames.items():
                if child.tracker.is_current(name, obj):
                    keep.append(name)
                    continue
                path, size = _write_frame(child, name, obj)
                files[name] = path
                sizes.append(size)
        except BaseException:
            for path in files.values():
                _unlink_quietly(path)
            raise
        return files, keep, sizes

    def fetch(self, name: str = "result", *, cancel: threading.Event | None = None) -> Any:
        """A copy of the child's variable ``name`` (a DataFrame stays a DataFrame).

        What the child writes is read as hostile input (:mod:`.untrusted`): any limit
        exceeded ends in one SandboxError naming it. The fetch runs under the run time
        limit, stops for real when ``cancel`` is set (Cancelled), and holds no lock, so a
        restart or the next question never waits for it.
        """
        if not name.isidentifier():
            raise SandboxError(f"{name!r} is not a variable name.")
        child = self._pool.child
        if child is None or not child.is_alive():
            raise SandboxError(
                f"There is no {name!r} to bring back: the analysis kernel holds nothing "
                "yet (or was restarted).",
                hint="Run the question with --run first.",
            )
        timeout = float(self.config.exec_timeout)
        limits = ResultLimits.from_sandbox(limits_from_config(self.config).file_size, timeout)
        path = str(child.transfer_dirs[0] / f"out-{uuid.uuid4().hex}.arrow")
        expression = f"__import__('_dataagent_transfer').send_back(globals(), {name!r}, {path!r})"
        try:
            report = execute_quietly(
                child, "", {"status": expression}, timeout=timeout, cancel=cancel
            )
            status = parse_reply(report, "status", max_bytes=limits.reply_bytes)
            if status.get("missing") is True:
                raise SandboxError(
                    f"The analysis kernel has no variable named {name!r}.",
                    hint="The code must assign its answer to a variable; ask again, "
                    "or bring back another name.",
                )
            if status.get("ok") is not True:
                said = str(status.get("error") or "something that cannot be copied")[:300]
                raise SandboxError(
                    f"{name!r} cannot be brought back: it holds {said}.",
                    hint="Make it a DataFrame, Series, array, number or string.",
                )
            return import_value(path, limits=limits, cancel=cancel)
        except TransferError as exc:
            raise SandboxError(f"{name!r} could not be brought back: {exc}.") from None
        except (TimeoutError, RuntimeError) as exc:
            if not child.is_alive():
                self._pool.discard(child)
            raise SandboxError(f"{name!r} could not be brought back: {exc}.") from None
        except Exception as exc:
            if not is_cancelled(exc):
                raise
            raise Cancelled(f"Bringing {name!r} back was stopped.") from None
        finally:
            _unlink_quietly(path)

    # --- reporting -----------------------------------------------------------------------

    def status(self) -> SandboxStatus:
        """State, pid, memory use, limits and active protections (never blocks)."""
        child = self._pool.child
        limits = limits_from_config(self.config).describe()
        if child is None or child.closed:
            state = "starting" if self._pool.starting else "not started"
            return SandboxStatus(
                state=state, pid=None, memory=None, limits=limits, session_id=self.session_id
            )
        alive = child.is_alive()
        rss = child.usage()[0] if alive else None
        state = ("busy" if self._busy else "idle") if alive else "dead"
        return SandboxStatus(
            state=state,
            pid=child.pid,
            memory=rss,
            limits=limits,
            protections=child.protections,
            problems=child.problems,
            frames=tuple(child.tracker.names()),
            session_id=self.session_id,
        )

    def bytes_sent(self) -> int:
        """Total bytes of frame files written for the child since this sandbox was made."""
        return self._bytes_sent

    def _save_png(self, data: bytes) -> str | None:
        folder = Path(self.config.output_dir) / self.session_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"chart-{next(self._charts):03d}.png"
            path.write_bytes(data)
        except OSError:
            return None  # a chart that cannot be saved is still shown
        return str(path)


def _check_frames(frames: Mapping[str, Any]) -> None:
    import pandas as pd

    for name, obj in frames.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise FrameError(f"{name!r} cannot be used as a variable name in the analysis.")
        if not isinstance(obj, pd.DataFrame | pd.Series):
            raise FrameError(f"{name!r} is a {type(obj).__name__}, not a DataFrame or Series.")


def _write_frame(child: Child, name: str, obj: Any) -> tuple[str, int]:
    """Write one frame into the first transfer folder with room for it."""
    usage = obj.memory_usage(index=True, deep=False)  # an int for a Series
    estimate = int(usage.sum() if hasattr(usage, "sum") else usage)
    last_error: OSError | None = None
    for folder in child.transfer_dirs:
        try:
            if os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize < estimate * 1.1:
                continue
        except OSError:
            continue
        path = str(folder / f"{name}-{uuid.uuid4().hex}.pkl")
        try:
            return path, write_pickled(obj, path)
        except OSError as exc:  # full after all: try the next folder
            last_error = exc
            _unlink_quietly(path)
        except (TypeError, ValueError, AttributeError, RecursionError) as exc:
            # pickle refuses some cell values (open files, locks, lambdas, generators)
            _unlink_quietly(path)
            raise FrameError(
                f"{name!r} holds a value that cannot be copied to the analysis kernel "
                f"({type(exc).__name__}: {str(exc)[:200]}).",
                hint="Drop or convert that column (e.g. df[col].astype(str)), or ask in "
                "insert mode, which runs nothing in the sandbox.",
            ) from None
    raise SandboxError(
        f"There is no room to copy {name!r} to the analysis kernel"
        + (f" ({last_error.strerror})" if last_error else "")
        + ".",
        hint="Free some disk or /dev/shm space, or ask about a smaller frame.",
    )


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
