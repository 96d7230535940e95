"""Lifecycle of child kernels: start one (warm, in the background), replace it, stop it.

Talking to a child (running code, reading its outputs) is :mod:`.executor`'s job; this
module only owns processes and folders, as jupyter_client separates ``KernelManager``
from ``KernelClient``.

Each child gets a private folder (mode 0700) holding its connection file and IPC sockets
(``conn/``), its working directory (``work/``, also its ``HOME``, ``TMPDIR`` and
``MPLCONFIGDIR``) and a disk transfer folder; frames travel through a second transfer
folder in ``/dev/shm`` where that exists. The child is started through :mod:`.launcher`
with a policy listing exactly these folders plus the Python installation.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import signal
import site
import stat
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager

from ..config import parse_size
from ..errors import Cancelled, SandboxError
from .cgroups import create_pids_group, remove_group
from .disk import DiskWatch
from .limits import Limits, format_bytes, limits_from_config, rlimits, scrub_env
from .protections import NAMES, check_required
from .transfer import TransferError
from .untrusted import parse_reply

log = logging.getLogger("dataagent_jupyter.sandbox")

_HERE = Path(__file__).resolve().parent
_LAUNCHER = _HERE / "launcher.py"
_TRANSFER = _HERE / "transfer.py"
_KERNEL_NAME = "dataagent-sandbox"
_START_TIMEOUT = 60.0

# Ready-made in every child, so the first answer pays no import.
_WARM_UP = """\
import numpy as np
import pandas as pd
import matplotlib
import matplotlib.pyplot as plt
"""
_REPORT = "__import__('_dataagent_transfer').Reply(__import__('_dataagent_sandbox').report())"
# Run inside the kernel once its own sockets exist (see launcher.seal).
_SEAL = "__import__('_dataagent_sandbox').seal(network={network})\n"

# Read-only system paths that the dynamic loader, numpy, pyarrow's allocator, pandas (time
# zones), getpass and matplotlib need; found by running the warm-up, a tz-aware frame and
# a plot under strace. Missing ones are skipped. /usr/share/fonts is left out on purpose:
# matplotlib ships its own fonts, and scanning the system's would rebuild a font cache in
# every child.
_SYSTEM_READ = (
    "/usr/lib",
    "/usr/lib64",
    "/lib",
    "/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/usr/share/zoneinfo",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/sys/devices/system/cpu",
    # CPU and memory quotas (cgroup v1 and v2): DuckDB refuses to start without them
    "/sys/fs/cgroup/cpu",
    "/sys/fs/cgroup/cpu.max",
    "/sys/fs/cgroup/memory",
    "/sys/fs/cgroup/memory.max",
    "/sys/kernel/mm/transparent_hugepage",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/sys/vm/overcommit_memory",
)
_DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/full")


class _OneSpec(KernelSpecManager):
    """A kernel-spec manager that knows only the sandbox spec it was given (no files)."""

    def __init__(self, spec: KernelSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._spec = spec

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        return self._spec

    def find_kernel_specs(self) -> dict[str, str]:
        return {}


def python_paths() -> list[str]:
    """Folders of the running Python installation (what the child must be able to read)."""
    paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    paths.update(site.getsitepackages())
    user_site = site.getusersitepackages()
    if site.ENABLE_USER_SITE and user_site and os.path.isdir(user_site):
        paths.add(user_site)
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            paths.add(path)
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    return sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})


def _shm_dir() -> str | None:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


@dataclass(eq=False)
class Child:
    """One running child kernel and its private folders."""

    km: KernelManager
    client: Any  # BlockingKernelClient
    root: Path
    work_dir: Path
    transfer_dirs: tuple[Path, ...]  # fastest first
    log_path: Path
    pid: int
    limits: Limits
    protections: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    applied: tuple[str, ...] = ()  # protections by name (see .protections)
    cgroup: Path | None = None
    disk: DiskWatch | None = None
    #: Why the parent killed it (a limit it enforces itself), for the death message.
    stopped_for: str | None = None
    #: read-only folders where the frames of its question are linked (see frame_store)
    frame_dirs: tuple[Path, ...] = ()
    #: called once the process is gone, to release its frame folders
    on_close: Callable[[Child], None] | None = None
    closed: bool = False

    def is_alive(self) -> bool:
        """Is the process still there? (a cheap ``waitpid``; safe to call often)."""
        return not self.closed and self.km.is_alive()

    def returncode(self) -> int | None:
        """Exit status once dead (negative: killed by that signal)."""
        process = getattr(self.km.provisioner, "process", None)
        if process is None:
            return None
        return process.poll()

    def usage(self) -> tuple[int | None, float | None]:
        """(resident memory in bytes, CPU seconds used), or Nones when it cannot be read."""
        try:
            import psutil

            proc = psutil.Process(self.pid)
            with proc.oneshot():
                times = proc.cpu_times()
                return proc.memory_info().rss, times.user + times.system
        except Exception:
            return None, None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the child's stdout/stderr, for start-up failures."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the kernel and its process group (what its code forked), at once."""
        process = getattr(self.km.provisioner, "process", None)
        if process is None or process.poll() is not None:
            return  # already reaped: its pid may belong to someone else by now
        try:
            if os.getpgid(self.pid) == self.pid:  # jupyter_client starts it in its own session
                os.killpg(self.pid, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass

    def close(self) -> None:
        """Kill the process and delete its folders (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.disk is not None:
            self.disk.stop()
        self.kill()
        try:
            self.client.stop_channels()
        except Exception:
            log.debug("stop_channels failed", exc_info=True)
        try:
            self.km.shutdown_kernel(now=True)
        except Exception:
            log.debug("shutdown_kernel failed", exc_info=True)
        if self.on_close is not None:
            try:
                self.on_close(self)
            except Exception:
                log.debug("releasing the frame folders failed", exc_info=True)
        if self.cgroup is not None:
            remove_group(self.cgroup)  # also kills grandchildren outside its process group
        for path in (self.root, *self.transfer_dirs):
            shutil.rmtree(path, ignore_errors=True)

    def stop_for(self, reason: str) -> None:
        """Kill the process now for a limit the parent enforces; ``reason`` explains it."""
        self.stopped_for = reason
        self.kill()


_OWNER = "owner.json"
_ROOT_PREFIX = "dataagent-sandbox-"
_swept = threading.Event()


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def write_owner(root: Path, shm: Path | None, *, cgroup: Path | None = None) -> None:
    """Record who owns ``root`` (and its /dev/shm twin, its cgroup), for :func:`sweep_stale`."""
    owner = {
        "pid": os.getpid(),
        "started": _process_started(os.getpid()),
        "shm": str(shm) if shm else None,
        "cgroup": str(cgroup) if cgroup else None,
    }
    (root / _OWNER).write_text(json.dumps(owner))


def _private_dir(path: Path) -> bool:
    """A real folder (not a link) of this user that nobody else may enter (mode 0700)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
    )


