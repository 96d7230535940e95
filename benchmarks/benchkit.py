"""What the benchmarks share: timing a call, printing a result table, waiting for the
next child."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best of ``repeat`` wall times in ms (the least disturbed run)."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return min(times)


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Print ``rows`` under ``header``, each column as wide as its widest cell."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def wait_ready(box: Any, timeout: float = 60.0) -> None:
    """Until the sandbox's next child has started, as it has between two questions a
    person types: a timing started before that measures the child's start instead."""
    deadline = time.monotonic() + timeout
    while not box.ready():
        if time.monotonic() > deadline:
            raise TimeoutError("the next child did not come up")
        time.sleep(0.02)
