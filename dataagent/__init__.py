"""Import shim so that ``%load_ext dataagent`` works like ``%load_ext dataagent_jupyter``."""

from dataagent_jupyter import *  # noqa: F403
from dataagent_jupyter import (
    __version__,
    load_ipython_extension,
    unload_ipython_extension,
)

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]