def user_parent() -> Path:
    """``$TMPDIR/dataagent-<uid>``: this user's private folder for the sandbox's folders.

    The shared temporary folder is writable by everyone; a per-user parent of mode 0700
    means the sweep below only ever looks at folders this user made.
    """
    parent = Path(tempfile.gettempdir()) / f"dataagent-{os.getuid()}"
    try:
        parent.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise SandboxError(f"The sandbox folder {parent} cannot be made: {exc.strerror}.") from None
    if not _private_dir(parent):
        raise SandboxError(
            f"{parent} exists but is not a private folder of this user (mode 0700).",
            hint="Remove it (another user may have made it) or set TMPDIR to a folder of yours.",
        )
    return parent


def shm_prefix() -> str:
    """Name prefix of this user's folders in /dev/shm (the sweep checks it)."""
    return f"dataagent-{os.getuid()}-"


def sweep_stale() -> int:
    """Delete folders left by children whose parent died without cleaning up.

    A user's kernel that Jupyter kills (restart, "shut down now") runs no exit handlers;
    its child follows it (ipykernel watches its parent) but the folders stay, including
    the one in /dev/shm. Each root folder names its owner (pid and start time), so only
    folders of processes that are gone are removed; and only folders in this user's
    private parent, owned by this user and of mode 0700, are looked at. Returns how many
    were removed.
    """
    removed = 0
    for root in user_parent().glob(_ROOT_PREFIX + "*"):
        if not _private_dir(root):
            continue
        try:
            info = json.loads((root / _OWNER).read_text())
            pid, started = int(info["pid"]), info.get("started")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge
        now_started = _process_started(pid)
        if now_started is not None and (started is None or abs(now_started - started) < 1):
            continue  # the owner is alive
        shm = Path(str(info.get("shm") or ""))
        in_shm = shm.parent == Path("/dev/shm") and shm.name.startswith(shm_prefix())
        if in_shm and _private_dir(shm):
            shutil.rmtree(shm, ignore_errors=True)
        group = info.get("cgroup")
        if group and str(group).startswith("/sys/fs/cgroup/"):
            remove_group(Path(group))
        shutil.rmtree(root, ignore_errors=True)
        removed += 1
    return removed


