"""The child-kernel sandbox: where generated code runs, away from the user's kernel.

:class:`Sandbox` is the one object the engine talks to. Each question (or agent run)
leases a fresh child kernel (``with sandbox.question() as lease``), started ahead in the
background; the child sees only the frames the question names (written once per version,
linked read-only), runs the code, relays what it shows as ``Output`` events, and is
thrown away after the answer, so no answer can touch a later one. The pieces:

- :mod:`.launcher` - the child's first code: limits, capabilities, Landlock, then ipykernel;
- :mod:`.limits` - configuration to rlimits, secret scrubbing, death messages (pure);
- :mod:`.pool` - starting children ahead, handing them out, throwing them away;
- :mod:`.frame_store` - frame files written once per version, linked into each child;
- :mod:`.executor` - one run: messages to events, timeouts, cancel, death;
- :mod:`.outputs` - bounds on what an answer shows and saves, control sequences out;
- :mod:`.transfer` - the child's side of frames in and results out (stdlib-only top);
- :mod:`.untrusted` - the user's kernel's strict reading of what the child sends.
"""

from __future__ import annotations

import contextlib
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
from .frame_store import FrameStore
from .limits import format_bytes, limits_from_config
from .outputs import ChartFolder, OutputBudget
from .pool import Child, ChildPool, execute_quietly, write_owner
from .protections import describe, missing, notice
from .transfer import TransferError, engine_tag
from .untrusted import ResultLimits, import_value, is_cancelled, parse_reply

__all__ = ["Lease", "Sandbox", "SandboxStatus"]


@dataclass(frozen=True)
class SandboxStatus:
    """A snapshot of the sandbox for ``%dataagent status``."""

    state: str  # "not started" | "starting" | "idle" | "busy" | "dead"
    pid: int | None
    memory: int | None  # resident set size in bytes
    limits: dict[str, str] = field(default_factory=dict)
    protections: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()  # promised protections the child lacks, by name
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
        if self.missing:
            lines.append("**Missing protections:** " + describe(self.missing))
        if self.problems:
            lines.append("**Not available:** " + "; ".join(self.problems))
        if self.frames:
            lines.append("**Frames held:** " + ", ".join(self.frames))
        return "  \n".join(lines)


class Sandbox:
    """Runs each question's code in a fresh, resource-limited child kernel.

    ``with sandbox.question() as lease:`` gives one question (or one agent run) a child
    that no earlier answer has touched; its fix attempts share it, and it is thrown away
    when the block ends, with anything its code left running. The next child is started
    ahead, so a question rarely waits for one.
    """

    def __init__(self, config: DataAgent, *, session_id: str | None = None) -> None:
        self.config = config
        self.session_id = session_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self._store = FrameStore(owner=write_owner)
        self._pool = ChildPool(config, frame_dirs=self._store.child_folders, release=self._release)
        self._charts = ChartFolder(Path(config.output_dir) / self.session_id, 0)
        self._told_missing = threading.Event()  # the first run says what protections lack
        self._finalizer = weakref.finalize(self, _shutdown, self._pool, self._store)

    # --- lifecycle -----------------------------------------------------------------------

    def start_warm(self) -> None:
        """Start the first child in the background so the first question pays no start-up."""
        if self.config.warm_child:
            self._pool.start_ahead()

    def ready(self) -> bool:
        """Is a fresh child up, so a question starting now does not wait for one?"""
        child = self._pool.ready
        return child is not None and child.is_alive()

    def restart(self) -> None:
        """Throw every child away (a question running now is stopped) and start afresh."""
        self._pool.restart()

    def shutdown(self) -> None:
        """Stop every child and delete the folders; idempotent (also runs at exit)."""
        self._finalizer()

    def _first_notice(self, child: Child) -> str:
        """The one-line "protections missing" notice, for the session's first run only."""
        if self._told_missing.is_set():
            return ""
        self._told_missing.set()
        return notice(missing(self.config, child.applied))

    def _release(self, child: Child) -> None:
        self._store.release(child.frame_dirs)

    # --- questions -----------------------------------------------------------------------

    @contextlib.contextmanager
    def question(self) -> Iterator[Lease]:
        """A lease on one fresh child for one question or agent run (discarded after)."""
        lease = self.lease()
        try:
            yield lease
        finally:
            lease.close()

    def lease(self) -> Lease:
        """The same as :meth:`question`, for callers that close it themselves."""
        return Lease(self)

    # --- reporting -----------------------------------------------------------------------

    def status(self) -> SandboxStatus:
        """State, pid, memory use, limits and active protections (never blocks)."""
        leased = [c for c in self._pool.leased if c.is_alive()]
        child = leased[0] if leased else self._pool.ready
        limits = limits_from_config(self.config).describe()
        frames = tuple(self._store.names())
        if child is None or child.closed:
            state = "starting" if self._pool.starting else "not started"
            last = self._pool.last  # every child gets the same protections: say them
            return SandboxStatus(
                state=state,
                pid=None,
                memory=None,
                limits=limits,
                protections=last.protections if last and state == "starting" else (),
                problems=last.problems if last and state == "starting" else (),
                missing=missing(self.config, last.applied) if last and state == "starting" else (),
                frames=frames,
                session_id=self.session_id,
            )
        alive = child.is_alive()
        rss = child.usage()[0] if alive else None
        state = ("busy" if leased else "idle") if alive else "dead"
        return SandboxStatus(
            state=state,
            pid=child.pid,
            memory=rss,
            limits=limits,
            protections=child.protections,
            problems=child.problems,
            missing=missing(self.config, child.applied),
            frames=frames,
            session_id=self.session_id,
        )

    def bytes_sent(self) -> int:
        """Total bytes of frame files written for children since this sandbox was made."""
        return self._store.bytes_written

    def _save_png(self, data: bytes) -> str | None:
        # Settings may change between answers (%config): read them at each chart.
        self._charts.folder = Path(self.config.output_dir) / self.session_id
        self._charts.limit = int(float(self.config.max_saved_charts_mb) * 1e6)
        return self._charts.save(data)


