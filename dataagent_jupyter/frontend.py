"""Asking JupyterLab for a new cell: the kernel → front end channel.

The labextension registers the ``dataagent.frontend`` comm target on every notebook
kernel. The kernel opens it to ask for a code cell to be inserted: the chat widget's
"Insert cell" button runs in a comm callback, where ``set_next_input`` does nothing.
Front ends without the labextension refuse the comm; the caller hears so through
``on_ack(False)`` and falls back to ``%dataagent insert``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from .events import ProposedCell

log = logging.getLogger("dataagent_jupyter.frontend")

__all__ = ["FRONTEND_TARGET", "current_cell_id", "request_insert"]

#: comm target the labextension registers on each notebook kernel (cell insertion)
FRONTEND_TARGET = "dataagent.frontend"


def current_cell_id() -> str | None:
    """The id of the cell being executed, as JupyterLab sends it (``metadata.cellId``).

    Call it while a cell runs (e.g. when the chat widget is created) and keep it: in a
    widget's button callback the parent message is the widget's comm message instead.
    """
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent()
    except Exception:
        return None
    cell_id = (parent or {}).get("metadata", {}).get("cellId")
    return cell_id if isinstance(cell_id, str) and cell_id else None


def request_insert(
    code: str,
    *,
    cell_id: str | None,
    replace: bool = False,
    on_ack: Callable[[bool], None] | None = None,
    provenance: dict[str, Any] | None = None,
    cells: Sequence[ProposedCell] = (),
    proposal: bool = False,
) -> None:
    """Ask JupyterLab to insert ``code`` as a new cell below ``cell_id`` (or the active cell).

    ``replace=True`` replaces that cell's source instead. ``cells`` (an agent run's
    analysis: Markdown and code cells) are inserted in order instead of ``code``, which
    stays as the one-cell form for a front end that reads only that. ``on_ack(ok)`` is
    called once: with the front end's answer, or ``False`` when it closes the comm without
    one (a front end that does not know the ``dataagent.frontend`` target, such as classic
    Notebook). Nothing is called when no front end answers at all. ``provenance``
    (``provenance.provenance``) goes into the new cells' metadata. ``proposal=True``
    says the cells are the proposal of the cell ``cell_id`` (an agent run approved step
    by step, which ends after its cell has run): like a ``set_next_input`` proposal, they
    replace that cell's previous, unedited proposal instead of stacking below it.
    """
    import comm as comm_package

    answered = False

    def finish(ok: bool) -> None:
        nonlocal answered
        if answered:
            return
        answered = True
        if on_ack is not None:
            try:
                on_ack(ok)
            except Exception:
                log.exception("insert-cell acknowledgement callback failed")

    # open only after the callbacks are set: a reply may be handled on another thread
    channel = comm_package.create_comm(target_name=FRONTEND_TARGET, primary=False)

    def on_msg(msg: dict[str, Any]) -> None:
        data = msg.get("content", {}).get("data") or {}
        if data.get("type") == "inserted":
            finish(bool(data.get("ok")))
            channel.close()

    channel.on_msg(on_msg)
    channel.on_close(lambda msg: finish(False))
    data: dict[str, Any] = {
        "type": "insert_cell",
        "code": code,
        "cell_id": cell_id,
        "replace": bool(replace),
    }
    if provenance is not None:
        data["provenance"] = provenance
    if cells:
        data["cells"] = [{"cell_type": c.cell_type, "source": c.source} for c in cells]
    if proposal:
        data["proposal"] = True
    channel.open(data=data)