def start_child(config: Any, *, warm: bool = True, frame_dirs: tuple[Path, ...] = ()) -> Child:
    """Start a sandboxed child kernel and wait until it answers (blocking, ~1 s).

    ``frame_dirs`` are folders it may read (only) for the frames of its question.
    """
    if not _swept.is_set():
        _swept.set()
        sweep_stale()
    limits = limits_from_config(config)
    disk_limit = parse_size(config.disk_limit, total=1)
    root = Path(tempfile.mkdtemp(prefix=_ROOT_PREFIX, dir=user_parent()))
    conn_dir, work_dir, disk_xfer = root / "conn", root / "work", root / "transfer"
    for path in (conn_dir, work_dir, disk_xfer, work_dir / "tmp", work_dir / ".mpl"):
        path.mkdir(mode=0o700)
    transfer_dirs = [disk_xfer]
    shm = _shm_dir()
    if shm:
        transfer_dirs.insert(0, Path(tempfile.mkdtemp(prefix=shm_prefix(), dir=shm)))
    cgroup = create_pids_group(limits.processes) if limits.processes else None
    write_owner(root, transfer_dirs[0] if shm else None, cgroup=cgroup)
    connection_file = conn_dir / "kernel.json"
    log_path = root / "kernel.log"

    policy = {
        "rlimits": rlimits(limits),
        "max_tasks": limits.processes or 0,
        "cgroup": str(cgroup) if cgroup else None,
        "read": [
            *python_paths(),
            *_SYSTEM_READ,
            *(os.path.abspath(os.path.expanduser(p)) for p in config.sandbox_read_paths),
            str(connection_file),
            *(str(p) for p in frame_dirs),
        ],
        "write": [str(work_dir)],
        "transfer": [str(p) for p in transfer_dirs],
        "sockets": [str(conn_dir)],
        "devices": list(_DEVICES),
        "network": bool(config.sandbox_network),
        "netns": True,
        "drop_caps": True,
        "env_scrubbed": True,
        "transfer_module": str(_TRANSFER),
    }
    argv = [
        sys.executable,
        # ipykernel binds a TCP pipe for forked subprocesses' output; Landlock refuses it,
        # by design, and the warning would only clutter the log.
        "-W",
        "ignore:Couldn't bind IOPub Pipe:UserWarning",
        str(_LAUNCHER),
        json.dumps(policy),
        "--",
        "-f",
        "{connection_file}",
        "--HistoryManager.enabled=False",
        "--IPKernelApp.quiet=True",
    ]
    spec = KernelSpec(
        argv=argv,
        display_name="Data Agent sandbox",
        language="python",
        interrupt_mode="signal",
        env={},
        metadata={},
    )
    km = KernelManager(
        kernel_spec_manager=_OneSpec(spec),
        kernel_name=_KERNEL_NAME,
        transport="ipc",
        connection_file=str(connection_file),
    )
    env = child_env(config, work_dir)
    client = None
    try:
        with open(log_path, "wb") as log_file:
            km.start_kernel(env=env, cwd=str(work_dir), stdout=log_file, stderr=log_file)
        client = km.client()
        client.start_channels()
        child = Child(
            km=km,
            client=client,
            root=root,
            work_dir=work_dir,
            transfer_dirs=tuple(transfer_dirs),
            log_path=log_path,
            pid=_kernel_pid(km),
            limits=limits,
            frame_dirs=frame_dirs,
            cgroup=cgroup,
        )
        try:
            client.wait_for_ready(timeout=_START_TIMEOUT)
            setup = _SEAL.format(network=bool(config.sandbox_network))
            report = execute_quietly(child, setup + (_WARM_UP if warm else ""), {"report": _REPORT})
        except Exception as exc:
            tail = child.log_tail()
            child.close()
            raise _start_error(tail, limits) from exc
        child.protections, child.applied, child.problems = _parse_report(report)
        try:
            check_required(config, child.applied)
        except SandboxError:
            child.close()
            raise
        if disk_limit:
            child.disk = _watch_disk(child, disk_limit)
        return child
    except BaseException:
        if client is None:
            try:
                km.shutdown_kernel(now=True)
            except Exception:
                pass
            if cgroup is not None:
                remove_group(cgroup)
            for path in (root, *transfer_dirs):
                shutil.rmtree(path, ignore_errors=True)
        raise


