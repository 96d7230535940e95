"""Pure functions that turn configuration into the child's limits and environment.

Nothing here starts a process or touches the filesystem, so every rule (which variables
count as secrets, how a limit becomes an rlimit, how a death is explained) is testable on
its own.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..config import parse_size

__all__ = [
    "Limits",
    "death_message",
    "format_bytes",
    "is_secret_name",
    "limits_from_config",
    "rlimits",
    "scrub_env",
    "total_memory",
]

# Not every platform defines these signals (the sandbox itself needs POSIX; this module
# must still import everywhere the package does).
_SIGXCPU = getattr(signal, "SIGXCPU", None)
_SIGXFSZ = getattr(signal, "SIGXFSZ", None)
_SIGKILL = getattr(signal, "SIGKILL", 9)
#: SIGXCPU arrives at the soft limit; the hard limit (SIGKILL) follows this much later.
_CPU_GRACE = 5


@dataclass(frozen=True)
class Limits:
    """The child's limits; ``None`` means unlimited."""

    memory: int | None
    cpu_seconds: int | None
    file_size: int | None
    processes: int | None
    wall_seconds: float

    def describe(self) -> dict[str, str]:
        """Human-readable values, as ``%dataagent status`` shows them."""
        return {
            "memory": format_bytes(self.memory) if self.memory else "unlimited",
            "cpu time": f"{self.cpu_seconds} s" if self.cpu_seconds else "unlimited",
            "run time": f"{self.wall_seconds:g} s per run",
            "file size": format_bytes(self.file_size) if self.file_size else "unlimited",
            "processes": str(self.processes) if self.processes else "unlimited",
        }


def total_memory() -> int:
    """Physical memory in bytes (what a percentage ``memory_limit`` is a share of)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # not every platform names these
        return 8 << 30


def limits_from_config(config: Any) -> Limits:
    """Read the sandbox traits of a ``DataAgent``; 0 means unlimited for every limit."""
    memory = parse_size(config.memory_limit, total=total_memory())
    file_size = parse_size(config.max_file_size, total=total_memory())
    return Limits(
        memory=memory or None,
        cpu_seconds=config.cpu_limit or None,
        file_size=file_size or None,
        processes=config.max_processes or None,
        wall_seconds=float(config.exec_timeout),
    )


def rlimits(limits: Limits) -> dict[str, tuple[int, int]]:
    """``resource`` limits for the launcher, by name: ``{"RLIMIT_AS": (soft, hard)}``.

    The process limit is not among them: it depends on what the user runs when the child
    starts, so the launcher sets it (see ``launcher.limit_processes``).
    """
    out: dict[str, tuple[int, int]] = {"RLIMIT_CORE": (0, 0)}  # no core dumps of user data
    if limits.memory:
        out["RLIMIT_AS"] = (limits.memory, limits.memory)
    if limits.cpu_seconds:
        out["RLIMIT_CPU"] = (limits.cpu_seconds, limits.cpu_seconds + _CPU_GRACE)
    if limits.file_size:
        out["RLIMIT_FSIZE"] = (limits.file_size, limits.file_size)
    return out


# --- environment -----------------------------------------------------------------------------

_SECRET_WORDS = (
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "CREDENTIAL",
    "PRIVATE",
    "COOKIE",
    "SESSION",
    "AUTH",
)
_SECRET_PREFIXES = (
    "AWS_",
    "AZURE_",
    "GOOGLE_",
    "GCP_",
    "GCLOUD_",
    "CLOUDSDK_",
    "OPENAI_",
    "ANTHROPIC_",
    "HF_",
    "HUGGING",
    "GITHUB_",
    "GH_",
    "GITLAB_",
    "DOCKER_",
    "KUBE",
    "VAULT_",
    "DATABRICKS_",
    "SNOWFLAKE_",
    "JUPYTERHUB_",
    "JPY_",
    "SSH_",
    "GPG_",
    "NPM_",
    "PIP_",
    "TWINE_",
    "SLACK_",
    "MLFLOW_",
    "WANDB_",
)
_SECRET_NAMES = frozenset(
    {
        "DATABASE_URL",
        "REDIS_URL",
        "MONGODB_URI",
        "PGPASSFILE",
        "NETRC",
        "BOTO_CONFIG",
        "KRB5CCNAME",
        "OLDPWD",
        "PWD",
    }
)
# A URL with a password in it: scheme://user:password@host
_URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
_MIN_SECRET_LEN = 8


def is_secret_name(name: str) -> bool:
    """True for variable names that look like they hold a credential (case-insensitive)."""
    upper = name.upper()
    return (
        upper in _SECRET_NAMES
        or upper.startswith(_SECRET_PREFIXES)
        or any(word in upper for word in _SECRET_WORDS)
    )


def scrub_env(env: Mapping[str, str], *, secrets: Iterable[str | None] = ()) -> dict[str, str]:
    """A copy of ``env`` without anything secret.

    Drops variables whose *name* looks secret, variables whose *value* holds a password in
    a URL, and variables whose value contains any known secret value: the LLM key passed
    in ``secrets`` and the value of every variable dropped by name (a key is often copied
    into a second, innocently named variable). A secret that is a path (``PWD``) only
    matches a whole value or a whole ``:``-separated entry: ``PATH`` and ``VIRTUAL_ENV``
    naming folders *under* the working folder are not copies of it.
    """
    dropped = {name for name in env if is_secret_name(name)}
    values = {v for v in secrets if v and len(v) >= _MIN_SECRET_LEN}
    values |= {env[name] for name in dropped if len(env[name]) >= _MIN_SECRET_LEN}
    clean = {}
    for name, value in env.items():
        if name in dropped or _URL_WITH_PASSWORD.search(value):
            continue
        if any(_holds(value, secret) for secret in values):
            continue
        clean[name] = value
    return clean


def _holds(value: str, secret: str) -> bool:
    """Does ``value`` contain ``secret``? (a path secret only as a whole entry)."""
    if secret.startswith("/"):
        return secret.rstrip("/") in {entry.rstrip("/") for entry in value.split(os.pathsep)}
    return secret in value


# --- explaining a death ----------------------------------------------------------------------


def format_bytes(n: int | None) -> str:
    """``4.0 GiB``, ``512.0 MiB``... (binary units, as memory limits are given)."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


def death_message(
    limits: Limits,
    *,
    returncode: int | None,
    out_of_memory: bool = False,
    cpu_used: float | None = None,
) -> str:
    """One sentence for the user: why the child died and what to try next."""
    sig = -returncode if returncode is not None and returncode < 0 else None
    if out_of_memory:
        return (
            f"the analysis ran out of memory (limit {format_bytes(limits.memory)}); try a "
            "smaller sample, fewer columns, or raise DataAgent.memory_limit."
        )
    cpu_hit = (
        limits.cpu_seconds is not None
        and cpu_used is not None
        and cpu_used >= limits.cpu_seconds - 1
    )
    if sig == _SIGXCPU or (cpu_hit and sig == _SIGKILL):
        return (
            f"the analysis kernel used up its CPU time ({limits.cpu_seconds} s in total); "
            "it was replaced - try a lighter computation or raise DataAgent.cpu_limit."
        )
    if sig == _SIGXFSZ:
        return (
            f"the analysis tried to write a file larger than "
            f"{format_bytes(limits.file_size)}; it was replaced."
        )
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        return f"the analysis kernel was killed ({name}); it was replaced with a fresh one."
    if returncode is not None:
        return f"the analysis kernel exited (code {returncode}); it was replaced with a fresh one."
    return "the analysis kernel stopped responding; it was replaced with a fresh one."
