"""dataagent-jupyter: a data-analysis agent that lives inside Jupyter.

``%load_ext dataagent`` then ``%%ask df`` with a question in the cell body. See
``%dataagent help`` and ``%config DataAgent``.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .errors import DataAgentError

__all__ = [
    "DataAgentError",
    "__version__",
    "chat",
    "load",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext dataagent_jupyter`` (and ``%load_ext dataagent``)."""
    from .extension import Extension

    Extension.load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Called by ``%unload_ext``: removes every magic, hook and comm target it added."""
    from .extension import _ATTR

    ext = getattr(ipython, _ATTR, None)
    if ext is not None:
        ext.unload()


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "dataagent-jupyter"}]


def chat() -> Any:
    """The chat widget, bound to this notebook's session (display it, or leave it last)."""
    from .extension import current

    return current().chat()


def load(path: str, *, name: str | None = None, sheet: str | int | None = None) -> Any:
    """Load a CSV/Excel/Parquet/JSON file as a DataFrame; in a notebook also bind it.

    The variable name comes from the file name (``my sales.csv`` → ``my_sales``) unless
    ``name`` is given; an existing variable is never overwritten silently.
    """
    from IPython import get_ipython

    from .loaders import load as _load

    shell = get_ipython()
    namespace = None
    max_mb = 200.0
    if shell is not None:
        from .extension import current

        max_mb = current(shell).config.max_upload_mb
        namespace = shell.user_ns
    loaded = _load(path, name=name, sheet=sheet, namespace=namespace, max_mb=max_mb)
    if shell is not None:
        from .cell_output import show_rich

        show_rich(loaded)
    return loaded.frame