class Lease:
    """One question's child: runs its code attempts and fetches its result.

    The child is taken from the pool at the first :meth:`run` (or :meth:`wait`), so a
    question that never runs code costs none. If the child dies or hangs, the next
    attempt gets another fresh one.
    """

    def __init__(self, box: Sandbox) -> None:
        self._box = box
        self._child: Child | None = None
        self._loaded: dict[str, Any] = {}  # frames the child holds: name -> object
        self._budget = OutputBudget.from_config(box.config)  # for all its attempts

    @property
    def ready(self) -> bool:
        """True when running now needs no wait for a child to start."""
        child = self._child
        return (child is not None and child.is_alive()) or self._box.ready()

    def wait(self, cancel: threading.Event | None = None) -> Child:
        """The lease's child, taken from the pool (waiting for it to start, if need be)."""
        child = self._child
        if child is None or not child.is_alive():
            if child is not None:
                self._box._pool.discard(child)
            self._child, self._loaded = None, {}
            self._child = child = self._box._pool.take(cancel)
        return child

    def run(
        self,
        code: str,
        frames: Mapping[str, Any],
        *,
        attempt: int = 1,
        cancel: threading.Event | None = None,
    ) -> Iterator[Output]:
        """Give the child the frames named, run ``code``, yield its outputs as they arrive.

        Raises ExecutionFailed (the code raised; its trimmed traceback is attached),
        ExecutionTimeout, ChildDied, Cancelled, FrameError (not a frame) or SandboxError.
        """
        _check_frames(frames)
        child = self.wait(cancel)
        line = self._box._first_notice(child)
        if line:
            yield Output(kind="stream", data={"text/plain": line + "\n"}, name="stderr")
        files: dict[str, str] = {}
        keep: list[str] = []
        for name, obj in frames.items():
            if self._loaded.get(name) is obj:
                keep.append(name)
                continue
            files[name], _ = self._box._store.link(name, obj, child.frame_dirs)

        def loaded() -> None:
            for name in files:
                self._loaded[name] = frames[name]

        options = RunOptions(
            timeout=float(self._box.config.exec_timeout),
            attempt=attempt,
            cancel=cancel,
            save_png=self._box._save_png,
            discard=self._box._pool.discard,
            loaded=loaded,
            budget=self._budget,
        )
        unnamed = tuple(name for name in self._loaded if name not in frames)
        for name in unnamed:
            del self._loaded[name]
        yield from execute(child, code, options, files=files, keep=keep, forget=list(unnamed))

    def fetch(self, name: str = "result", *, cancel: threading.Event | None = None) -> Any:
        """A copy of the child's variable ``name`` (a DataFrame stays a DataFrame).

        What the child writes is read as hostile input (:mod:`.untrusted`): any limit
        exceeded ends in one SandboxError naming it. The fetch runs under the run time
        limit, stops for real when ``cancel`` is set (Cancelled), and holds no lock, so a
        restart or the next question never waits for it.
        """
        if not name.isidentifier():
            raise SandboxError(f"{name!r} is not a variable name.")
        child = self._child
        if child is None or not child.is_alive():
            raise SandboxError(
                f"There is no {name!r} to bring back: the analysis kernel holds nothing "
                "yet (or was restarted).",
                hint="Run the question with --run first.",
            )
        config = self._box.config
        timeout = float(config.exec_timeout)
        limits = ResultLimits.from_sandbox(limits_from_config(config).file_size, timeout)
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
            raise SandboxError(f"{name!r} could not be brought back: {exc}.") from None
        except Exception as exc:
            if not is_cancelled(exc):
                raise
            raise Cancelled(f"Bringing {name!r} back was stopped.") from None
        finally:
            _unlink_quietly(path)

    def close(self) -> None:
        """Throw the child away (its process, threads and folders); idempotent."""
        child, self._child = self._child, None
        self._loaded = {}
        if child is not None:
            self._box._pool.discard(child)

    def evaluate(
        self, code: str, expressions: dict[str, str], *, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """Run quiet ``code`` on the lease's child, return its raw ``user_expressions``.

        For agent mode's step report, which must see the variables the last step left;
        the caller parses the reply as untrusted.
        """
        child = self._child
        if child is None or not child.is_alive():
            raise SandboxError("The analysis kernel is gone; it holds nothing to report.")
        try:
            return execute_quietly(
                child,
                code,
                expressions,
                timeout=float(self._box.config.exec_timeout),
                cancel=cancel,
            )
        except (TimeoutError, RuntimeError) as exc:
            raise SandboxError(f"The analysis kernel did not report: {exc}.") from None


def _shutdown(pool: ChildPool, store: FrameStore) -> None:
    pool.shutdown()
    store.close()


def _check_frames(frames: Mapping[str, Any]) -> None:
    import pandas as pd

    for name, obj in frames.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise FrameError(f"{name!r} cannot be used as a variable name in the analysis.")
        # a polars/DuckDB frame arrives as an Arrow table tagged with its engine
        if not isinstance(obj, pd.DataFrame | pd.Series) and engine_tag(obj) is None:
            raise FrameError(f"{name!r} is a {type(obj).__name__}, not a DataFrame or Series.")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
