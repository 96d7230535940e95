"""Run mode for local engines: a polars or DuckDB frame travels to the sandbox as Arrow.

The parent turns the frame into one Arrow table (zero-copy for an eager polars frame; a
LazyFrame or a relation is run here, once, because the sandbox cannot read the files or
database it scans) and tags the table's schema with the engine and kind. The child's
transfer module sees the tag and rebuilds the same kind of object over the table
(``pl.from_arrow``, ``.lazy()``, ``duckdb.from_arrow``), so the code the model wrote for
that engine runs unchanged. The tag key is shared with :mod:`..sandbox.transfer`.
"""

from __future__ import annotations

from typing import Any

from ..errors import FrameError
from ..sandbox.transfer import ENGINE_TAG
from . import Engine

#: the most rows a lazy frame's query may yield for a run: it is run in the user's kernel
#: (the sandbox cannot read what it scans), so its whole result is held there first
MAX_LAZY_ROWS = 1_000_000


def arrow_payload(name: str, obj: Any, engine: Engine, max_rows: int = MAX_LAZY_ROWS) -> Any:
    """``obj`` as an Arrow table tagged ``<engine>:<kind>``, for the child to rebuild.

    A lazy frame (polars LazyFrame, DuckDB relation) is run with a limit of one row more
    than ``max_rows``: a result larger than that is refused, not materialised, and the
    message says how to run on part of it.
    """
    if not engine.local:
        raise FrameError(f"{name!r} is a {engine.kind(obj)}; it cannot be copied to the sandbox.")
    lazy = engine.lazy(obj)
    try:
        table = engine.to_arrow(engine.limit(obj, max_rows + 1) if lazy else obj)
    except Exception as exc:  # the engine's own failure, said in its words
        raise FrameError(
            f"{name!r} could not be read for the analysis kernel: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
            hint="Ask in insert mode (without --run): the code is then proposed as a cell and "
            "runs in your kernel.",
        ) from None
    if lazy and table.num_rows > max_rows:
        raise FrameError(
            f"{name} is a {engine.kind(obj)} whose result has more than {max_rows:,} rows. "
            "A run copies it into the sandbox, and would first hold all of it in your "
            "kernel's memory.",
            hint=f"Add --sample N to run on its first N rows, or ask without --run to get "
            f"{engine.title} code to run yourself.",
        )
    metadata = dict(table.schema.metadata or {})
    metadata[ENGINE_TAG] = f"{engine.name}:{engine.kind(obj)}".encode()
    return table.replace_schema_metadata(metadata)