def _watch_disk(child: Child, limit: int) -> DiskWatch:
    """Stop ``child`` once its work and /dev/shm folders hold more than ``limit`` bytes."""
    folders = [child.work_dir, *(p for p in child.transfer_dirs if p.parent == Path("/dev/shm"))]

    def exceeded(used: int) -> None:
        child.stop_for(
            f"the analysis wrote {format_bytes(used)} to its folders, more than the "
            f"{format_bytes(limit)} allowed; it was stopped and replaced - write less (or "
            "nothing: results come back by themselves), or raise DataAgent.disk_limit."
        )

    watch = DiskWatch(folders, limit, exceeded)
    watch.start()
    return watch


def _start_error(log_tail: str, limits: Limits) -> SandboxError:
    """One clear sentence from a failed start (the log's last line says why)."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if "MemoryError" in log_tail:
        return SandboxError(
            f"The analysis kernel could not start within its memory limit "
            f"({format_bytes(limits.memory)}).",
            hint="Raise DataAgent.memory_limit (a Python kernel with pandas needs about 1 GiB).",
        )
    return SandboxError(
        "The analysis kernel could not start." + (f" It said: {last}" if last else ""),
        hint="Check that ipykernel, pandas and matplotlib are installed in this Python, or "
        "list folders it needs in DataAgent.sandbox_read_paths.",
    )


def child_env(config: Any, work_dir: Path) -> dict[str, str]:
    """The child's environment: the user's, scrubbed of secrets, pointed at its work folder."""
    env = scrub_env(os.environ, secrets=[config.resolved_api_key()])
    for name in list(env):
        if name.startswith(("JUPYTER_", "IPYTHON", "MPL", "PYTHONSTARTUP", "XDG_")):
            del env[name]
    tmp = str(work_dir / "tmp")
    env.update(
        HOME=str(work_dir),
        TMPDIR=tmp,
        TMP=tmp,
        TEMP=tmp,
        MPLCONFIGDIR=str(work_dir / ".mpl"),
        MPLBACKEND="module://matplotlib_inline.backend_inline",
        IPYTHONDIR=str(work_dir / ".ipython"),
        JUPYTER_CONFIG_DIR=str(work_dir / ".jupyter"),
        JUPYTER_DATA_DIR=str(work_dir / ".local" / "share" / "jupyter"),
        JUPYTER_RUNTIME_DIR=str(work_dir / ".local" / "share" / "jupyter" / "runtime"),
        XDG_CACHE_HOME=str(work_dir / ".cache"),
        XDG_CONFIG_HOME=str(work_dir / ".config"),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONUSERBASE=site.getuserbase() or "",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    # glibc reserves 64 MiB of address space per thread arena; with a dozen kernel threads
    # that alone would eat ~0.7 GiB of an address-space (RLIMIT_AS) memory limit.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def execute_quietly(
    child: Child,
    code: str,
    expressions: dict[str, str],
    timeout: float = _START_TIMEOUT,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Run set-up code silently; return its user_expressions (raise if it failed).

    When ``cancel`` is set meanwhile, the child is closed (its helper may be stuck in
    work of the model's making) and Cancelled is raised.
    """
    msg_id = child.client.execute(
        code, silent=True, store_history=False, user_expressions=expressions, allow_stdin=False
    )
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the kernel did not answer in time")
        if cancel is not None and cancel.is_set():
            child.close()
            raise Cancelled("Stopped while the analysis kernel was answering.")
        try:
            reply = child.client.get_shell_msg(timeout=min(remaining, 0.1))
        except Exception:  # queue.Empty
            if not child.is_alive():
                raise RuntimeError("the analysis kernel died") from None
            continue
        if reply["parent_header"].get("msg_id") != msg_id:
            continue
        content = reply["content"]
        if content.get("status") != "ok":
            raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}")
        return content.get("user_expressions", {})


