"""A cgroup ``pids`` group per child, where this machine lets us make one.

``RLIMIT_NPROC`` counts every task the user owns on the machine, and Linux ignores it for
root. A ``pids`` cgroup counts only the tasks inside it, so it is the better process
limit: a fork bomb in the child stops at ``pids.max`` whatever else the user runs. Making
one needs write access to a cgroup hierarchy with the ``pids`` controller: root with a
cgroup v1 ``pids`` mount, or a delegated cgroup v2 subtree (a systemd user session). Where
neither exists the launcher falls back to ``RLIMIT_NPROC`` (see :mod:`.launcher`).

The parent creates the group and removes it; the launcher only joins it (writes its pid
to ``cgroup.procs``) before it drops its capabilities.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

__all__ = ["create_pids_group", "remove_group"]

_PREFIX = "dataagent-"


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, filesystem type, super options) of every cgroup mount."""
    out = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index("-")
                fstype, options = fields[sep + 1], fields[sep + 3]
                if fstype in ("cgroup", "cgroup2"):
                    out.append((fields[4], fstype, options))
    except (OSError, ValueError, IndexError):
        pass
    return out


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per hierarchy: ``{"pids": "/a/b", "": "/user.slice"}``."""
    paths = {}
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for name in controllers.split(","):
                    paths[name] = path
    except (OSError, ValueError):
        pass
    return paths


def _candidates() -> list[Path]:
    """Folders a new pids group could be made in, most likely first."""
    own = _own_paths()
    places = []
    for mount, fstype, options in _mounts():
        if fstype == "cgroup" and "pids" in options.split(",") and "pids" in own:
            # v1: a child of our own group (no rule against processes in inner nodes).
            places.append(Path(mount + own["pids"].rstrip("/")))
        elif fstype == "cgroup2" and "" in own:
            # v2: processes may only sit in leaves, so a sibling of our own group, in a
            # parent that hands the pids controller down.
            here = Path(mount + own[""].rstrip("/"))
            parent = here.parent if here != Path(mount) else here
            try:
                handed_down = (parent / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            if "pids" in handed_down:
                places.append(parent)
    return places


def create_pids_group(max_tasks: int) -> Path | None:
    """A new, empty cgroup whose ``pids.max`` is ``max_tasks``; None where none can be made."""
    for place in _candidates():
        if not os.access(place, os.W_OK) or not os.access(place / "cgroup.procs", os.W_OK):
            continue
        group = place / f"{_PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            (group / "pids.max").write_text(str(max_tasks))
            return group
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
    return None


def remove_group(group: Path, *, timeout: float = 2.0) -> bool:
    """Kill whatever still runs in ``group`` (orphaned grandchildren too), then remove it."""
    if not group.name.startswith(_PREFIX):
        return False  # never touch a group we did not make
    deadline = time.monotonic() + timeout
    while True:
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            pids = []
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            group.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:  # EBUSY until the killed tasks are reaped
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
