"""Run mode with engine frames: what can travel to the sandbox, and what cannot.

polars and DuckDB data are copied into the sandbox as Arrow (:mod:`.payload`) and become
the same kind of object there. Dask and Spark frames live in a cluster (or a JVM) the
sandbox cannot reach: it has no network by design. ``--run`` on them is refused in one
sentence that offers insert mode, unless the user asks for ``--sample N``: then the
engine itself pulls the first N rows, the child gets them as a pandas DataFrame, and the
prompt and the cell output say so. A lazy local frame (LazyFrame, relation) is run in the
user's kernel to be copied, so its result is bounded (:data:`.payload.MAX_LAZY_ROWS`);
``--sample N`` limits it to its first N rows, and it stays the same kind of object.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import FrameError, UsageError
from . import Engine, engine_of
from .payload import arrow_payload

#: the most rows --sample may pull into the user's kernel (and copy to the sandbox)
MAX_SAMPLE = 1_000_000


@dataclass(frozen=True)
class SampledFrame:
    """A frame replaced by an engine-side sample for one run, and how to say so."""

    name: str
    engine: Engine
    kind: str
    rows: int
    #: a lazy local frame limited to its first rows: the same kind of object in the child
    same_kind: bool = False

    def rule(self) -> str:
        """The prompt sentence: in the sandbox this name holds a sample only."""
        if self.same_kind:
            return (
                f"In the sandbox `{self.name}` is the user's {self.kind} limited to its first "
                f"{self.rows:,} rows. Write {self.engine.title} code as usual, and say in "
                "your explanation that the answer comes from these rows only."
            )
        return (
            f"In the sandbox `{self.name}` is NOT the user's {self.kind}: it is a pandas "
            f"DataFrame holding its first {self.rows:,} rows (pulled by {self.engine.title}; "
            "the cluster is unreachable from the sandbox). Write pandas code for it, and say "
            "in your explanation that the answer comes from this sample."
        )

    def notice(self) -> str:
        """The line the user sees: the run uses a sample, not the whole frame."""
        if self.same_kind:
            why = "as asked with --sample"
        else:
            why = f"pulled by {self.engine.title}; the sandbox cannot reach the cluster"
        return (
            f"Running on a sample: the first {self.rows:,} rows of {self.name} "
            f"({self.kind}), {why}, so the answer is not computed on the whole frame.\n"
        )


def for_run(
    frames: Mapping[str, Any],
    sample: int | None,
    *,
    named: bool = True,
    flag: str = "--run",
) -> tuple[dict[str, Any], tuple[SampledFrame, ...]]:
    """The frames a run may use: cluster-backed ones refused, or sampled with ``sample``.

    Frames found without being ``named`` (``%%ask --run`` alone) that cannot reach the
    sandbox are left out rather than refused, so a Dask frame elsewhere in the notebook
    does not block a run about the pandas ones; if nothing else is left, it is refused.
    ``flag`` is the option that asked for a run (``--run``, ``--agent``, ``--check``): the
    refusal is the same sentence for all of them, naming the one the user gave.
    """
    if sample is not None:
        return sample_remote(frames, sample)
    if not named:
        runnable = {n: obj for n, obj in frames.items() if _runnable(obj)}
        if runnable or not frames:
            return runnable, ()
    check_runnable(frames, flag)
    return dict(frames), ()


def _runnable(obj: Any) -> bool:
    engine = engine_of(obj)
    return engine is None or engine.local


def child_frames(frames: Mapping[str, Any]) -> dict[str, Any]:
    """What is copied to the child: pandas frames as they are, polars/DuckDB as Arrow."""
    out: dict[str, Any] = {}
    for name, obj in frames.items():
        engine = engine_of(obj)
        out[name] = obj if engine is None else arrow_payload(name, obj, engine)
    return out


def check_runnable(frames: Mapping[str, Any], flag: str = "--run") -> None:
    """Refuse a run (``flag``) on a cluster-backed frame (no sample was asked for)."""
    for name, obj in frames.items():
        engine = engine_of(obj)
        if engine is not None and not engine.local:
            raise UsageError(
                f"{name} is a {engine.kind(obj)} in a cluster the sandbox cannot reach "
                f"(it has no network), so {flag} cannot run code on it.",
                hint=f"Ask without {flag} to get {engine.title} code as a cell to run yourself, "
                f"or add --sample N to run on the first N rows pulled by {engine.title}.",
            )


def sample_remote(
    frames: Mapping[str, Any], rows: int
) -> tuple[dict[str, Any], tuple[SampledFrame, ...]]:
    """``frames`` with each Dask/Spark frame replaced by its first ``rows`` rows (pandas),
    and each lazy polars/DuckDB frame limited to them (still lazy)."""
    out: dict[str, Any] = {}
    sampled: list[SampledFrame] = []
    for name, obj in frames.items():
        engine = engine_of(obj)
        if engine is None or (engine.local and not engine.lazy(obj)):
            out[name] = obj
            continue
        if engine.local:
            # the limit is part of the query: only these rows are made when it is copied
            out[name] = engine.limit(obj, rows)
            sampled.append(SampledFrame(name, engine, engine.kind(obj), rows, same_kind=True))
            continue
        try:
            out[name] = _first_rows(engine, obj, rows)
        except Exception as exc:  # the engine's failure, in its words
            raise FrameError(
                f"{engine.title} could not pull a sample of {name}: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
            ) from None
        sampled.append(SampledFrame(name, engine, engine.kind(obj), len(out[name])))
    return out, tuple(sampled)


def _first_rows(engine: Engine, obj: Any, rows: int) -> pd.DataFrame:
    if engine.name != "dask":
        return engine.head(obj, rows)
    # Dask's head reads one partition; walk them until there are enough rows, never more
    parts: list[pd.DataFrame] = []
    got = 0
    with warnings.catch_warnings():  # "insufficient elements" for a short partition
        warnings.simplefilter("ignore")
        for i in range(obj.npartitions):
            part = obj.partitions[i].head(rows - got, npartitions=1, compute=True)
            parts.append(part)
            got += len(part)
            if got >= rows:
                break
    return pd.concat(parts) if len(parts) > 1 else parts[0]
