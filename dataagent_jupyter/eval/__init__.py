"""``python -m dataagent_jupyter.eval``: how often a model answers data questions right.

Questions in the InfiAgent-DABench format go through the same pipeline as ``%%ask
--run`` (see :mod:`.runner`), are scored with DABench's rule (:mod:`.dabench`), and end
in a table, the line ``accuracy: R/N (P%)``, and ``report.md`` / ``report.json``
(:mod:`.report`). The command itself is in :mod:`.cli`.
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
