"""The first code the child kernel runs: lock the process down, then become an ipykernel.

Started by jupyter_client as ``python launcher.py POLICY_JSON -- IPKERNEL_ARGS...`` (by file
path, not ``-m``, so that importing it does not import the ``dataagent_jupyter`` package and
its dependencies before the sandbox is up). It uses the standard library only.

Order matters, because each step removes a power the next one may need:

1. resource limits (address space, CPU seconds, file size), and the process limit: the
   child joins the cgroup ``pids`` group the parent made for it, else ``RLIMIT_NPROC`` is
   set to the tasks the user already runs plus the allowance (Linux counts all of them);
2. a private network namespace, when we are root (needs ``CAP_SYS_ADMIN``);
3. drop every capability (bounding set, ambient, effective/permitted/inheritable) and
   lock the securebits, so uid 0 means nothing special any more: no ``setns()`` back into
   the parent's namespace, no ``ptrace``-level access to the parent's ``/proc`` entries;
4. ``no_new_privs``, which Landlock requires and which stops setuid binaries;
5. Landlock: only the listed folders are readable, only the work/transfer folders are
   writable, no TCP bind/connect, no abstract-socket connects or signals outside the
   sandbox.

Every step that the kernel here cannot do is skipped and left out of ``PROTECTIONS``
(what was done, in words) and ``APPLIED`` (the names ``DataAgent.sandbox_require`` uses);
the parent reads both (``import _dataagent_sandbox``), reports them in
``Sandbox.status()`` and tells the user what is missing. Nothing is scrubbed here: the
parent passes a scrubbed environment.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import resource
import sys
from typing import Any

#: What this process actually achieved, read by the parent after start-up.
PROTECTIONS: list[str] = []
#: The same, by the names of :mod:`.protections` ("landlock-fs", "seccomp", ...).
APPLIED: list[str] = []
#: Steps that were wanted but failed, with the reason (shown in status, for diagnosis).
PROBLEMS: list[str] = []

# The interpreter is linked against libc: no find_library() (it runs ldconfig or gcc).
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# --- Landlock (linux/landlock.h) ---------------------------------------------------------

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # same on all arches
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_REMOVE_DIR = 1 << 4
_FS_REMOVE_FILE = 1 << 5
_FS_MAKE_CHAR = 1 << 6
_FS_MAKE_DIR = 1 << 7
_FS_MAKE_REG = 1 << 8
_FS_MAKE_SOCK = 1 << 9
_FS_MAKE_FIFO = 1 << 10
_FS_MAKE_BLOCK = 1 << 11
_FS_MAKE_SYM = 1 << 12
_FS_REFER = 1 << 13  # ABI 2
_FS_TRUNCATE = 1 << 14  # ABI 3
_FS_IOCTL_DEV = 1 << 15  # ABI 5
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

# Rights that may be granted on a regular file (the kernel rejects the others there).
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_READ = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
# Work folder: everything except device nodes (needs no caps anyway) and cross-folder links.
_WRITE = (
    _READ
    | _FS_WRITE_FILE
    | _FS_REMOVE_DIR
    | _FS_REMOVE_FILE
    | _FS_MAKE_DIR
    | _FS_MAKE_REG
    | _FS_MAKE_SOCK
    | _FS_MAKE_FIFO
    | _FS_MAKE_SYM
    | _FS_TRUNCATE
)
# Transfer folders hold files the parent opens: regular files only, so no symlink or FIFO
# can be planted for the parent to trip over.
_TRANSFER = _FS_READ_FILE | _FS_READ_DIR | _FS_WRITE_FILE | _FS_REMOVE_FILE | _FS_MAKE_REG
_TRANSFER |= _FS_TRUNCATE
# The folder of the kernel's connection file: the kernel creates its IPC sockets there.
_SOCKETS = _FS_MAKE_SOCK | _FS_REMOVE_FILE


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def landlock_abi() -> int:
    """The Landlock ABI version the running kernel offers (0 when there is none)."""
    version = _libc.syscall(
        _SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION)
    )
    return max(int(version), 0)


def _fs_mask(abi: int) -> int:
    mask = (1 << 13) - 1
    if abi >= 2:
        mask |= _FS_REFER
    if abi >= 3:
        mask |= _FS_TRUNCATE
    if abi >= 5:
        mask |= _FS_IOCTL_DEV
    return mask


def _add_path_rule(ruleset_fd: int, path: str, access: int, handled: int) -> bool:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False  # a missing optional path is not an error
    try:
        is_dir = os.path.isdir(f"/proc/self/fd/{fd}")
        access &= handled if is_dir else (handled & _FILE_RIGHTS)
        attr = _PathBeneathAttr(access, fd)
        rc = _libc.syscall(
            _SYS_ADD_RULE,
            ctypes.c_int(ruleset_fd),
            ctypes.c_int(_RULE_PATH_BENEATH),
            ctypes.byref(attr),
            ctypes.c_uint32(0),
        )
        if rc != 0:
            err = ctypes.get_errno()
            PROBLEMS.append(f"landlock rule for {path}: {os.strerror(err)}")
            return False
        return True
    finally:
        os.close(fd)


def apply_landlock(policy: dict[str, Any]) -> None:
    """Restrict the filesystem (and TCP, and scoped IPC) to what the policy lists."""
    abi = landlock_abi()
    if abi < 1:
        PROBLEMS.append("landlock: not offered by this kernel")
        return
    block_net = not policy.get("network", False) and abi >= 4
    if not policy.get("network", False) and abi < 4:
        PROBLEMS.append(f"landlock tcp rules: ABI {abi} is too old (needs 4)")
    attr = _RulesetAttr(
        _fs_mask(abi),
        (_NET_BIND_TCP | _NET_CONNECT_TCP) if block_net else 0,
        (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset_fd = _libc.syscall(
        _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
    )
    if ruleset_fd < 0:
        PROBLEMS.append(f"landlock: {os.strerror(ctypes.get_errno())}")
        return
    try:
        handled = attr.handled_access_fs
        for key, access in (
            ("read", _READ),
            ("write", _WRITE),
            ("transfer", _TRANSFER),
            ("sockets", _SOCKETS),
        ):
            for path in policy.get(key, ()):
                _add_path_rule(ruleset_fd, path, access, handled)
        for path in policy.get("devices", ()):
            _add_path_rule(ruleset_fd, path, _FS_READ_FILE | _FS_WRITE_FILE, handled)
        # /proc/self resolves now, to this process's own directory: the kernel's threads
        # may read their own status, never the parent's environ.
        _add_path_rule(ruleset_fd, f"/proc/{os.getpid()}", _FS_READ_FILE | _FS_READ_DIR, handled)
        if _libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset_fd), ctypes.c_uint32(0)):
            PROBLEMS.append(f"landlock: {os.strerror(ctypes.get_errno())}")
            return
    finally:
        os.close(ruleset_fd)
    PROTECTIONS.append("landlock filesystem")
    APPLIED.append("landlock-fs")
    if block_net:
        PROTECTIONS.append("network blocked (landlock tcp)")
        APPLIED.append("landlock-net")
    if abi >= 6:
        PROTECTIONS.append("signals and abstract sockets scoped (landlock)")
        APPLIED.append("signal-scope")
    else:
        PROBLEMS.append(f"landlock signal scoping: ABI {abi} is too old (needs 6)")


# --- capabilities, namespaces, no_new_privs -----------------------------------------------

_PR_SET_NO_NEW_PRIVS = 38
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
# NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE and KEEP_CAPS_LOCKED, each locked:
# uid 0 can never regain capabilities through execve or setuid.
_SECUREBITS = 0b1 | 0b10 | 0b100 | 0b1000 | 0b10_0000 | 0b100_0000 | 0b1000_0000
_CAP_VERSION_3 = 0x20080522
_CLONE_NEWNET = 0x40000000


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _prctl(option: int, arg2: int = 0) -> int:
    rc = _libc.prctl(
        ctypes.c_int(option),
        ctypes.c_ulong(arg2),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    return 0 if rc == 0 else ctypes.get_errno()


def _effective_caps() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def unshare_network() -> None:
    """A fresh network namespace: no interfaces at all, not even a usable loopback."""
    if _libc.unshare(ctypes.c_int(_CLONE_NEWNET)) == 0:
        PROTECTIONS.append("network namespace (no interfaces)")
        APPLIED.append("netns")
    else:
        PROBLEMS.append(f"network namespace: {os.strerror(ctypes.get_errno())}")


def drop_capabilities() -> None:
    """Give up every capability for good, so a root child is an ordinary process."""
    if _effective_caps() == 0 and os.geteuid() != 0:
        return
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            last = int(fh.read())
    except OSError:
        last = 63
    _prctl(_PR_SET_SECUREBITS, _SECUREBITS)  # needs CAP_SETPCAP: do it first
    for cap in range(last + 1):
        _prctl(_PR_CAPBSET_DROP, cap)
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        PROBLEMS.append(f"capset: {os.strerror(ctypes.get_errno())}")
    if _effective_caps() == 0:
        PROTECTIONS.append("capabilities dropped")
    else:
        PROBLEMS.append("capabilities: some remain")


def set_no_new_privs() -> None:
    """No setuid/file-capability gains across execve; Landlock needs it too."""
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1) == 0:
        PROTECTIONS.append("no_new_privs")
    else:
        PROBLEMS.append("no_new_privs: refused")


def apply_rlimits(limits: dict[str, list[int]]) -> None:
    """Lower the soft and hard limits (lowering needs no privilege)."""
    applied = []
    for name, (soft, hard) in limits.items():
        which = getattr(resource, name)
        _, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:
            hard = min(hard, old_hard) if hard != resource.RLIM_INFINITY else old_hard
            soft = min(soft, hard) if soft != resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(which, (soft, hard))
            applied.append(name)
        except (ValueError, OSError) as exc:
            PROBLEMS.append(f"{name}: {exc}")
    if applied:
        names = ", ".join(n.removeprefix("RLIMIT_").lower() for n in applied)
        PROTECTIONS.append(f"resource limits ({names})")


# --- seccomp: no new sockets once the kernel has its own -------------------------------------

# Landlock does not mediate connect() on path-named Unix sockets (a mounted docker.sock, a
# desktop bus) nor UDP, so once the kernel has bound its own IPC sockets the child may not
# create sockets of those families at all. Per architecture: audit arch, socket(),
# io_uring_setup() (io_uring can open sockets without calling socket()).
_SECCOMP_ARCHES = {"x86_64": (0xC000003E, 41, 425), "aarch64": (0xC00000B7, 198, 425)}
_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK, _AF_PACKET = 1, 2, 10, 16, 17
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_EACCES = 0x7FFF0000, 0x00050000 | 13


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter)))


def _socket_filter(
    arch: int, nr_socket: int, nr_uring: int, families: list[int]
) -> list[tuple[int, int, int, int]]:
    """A classic-BPF program: (code, jump-if-true, jump-if-false, k) per instruction."""
    n = len(families)
    allow, deny = 7 + n, 8 + n  # indices of the two RET instructions
    prog = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # 0: seccomp_data.arch
        (_BPF_JEQ_K, 0, deny - 2, arch),  # 1: another ABI (32-bit int 0x80...): deny
        (_BPF_LD_W_ABS, 0, 0, 0),  # 2: seccomp_data.nr
        (_BPF_JGE_K, deny - 4, 0, 0x40000000),  # 3: x32 syscall numbers: deny
        (_BPF_JEQ_K, deny - 5, 0, nr_uring),  # 4: io_uring_setup: deny
        (_BPF_JEQ_K, 0, allow - 6, nr_socket),  # 5: anything but socket(): allow
        (_BPF_LD_W_ABS, 0, 0, 16),  # 6: args[0] (low half): the address family
    ]
    for i, family in enumerate(families):  # 7 .. 6+n
        prog.append((_BPF_JEQ_K, deny - (8 + i), 0, family))
    prog.append((_BPF_RET_K, 0, 0, _RET_ALLOW))
    prog.append((_BPF_RET_K, 0, 0, _RET_EACCES))
    return prog


def seal(network: bool = False) -> None:
    """Called from inside the kernel once its own sockets exist: refuse new ones.

    Unix sockets are always refused; with the network off, also IPv4/IPv6 (UDP is not
    covered by Landlock), netlink and packet sockets.
    """
    import platform

    machine = platform.machine()
    if machine not in _SECCOMP_ARCHES:
        PROBLEMS.append(f"seccomp: no socket filter for {machine}")
        return
    arch, nr_socket, nr_uring = _SECCOMP_ARCHES[machine]
    families = [_AF_UNIX] + ([] if network else [_AF_INET, _AF_INET6, _AF_NETLINK, _AF_PACKET])
    prog = _socket_filter(arch, nr_socket, nr_uring, families)
    filters = (_SockFilter * len(prog))(*(_SockFilter(*ins) for ins in prog))
    fprog = _SockFprog(len(prog), filters)
    rc = _libc.syscall(
        _SYS_SECCOMP[machine],
        ctypes.c_uint(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_uint(_SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    if rc != 0:
        PROBLEMS.append(f"seccomp: {os.strerror(ctypes.get_errno())}")
        return
    PROTECTIONS.append(
        "no new sockets (seccomp)" if not network else "no new unix sockets (seccomp)"
    )
    APPLIED.append("seccomp")


def _load_transfer(path: str) -> None:
    # The child decodes frames with the very module the parent encodes them with. It is
    # loaded from its file now, before Landlock hides the package folder.
    spec = importlib.util.spec_from_file_location("_dataagent_transfer", path)
    if spec is None or spec.loader is None:
        raise ImportError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def count_user_tasks(uid: int) -> int:
    """Tasks (processes and threads) whose real uid is ``uid``: what RLIMIT_NPROC counts."""
    total = 0
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as fh:
                real_uid, threads = None, 0
                for line in fh:
                    if line.startswith("Uid:"):
                        real_uid = int(line.split()[1])
                    elif line.startswith("Threads:"):
                        threads = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
        if real_uid == uid:
            total += threads
    return total


def limit_processes(max_tasks: int, cgroup: str | None) -> None:
    """Bound the child's tasks to ``max_tasks`` however the machine allows.

    A cgroup counts only the child's own tasks. ``RLIMIT_NPROC`` counts every task of the
    user (a browser alone holds hundreds of threads), so it is set to what the user runs
    now plus ``max_tasks``: a fork bomb still stops, an ordinary desk still works.
    """
    if not max_tasks:
        return
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
                fh.write(str(os.getpid()))
            PROTECTIONS.append(f"process limit: {max_tasks} tasks (cgroup pids)")
            APPLIED.append("process-limit")
            return
        except OSError as exc:
            PROBLEMS.append(f"cgroup pids: {exc.strerror}")
    if os.geteuid() == 0:
        # Linux never applies RLIMIT_NPROC to uid 0, capabilities or not: do not claim it.
        PROBLEMS.append("process limit: not enforced for root without a cgroup pids group")
        return
    existing = count_user_tasks(os.getuid())
    limit = existing + max_tasks
    _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    except (ValueError, OSError) as exc:
        PROBLEMS.append(f"process limit: {exc}")
        return
    PROTECTIONS.append(
        f"process limit: {limit - existing} tasks beyond the {existing} this user already "
        "runs (RLIMIT_NPROC)"
    )
    APPLIED.append("process-limit")


def lock_down(policy: dict[str, Any]) -> None:
    """Apply every protection the policy asks for, in the order that keeps them possible."""
    apply_rlimits(policy.get("rlimits", {}))
    limit_processes(int(policy.get("max_tasks") or 0), policy.get("cgroup"))
    if not sys.platform.startswith("linux"):
        PROBLEMS.append(f"namespaces, capabilities, no_new_privs, Landlock: not on {sys.platform}")
        return
    if policy.get("netns") and not policy.get("network"):
        unshare_network()
    if policy.get("drop_caps", True):
        drop_capabilities()
    set_no_new_privs()
    if policy.get("landlock", True):
        apply_landlock(policy)
    if policy.get("env_scrubbed"):
        PROTECTIONS.append("env scrubbed")


def report() -> str:
    """What was applied and what failed, as JSON (the parent asks once, after start)."""
    return json.dumps({"protections": PROTECTIONS, "applied": APPLIED, "problems": PROBLEMS})


def main(argv: list[str]) -> None:
    """``launcher.py POLICY_JSON [--] IPKERNEL_ARGS...``: lock down, then run ipykernel."""
    policy = json.loads(argv[0])
    rest = argv[1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if policy.get("transfer_module"):
        _load_transfer(policy["transfer_module"])
    lock_down(policy)
    # IPython replaces sys.modules["__main__"]; keep this module reachable by name.
    sys.modules["_dataagent_sandbox"] = sys.modules[__name__]
    sys.argv = ["ipykernel_launcher", *rest]
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main(sys.argv[1:])
