"""Running code on a child kernel and turning its messages into ``Output`` events.

One function, :func:`execute`, does a whole run: a silent prelude (load the frames that
changed, forget the previous ``result``), the user's code, then the rich rendering of
``result`` (asked for with ``user_expressions``, so it costs no extra round trip). While it
waits it watches four things at once: the kernel's messages, the clock
(``exec_timeout``), the user's cancel event, and whether the process is still alive.
"""

from __future__ import annotations

import base64
import binascii
import json
import queue
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zmq

from ..errors import Cancelled, ChildDied, ExecutionFailed, ExecutionTimeout, SandboxError
from ..events import Output
from .limits import death_message
from .outputs import OutputBudget, strip_controls
from .pool import Child

#: Seconds an interrupted run gets to stop before the child is replaced.
INTERRUPT_GRACE = 3.0
#: Characters of stream output relayed per run; the rest is dropped with a note.
MAX_STREAM_CHARS = 200_000
#: Characters of traceback kept for the model (the end is kept).
MAX_TRACEBACK_CHARS = 3_000
_POLL_MS = 20
_USAGE_EVERY = 0.25

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_INTERNAL_FRAME = re.compile(r"[/\\](IPython|ipykernel|_dataagent_\w+|dataagent_jupyter)[/\\.]")


@dataclass
class RunOptions:
    """What one run needs besides the code."""

    timeout: float
    attempt: int = 1
    cancel: threading.Event | None = None
    #: saves a PNG (bytes) and returns its path, or None when saving is off/failed
    save_png: Callable[[bytes], str | None] = lambda data: None
    #: closes a broken child and starts its replacement
    discard: Callable[[Child], None] = lambda child: child.close()
    #: called once the frames are loaded in the child (the tracker may trust them then)
    loaded: Callable[[], None] = lambda: None
    #: what the answer (all its attempts) may still show
    budget: OutputBudget = field(default_factory=lambda: OutputBudget(20_000_000, 100_000_000))


@dataclass
class _Reply:
    content: dict[str, Any] | None = None
    idle: bool = False
    error: dict[str, Any] | None = None
    outputs: list[Output] = field(default_factory=list)


class _Watch:
    """Tracks why a run must stop: timeout, cancel, death; and peak memory for diagnosis."""

    def __init__(self, child: Child, options: RunOptions) -> None:
        self.child = child
        self.options = options
        self.deadline = time.monotonic() + options.timeout
        self.interrupted: str | None = None  # "timeout" | "cancel"
        self.interrupted_at = 0.0
        self.peak_vms = 0
        self.cpu_used: float | None = None
        self._next_usage = 0.0

    def sample_usage(self) -> None:
        now = time.monotonic()
        if now < self._next_usage:
            return
        self._next_usage = now + _USAGE_EVERY
        try:
            import psutil

            proc = psutil.Process(self.child.pid)
            with proc.oneshot():
                self.peak_vms = max(self.peak_vms, proc.memory_info().vms)
                times = proc.cpu_times()
                self.cpu_used = times.user + times.system
        except Exception:
            pass

    def check(self) -> None:
        """Interrupt on timeout/cancel; replace the child if an interrupt is ignored."""
        if not self.child.is_alive():
            raise self._died()
        self.sample_usage()
        now = time.monotonic()
        if self.interrupted is None:
            cancel = self.options.cancel
            if cancel is not None and cancel.is_set():
                self._interrupt("cancel")
            elif now >= self.deadline:
                self._interrupt("timeout")
        elif now - self.interrupted_at > INTERRUPT_GRACE:
            self.options.discard(self.child)
            raise self.stopped(restarted=True)

    def _interrupt(self, why: str) -> None:
        self.interrupted, self.interrupted_at = why, time.monotonic()
        try:
            self.child.km.interrupt_kernel()
        except Exception:  # already gone: the next check() reports the death
            pass

    def stopped(self, *, restarted: bool = False) -> Exception:
        """The error for an interrupted run (the child may have been replaced)."""
        lost = (
            " The analysis kernel did not stop, so it was restarted: variables it held are gone."
            if restarted
            else ""
        )
        if self.interrupted == "cancel":
            return Cancelled("The analysis was stopped." + lost)
        limit = self.options.timeout
        return ExecutionTimeout(
            f"The code ran longer than the {limit:g} s limit and was stopped.{lost}",
            hint="Ask for a lighter computation (a sample, fewer groups) or raise "
            "DataAgent.exec_timeout.",
        )

    def _died(self, *, out_of_memory: bool = False) -> ChildDied:
        child = self.child
        returncode = child.returncode()
        limit = child.limits.memory
        if not out_of_memory and limit and returncode is not None and returncode < 0:
            # RLIMIT_AS makes allocations fail; a C library may then abort rather than
            # raise MemoryError. Close to the limit, call it what it is.
            out_of_memory = (
                -returncode in (signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV)
                and self.peak_vms >= 0.8 * limit
            )
        message = child.stopped_for or death_message(
            child.limits, returncode=returncode, out_of_memory=out_of_memory, cpu_used=self.cpu_used
        )
        self.options.discard(child)
        return ChildDied(message[0].upper() + message[1:])

    def out_of_memory(self) -> ChildDied:
        """MemoryError inside the child: its state is suspect, so it is replaced too."""
        return self._died(out_of_memory=True)


