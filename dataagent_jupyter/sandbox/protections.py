"""The protections the README promises, by name: which are missing, what that means.

The launcher reports the names it achieved (``launcher.APPLIED``). A protection the
README promises but this machine could not give is never dropped silently: the first run
of a session says so in one line, ``%dataagent status`` lists it, and
``DataAgent.sandbox_require`` turns it into a refusal to run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..config import PROTECTION_NAMES
from ..errors import SandboxError

__all__ = [
    "MEANING",
    "NAMES",
    "check_required",
    "describe",
    "expected",
    "missing",
    "notice",
]

#: Every protection name, with what running without it means for the user.
MEANING: dict[str, str] = {
    "landlock-fs": "the analysis code can read your home folder and other files you can read",
    "landlock-net": "the analysis code can open TCP connections, to this machine's services too",
    "seccomp": "the analysis code can open new Unix and UDP sockets",
    "netns": "the analysis code shares this machine's network; Landlock and seccomp, where "
    "present, still block its connections",
    "signal-scope": "the analysis code can send signals to your other processes",
    "process-limit": "the analysis code can start processes without bound; a fork bomb "
    "can slow this machine down",
}
NAMES = PROTECTION_NAMES
# What each protection needs from the configuration: the network ones mean nothing when
# the user let the child use the network; the process limit is off at max_processes=0.
_NETWORK = ("landlock-net", "netns")


def expected(config: Any) -> tuple[str, ...]:
    """The protections the README promises under this configuration."""
    names = list(NAMES)
    if config.sandbox_network:
        names = [n for n in names if n not in _NETWORK]
    if not config.max_processes:
        names.remove("process-limit")
    return tuple(names)


def missing(config: Any, applied: Iterable[str]) -> tuple[str, ...]:
    """Promised protections that the child does not have."""
    done = set(applied)
    return tuple(name for name in expected(config) if name not in done)


def describe(absent: Iterable[str]) -> str:
    """``name (what running without it means); ...``"""
    return "; ".join(f"{name} ({MEANING[name]})" for name in absent)


def notice(absent: Iterable[str]) -> str:
    """One line for the cell: what is missing and what it means ("" when nothing is)."""
    text = describe(absent)
    if not text:
        return ""
    return (
        f"Sandbox protections missing on this machine: {text}. %dataagent status lists "
        "them; DataAgent.sandbox_require makes --run refuse without them."
    )


def check_required(config: Any, applied: Iterable[str]) -> None:
    """Raise SandboxError when a protection named in ``DataAgent.sandbox_require`` is absent."""
    done = set(applied)
    absent = [name for name in config.sandbox_require if name not in done]
    if not absent:
        return
    reasons = []
    for name in absent:
        if name in _NETWORK and config.sandbox_network:
            reasons.append(f"{name} (turned off by DataAgent.sandbox_network = True)")
        elif name == "process-limit" and not config.max_processes:
            reasons.append(f"{name} (turned off by DataAgent.max_processes = 0)")
        else:
            reasons.append(f"{name} ({MEANING[name]})")
    raise SandboxError(
        "The analysis kernel was not started: DataAgent.sandbox_require asks for protections "
        "this machine or configuration does not give: " + "; ".join(reasons) + ".",
        hint="Run %dataagent status to see what the sandbox has here; remove names from "
        "DataAgent.sandbox_require, change the setting named, or run on a machine whose "
        "kernel offers them (Landlock needs Linux 5.13+, network rules 6.7+, scoping 6.12+).",
    )
