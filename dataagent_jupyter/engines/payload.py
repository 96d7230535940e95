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


def arrow_payload(name: str, obj: Any, engine: Engine) -> Any:
    """``obj`` as an Arrow table tagged ``<engine>:<kind>``, for the child to rebuild."""
    if not engine.local:
        raise FrameError(f"{name!r} is a {engine.kind(obj)}; it cannot be copied to the sandbox.")
    try:
        table = engine.to_arrow(obj)
    except Exception as exc:  # the engine's own failure, said in its words
        raise FrameError(
            f"{name!r} could not be read for the analysis kernel: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}",
            hint="Ask in insert mode (without --run): the code is then proposed as a cell and "
            "runs in your kernel.",
        ) from None
    metadata = dict(table.schema.metadata or {})
    metadata[ENGINE_TAG] = f"{engine.name}:{engine.kind(obj)}".encode()
    return table.replace_schema_metadata(metadata)