def execute(
    child: Child,
    code: str,
    options: RunOptions,
    *,
    files: dict[str, str] | None = None,
    keep: list[str] | None = None,
    forget: list[str] | None = None,
) -> Iterator[Output]:
    """Run ``code`` on ``child`` and yield its outputs as they arrive.

    ``files`` maps names to frame files linked for this run, ``keep`` names frames the
    child already holds, ``forget`` frames it must let go (see ``transfer.receive``).
    Raises ExecutionFailed, ExecutionTimeout, ChildDied, Cancelled or SandboxError.
    """
    watch = _Watch(child, options)
    if options.cancel is not None and options.cancel.is_set():
        raise Cancelled("The analysis was stopped before it started.")
    prelude = (
        "__import__('_dataagent_transfer').receive(globals(), "
        f"{json.dumps(files or {})}, keep={tuple(keep or ())!r}, "
        f"forget={tuple(forget or ())!r}, drop=('result',))"
    )
    reply = _Reply()
    yield from _exchange(child, prelude, watch, reply, silent=True)
    if reply.content is None or reply.content.get("status") != "ok":
        _raise_prelude_error(watch, reply)
    options.loaded()

    reply = _Reply()
    expressions = {"result": "result"}
    yield from _exchange(child, code, watch, reply, silent=False, expressions=expressions)
    content = reply.content or {}
    if content.get("status") != "ok":
        error = reply.error or content
        ename = str(error.get("ename", "Error"))
        if watch.interrupted and ename == "KeyboardInterrupt":
            raise watch.stopped()
        if ename == "MemoryError":
            raise watch.out_of_memory()
        ename, evalue = _plain(ename)[:200], _plain(str(error.get("evalue", "")))
        traceback = trim_traceback(error.get("traceback") or [], ename=ename, evalue=evalue)
        raise ExecutionFailed(
            f"{ename}: {evalue}".strip().rstrip(":"),
            traceback=traceback,
            ename=ename,
            evalue=evalue,
            hint="The traceback goes back to the model so it can fix the code.",
        )
    if watch.interrupted == "cancel":
        raise watch.stopped()  # finished anyway, but the user asked to stop: show nothing
    result = content.get("user_expressions", {}).get("result", {})
    if result.get("status") == "ok" and result.get("data", {}).get("text/plain") != "None":
        admitted = options.budget.admit(result.get("data", {}))
        if admitted is not None:
            data, whole = admitted
            yield Output(
                kind="result" if whole else "display",
                data=data,
                metadata=result.get("metadata", {}) if whole else {},
                attempt=options.attempt,
                saved=_save_png(data, options) if whole else None,
            )


def _raise_prelude_error(watch: _Watch, reply: _Reply) -> None:
    error = reply.error or reply.content or {}
    if error.get("ename") == "MemoryError":
        raise watch.out_of_memory()
    if watch.interrupted:
        raise watch.stopped()
    raise SandboxError(
        f"The frames could not be copied into the analysis kernel: "
        f"{error.get('ename', 'Error')}: {error.get('evalue', '')}",
        hint="Run %dataagent restart and ask again.",
    )


def _exchange(
    child: Child,
    code: str,
    watch: _Watch,
    reply: _Reply,
    *,
    silent: bool,
    expressions: dict[str, str] | None = None,
) -> Iterator[Output]:
    """Send one execute_request; yield outputs until its reply and idle status arrive."""
    client = child.client
    msg_id = client.execute(
        code,
        silent=silent,
        store_history=not silent,
        user_expressions=expressions or {},
        allow_stdin=False,
        stop_on_error=not silent,
    )
    poller = zmq.Poller()
    iopub, shell = client.iopub_channel, client.shell_channel
    poller.register(iopub.socket, zmq.POLLIN)
    poller.register(shell.socket, zmq.POLLIN)
    streamed = 0
    finished = False
    reply_at = 0.0
    try:
        while not (reply.content is not None and reply.idle):
            events = dict(poller.poll(_POLL_MS))
            if iopub.socket in events:
                for msg in _drain(iopub):
                    if msg["parent_header"].get("msg_id") != msg_id:
                        continue
                    output, streamed = _to_output(msg, reply, watch.options, streamed)
                    if output is not None:
                        yield output
            if shell.socket in events:
                for msg in _drain(shell):
                    if msg["parent_header"].get("msg_id") == msg_id:
                        reply.content, reply_at = msg["content"], time.monotonic()
            if reply.content is not None and not reply.idle:
                # The idle status follows the reply; do not wait for a lost one forever.
                if time.monotonic() - reply_at > 1.0:
                    break
                continue
            watch.check()
        finished = True
    finally:
        if not finished and child.is_alive() and reply.content is None and not child.closed:
            # Abandoned mid-run (the consumer stopped iterating, or an error above):
            # the child must not keep running the old code under the next request.
            _stop_abandoned(child, msg_id, watch)