def _parse_report(
    expressions: dict[str, Any],
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(protections in words, protections by name, problems) from the launcher's report."""
    if expressions.get("report", {}).get("status") != "ok":
        return (), (), ("the kernel did not report its protections",)
    try:
        report = parse_reply(expressions, "report")
    except TransferError:
        return (), (), ("the kernel's report of its protections was unreadable",)
    applied = report.get("applied", ())
    return (
        tuple(report.get("protections", ())),
        tuple(name for name in NAMES if isinstance(applied, list) and name in applied),
        tuple(report.get("problems", ())),
    )


class ChildPool:
    """Hands out fresh children: one started ahead and ready, each used for one question.

    A child serves one lease (a question, or an agent run, with all its fix attempts) and
    is then thrown away, which also ends any thread or process its code left running.
    The next child is started as soon as one is taken, so a question rarely waits.
    """

    def __init__(
        self,
        config: Any,
        frame_dirs: Callable[[], tuple[Path, ...]] = tuple,
        release: Callable[[Child], None] | None = None,
    ) -> None:
        self._config = config
        self._frame_dirs = frame_dirs
        self._release = release
        self._lock = threading.Lock()
        self._ready: Child | None = None
        self._future: concurrent.futures.Future[Child] | None = None
        self._leased: set[Child] = set()
        self._closed = False
        #: the child started last (for status while the next one starts)
        self.last: Child | None = None

    @property
    def ready(self) -> Child | None:
        """The child waiting for the next question, if one is up (check ``is_alive``)."""
        return self._ready

    @property
    def leased(self) -> list[Child]:
        """Children serving a question now."""
        with self._lock:
            return list(self._leased)

    @property
    def starting(self) -> bool:
        """True while a child is being started in the background."""
        future = self._future
        return future is not None and not future.done()

    def start_ahead(self) -> None:
        """Start the next child in a background thread unless one is ready or starting."""
        with self._lock:
            if self._closed or self._future is not None or self._ready is not None:
                return
            future: concurrent.futures.Future[Child] = concurrent.futures.Future()
            self._future = future
        thread = threading.Thread(
            target=self._start_into, args=(future,), name="dataagent-sandbox-start", daemon=True
        )
        thread.start()

    def _start_into(self, future: concurrent.futures.Future[Child]) -> None:
        folders: tuple[Path, ...] = ()
        try:
            folders = self._frame_dirs()
            child = start_child(self._config, frame_dirs=folders)
            child.on_close = self._release
        except BaseException as exc:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            with self._lock:
                if self._future is future:
                    self._future = None
            future.set_exception(exc)
            return
        with self._lock:
            stale = self._closed or self._future is not future
            if not stale:
                self._ready, self._future, self.last = child, None, child
        if stale:
            child.close()
        future.set_result(child)

    def take(self, cancel: threading.Event | None = None) -> Child:
        """A fresh, live child for one lease (waits for the one starting, if need be)."""
        deadline = time.monotonic() + _START_TIMEOUT * 2
        while True:
            with self._lock:
                if self._closed:
                    raise SandboxError(
                        "The analysis sandbox was shut down.",
                        hint="Run %dataagent restart to start a new one.",
                    )
                child, future = self._ready, self._future
                if child is not None:
                    self._ready = None
                    if child.is_alive():
                        self._leased.add(child)
            if child is not None:
                if child.is_alive():
                    if self._config.warm_child:
                        self.start_ahead()
                    return child
                self._close_later(child)
                continue
            if future is None:
                self.start_ahead()
                continue
            try:
                future.result(timeout=0.1)
            except concurrent.futures.TimeoutError:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("Stopped while waiting for the analysis kernel.") from None
                if time.monotonic() > deadline:
                    raise SandboxError("The analysis kernel took too long to start.") from None
            # loop: the started child is now ready (unless a restart made it stale)

    def discard(self, child: Child) -> None:
        """Throw a used (or dead, hung, broken) child away, in the background."""
        with self._lock:
            self._leased.discard(child)
            if self._ready is child:
                self._ready = None
        self._close_later(child)
        if self._config.warm_child:
            self.start_ahead()

    def _close_later(self, child: Child) -> None:
        # Killing and deleting folders takes tens of milliseconds: the answer is not
        # kept waiting for it. The process is signalled at once, though.
        child.kill()
        threading.Thread(target=child.close, name="dataagent-sandbox-close", daemon=True).start()

    def restart(self) -> None:
        """Throw away every child (ready, starting, serving) and start a fresh one."""
        with self._lock:
            children = [c for c in (self._ready, *self._leased) if c is not None]
            self._ready, self._leased = None, set()
            self._future = None  # a start in flight is now stale and closes itself
        for child in children:
            child.close()
        self.start_ahead()

    def shutdown(self) -> None:
        """Stop everything; idempotent."""
        with self._lock:
            self._closed = True
            children = [c for c in (self._ready, *self._leased) if c is not None]
            self._ready, self._leased = None, set()
            self._future = None
        for child in children:
            child.close()


def _kernel_pid(km: KernelManager) -> int:
    """The child kernel's process id (the local provisioner started it)."""
    pid = getattr(km.provisioner, "pid", None)
    if not isinstance(pid, int):
        raise SandboxError("the analysis kernel started, but its process cannot be found.")
    return pid
