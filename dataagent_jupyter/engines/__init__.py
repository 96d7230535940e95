"""Frames that are not pandas: polars, DuckDB, Dask and PySpark, seen through their own API.

Users whose data outgrow pandas keep it in an engine that computes lazily or elsewhere.
The agent describes such a frame from the engine's cheap operations only (schema, a row
count the engine already knows, partitions, a bounded ``head``/``limit`` taken by the
engine) and asks the model for code in that engine's API. Nothing here ever collects a
whole frame.

No engine is a dependency. An engine is recognised only when its module is already in
``sys.modules`` (a frame of that type exists, so the user imported it): nothing is
imported to check, and without any engine installed this package changes nothing.

Each engine is one small module holding one :class:`Engine` subclass; this module finds
the engine of an object. :mod:`.describe` turns an engine frame into the model's text.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["ENGINES", "ENGINE_BY_NAME", "Engine", "engine_of", "is_engine_frame"]


class Engine:
    """What the agent needs of one engine; every method is cheap whatever the frame's size."""

    #: short name used in listings and payload tags ("polars", "duckdb", "dask", "spark")
    name: ClassVar[str]
    #: how the model and the user read it ("polars", "DuckDB", "Dask", "PySpark")
    title: ClassVar[str]
    #: the module that must already be imported for an object to be of this engine
    module: ClassVar[str]
    #: True when the frame's data can be copied into the sandbox as Arrow (run mode)
    local: ClassVar[bool] = False
    #: True when sampled rows carry a meaningful index (Dask); else rows are numbered
    has_index: ClassVar[bool] = False

    def types(self, module: Any) -> tuple[type, ...]:
        """The frame classes of this engine, read from its (already imported) module."""
        raise NotImplementedError

    def version(self) -> str:
        top = sys.modules.get(self.module.split(".")[0])
        return str(getattr(top, "__version__", "")) or "unknown version"

    def kind(self, obj: Any) -> str:
        """``polars LazyFrame``, ``DuckDB relation``… as listings and the prompt name it."""
        raise NotImplementedError

    def columns(self, obj: Any) -> list[tuple[str, str]]:
        """Column names with the engine's own dtype names, from the schema alone."""
        raise NotImplementedError

    def rows(self, obj: Any) -> int | None:
        """The row count when the engine already knows it; None rather than a scan."""
        return None

    def partitions(self, obj: Any) -> int | None:
        """How many partitions a distributed frame has (None for single-machine engines)."""
        return None

    def head(self, obj: Any, n: int) -> pd.DataFrame:
        """At most ``n`` rows taken by the engine (head/limit), as a small pandas frame."""
        raise NotImplementedError

    def head_is_whole(self, obj: Any, got: int, asked: int) -> bool:
        """Whether a head that returned ``got`` of ``asked`` rows holds the whole frame."""
        return got < asked

    def sample_note(self, obj: Any, n: int) -> str:
        """How :meth:`head` chose its rows, for the prompt ("the first 10,000 rows")."""
        return f"the first {n:,} rows"

    def rules(self) -> str:
        """Prompt sentences asking for code in this engine's API, keeping results small."""
        raise NotImplementedError

    def lazy(self, obj: Any) -> bool:
        """Whether ``obj`` is a query not yet run (its rows exist only once collected)."""
        return False

    def limit(self, obj: Any, n: int) -> Any:
        """The same kind of object, holding at most the first ``n`` rows (lazy frames)."""
        raise NotImplementedError(f"{self.title} frames are not limited here")

    def to_arrow(self, obj: Any) -> pa.Table:
        """The whole frame as an Arrow table, for run mode (local engines only; a lazy
        frame is first limited by the caller, so this never runs an unbounded query)."""
        raise NotImplementedError(f"{self.title} frames are not copied to the sandbox")

    def matches(self, obj: Any) -> bool:
        module = sys.modules.get(self.module)
        if module is None:  # not imported: no object can be of this engine
            return False
        try:
            return isinstance(obj, self.types(module))
        except (AttributeError, TypeError):  # an engine version without these names
            return False


def _engines() -> tuple[Engine, ...]:
    from .dask import DaskEngine
    from .duckdb import DuckDBEngine
    from .polars import PolarsEngine
    from .spark import SparkEngine

    return (PolarsEngine(), DuckDBEngine(), DaskEngine(), SparkEngine())


ENGINES: tuple[Engine, ...] = _engines()
ENGINE_BY_NAME: dict[str, Engine] = {e.name: e for e in ENGINES}


def engine_of(obj: object) -> Engine | None:
    """The engine of ``obj``, or None for pandas objects and everything else."""
    root = type(obj).__module__.split(".")[0]
    if root in ("pandas", "builtins", "numpy"):  # the common case costs one string split
        return None
    for engine in ENGINES:
        if engine.matches(obj):
            return engine
    return None


def is_engine_frame(obj: object) -> bool:
    """True for a polars, DuckDB, Dask or PySpark frame."""
    return engine_of(obj) is not None