def _drain(channel: Any) -> Iterator[dict[str, Any]]:
    # Not channel.get_msgs(): in jupyter_client 8.10 it waits forever for one more message.
    while True:
        try:
            yield channel.get_msg(timeout=0)
        except queue.Empty:
            return


def _stop_abandoned(child: Child, msg_id: str, watch: _Watch) -> None:
    try:
        child.km.interrupt_kernel()
        deadline = time.monotonic() + INTERRUPT_GRACE
        while time.monotonic() < deadline:
            try:
                msg = child.client.get_shell_msg(timeout=0.1)
            except Exception:
                if not child.is_alive():
                    break
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                list(_drain(child.client.iopub_channel))  # drop what is left of the run
                return
    except Exception:
        pass
    watch.options.discard(child)


def _to_output(
    msg: dict[str, Any], reply: _Reply, options: RunOptions, streamed: int
) -> tuple[Output | None, int]:
    kind, content = msg["msg_type"], msg["content"]
    if kind == "status":
        if content.get("execution_state") == "idle":
            reply.idle = True
        return None, streamed
    if kind == "stream":
        text = content.get("text", "")
        if streamed >= MAX_STREAM_CHARS or not isinstance(text, str):
            return None, streamed
        if streamed + len(text) > MAX_STREAM_CHARS:
            text = text[: MAX_STREAM_CHARS - streamed] + "\n[... further output not shown]\n"
        streamed += len(text)
        admitted = options.budget.admit({"text/plain": text}, len(text))
        if admitted is None:
            return None, streamed
        data, whole = admitted
        text = strip_controls(text) if whole else data["text/plain"]
        if not text:
            return None, streamed
        name = content.get("name", "")
        return Output(
            kind="stream",
            data={"text/plain": text},
            name=name if name in ("stdout", "stderr") else "stdout",
            attempt=options.attempt,
        ), streamed
    if kind in ("display_data", "update_display_data", "execute_result"):
        admitted = options.budget.admit(content.get("data", {}))
        if admitted is None:
            return None, streamed
        data, whole = admitted
        return Output(
            kind="display",
            data=data,
            metadata=content.get("metadata", {}) if whole else {},
            attempt=options.attempt,
            saved=_save_png(data, options) if whole else None,
        ), streamed
    if kind == "error":
        reply.error = content
    return None, streamed


def _save_png(data: dict[str, Any], options: RunOptions) -> str | None:
    png = data.get("image/png")
    if not isinstance(png, str):
        return None
    try:
        raw = base64.b64decode(png, validate=False)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(b"\x89PNG"):
        return None
    return options.save_png(raw)


def trim_traceback(
    lines: list[str], *, ename: str = "", evalue: str = "", limit: int = MAX_TRACEBACK_CHARS
) -> str:
    """A traceback for the model: no colour codes, no IPython/ipykernel frames, the end kept.

    IPython sends one list item per frame. Frames in libraries shrink to their location and
    marked line; a frame repeated (recursion) is shown once with a count. The first user
    frame (the cell line that failed) and the final ``Error: message`` matter most to a
    fix, so a traceback still too long keeps both and cuts the middle.
    """
    blocks: list[str] = []
    repeats = 0
    for item in lines:
        block = _plain(str(item)).strip("\n")
        first = block.lstrip().split("\n", 1)[0]
        if not block.strip() or set(block.strip()) <= set("-"):
            continue
        if "Traceback (most recent call last)" in first or _INTERNAL_FRAME.search(first):
            continue
        block = _compact_library_frame(block)
        if blocks and block == blocks[-1]:
            repeats += 1
            continue
        if repeats:
            blocks.append(f"[... the frame above repeated {repeats} more times ...]")
            repeats = 0
        blocks.append(block)
    if repeats:
        blocks.append(f"[... the frame above repeated {repeats} more times ...]")
    if not blocks:
        return f"{ename}: {evalue}".strip()
    out = "\n\n".join(blocks)
    if len(out) <= limit:
        return out
    head = blocks[0][: limit // 3]
    tail_budget = limit - len(head) - 40
    tail: list[str] = []
    used = 0
    for block in reversed(blocks[1:]):
        if used + len(block) > tail_budget:
            if not tail:  # the last block alone is too long: keep its end
                tail.append(block[-tail_budget:])
            break
        tail.insert(0, block)
        used += len(block) + 2
    return head + "\n\n... (traceback shortened) ...\n\n" + "\n\n".join(tail)


def _plain(text: str) -> str:
    """Child text for the model and for messages: no control sequences, no colours."""
    return _ANSI.sub("", strip_controls(text))


def _compact_library_frame(block: str) -> str:
    # A frame inside pandas or numpy matters for where it failed, not for its source: keep
    # the "File ..., in func()" line and the marked line. The user's cell stays whole.
    lines = block.splitlines()
    if not lines[0].startswith("File "):
        return block
    lines[0] = re.sub(r"^File \S*?[/\\]site-packages[/\\]", "File site-packages/", lines[0])
    if len(lines) <= 2:
        return "\n".join(lines)
    marked = [line for line in lines[1:] if re.match(r"\s*(-+>|>)\s*\d+", line)]
    return "\n".join([lines[0], *marked])
