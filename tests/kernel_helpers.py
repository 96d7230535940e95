"""A real ipykernel started with jupyter_client, and a small client to drive it in tests."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jupyter_client.manager import KernelManager


@dataclass
class Execution:
    """What one execute request produced, as a front end would have received it."""

    reply: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reply["content"]["status"] == "ok"

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return self.reply["content"].get("payload", [])

    @property
    def next_input(self) -> str | None:
        """The text of a set_next_input payload (the proposed cell), if any."""
        for p in self.payloads:
            if p.get("source") == "set_next_input":
                return p["text"]
        return None

    @property
    def comm_opens(self) -> list[dict[str, Any]]:
        """The comms the kernel opened while running: (target_name, data) contents."""
        return [o["content"] for o in self.outputs if o["msg_type"] == "comm_open"]

    @property
    def stdout(self) -> str:
        return "".join(
            o["content"]["text"]
            for o in self.outputs
            if o["msg_type"] == "stream" and o["content"]["name"] == "stdout"
        )

    @property
    def stderr(self) -> str:
        return "".join(
            o["content"]["text"]
            for o in self.outputs
            if o["msg_type"] == "stream" and o["content"]["name"] == "stderr"
        )

    @property
    def error(self) -> dict[str, Any] | None:
        for o in self.outputs:
            if o["msg_type"] == "error":
                return o["content"]
        return None

    def data(self, mime: str) -> list[Any]:
        """Every value of ``mime`` in display/update/result outputs, in order."""
        found = []
        for o in self.outputs:
            kind = o["msg_type"]
            if kind in ("display_data", "update_display_data", "execute_result") and (
                mime in o["content"]["data"]
            ):
                found.append(o["content"]["data"][mime])
        return found

    @property
    def text(self) -> str:
        """All text a user would read: streams, plain/markdown displays, the error."""
        parts = [self.stdout, self.stderr]
        parts += [str(x) for x in self.data("text/markdown")]
        parts += [str(x) for x in self.data("text/plain")]
        if self.error:
            parts += self.error["traceback"]
        return "\n".join(parts)


class Kernel:
    """Start a python3 kernel (ipc transport) with ``env``; ``execute`` code on it."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        cwd: str | None = None,
    ) -> None:
        # ipc sockets and the connection file live in a private temp dir, not the cwd
        self._dir = tempfile.mkdtemp(prefix="dataagent-test-kernel-")
        self.km = KernelManager(
            kernel_name="python3",
            transport="ipc",
            connection_file=os.path.join(self._dir, "kernel.json"),
        )
        self.km.ip = os.path.join(self._dir, "ipc")
        self.km.kernel_cmd = None  # use the kernelspec
        kernel_env = {**os.environ, **(env or {})}
        args = list(extra_args or [])
        self.km.kernel_spec.argv = [
            sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            *args,
        ]
        self.km.start_kernel(env=kernel_env, cwd=cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def execute(
        self,
        code: str,
        *,
        timeout: float = 60,
        user_expressions: dict | None = None,
        cell_id: str | None = None,
    ) -> Execution:
        """Run ``code``; ``cell_id`` is sent as JupyterLab sends it (request metadata)."""
        if cell_id is None:
            msg_id = self.kc.execute(
                code, user_expressions=user_expressions or {}, allow_stdin=False
            )
        else:
            content = {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": user_expressions or {},
                "allow_stdin": False,
                "stop_on_error": True,
            }
            msg = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
            self.kc.shell_channel.send(msg)
            msg_id = msg["header"]["msg_id"]
        outputs: list[dict[str, Any]] = []
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no output within {timeout} s for {code[:80]!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            if msg["msg_type"] in (
                "stream",
                "display_data",
                "update_display_data",
                "execute_result",
                "error",
                "comm_open",  # what the kernel asks of the front end (insert a cell, ...)
            ):
                outputs.append(msg)
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        return Execution(reply, outputs)

    def eval(self, expression: str) -> str:
        """The repr of ``expression`` evaluated in the kernel."""
        ex = self.execute("", user_expressions={"x": expression})
        value = ex.reply["content"]["user_expressions"]["x"]
        if value["status"] != "ok":
            raise RuntimeError(f"{expression}: {value.get('ename')}: {value.get('evalue')}")
        return value["data"]["text/plain"]

    def shutdown(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        shutil.rmtree(self._dir, ignore_errors=True)


def hold_threads(count: int) -> subprocess.Popen:
    """Another process of this user holding ``count`` threads (a browser has that many)."""
    script = (
        "import sys, threading\n"
        "stop = threading.Event()\n"
        f"for _ in range({count}): threading.Thread(target=stop.wait, daemon=True).start()\n"
        "print(threading.active_count(), flush=True)\n"
        "sys.stdin.readline()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and int(holder.stdout.readline()) > count
    return holder


@contextmanager
def extension_kernel(
    server: Any,
    setup: str,
    *,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    cwd: str | None = None,
) -> Iterator[Kernel]:
    """A kernel whose openai client talks to ``server``, with ``setup`` (which loads the
    extension) run in it. Afterwards the extension is unloaded, which ends its sandbox
    child, and the kernel is shut down, also when the setup failed."""
    kernel = Kernel(
        env={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": server.api_key or "", **(env or {})},
        extra_args=extra_args,
        cwd=cwd,
    )
    try:
        ran = kernel.execute(setup)
        assert ran.ok, ran.text
        yield kernel
    finally:
        try:
            kernel.execute(
                "for _name in ('dataagent', 'dataagent_jupyter'):\n"
                "    if _name in get_ipython().extension_manager.loaded:\n"
                "        get_ipython().extension_manager.unload_extension(_name)",
                timeout=30,
            )
        finally:
            kernel.shutdown()
