"""Provenance of proposed cells, and telling the labextension about a ``%%ask`` proposal.

A cell the agent proposes records where it came from: the question, the model, the turn
(as ``%dataagent history`` and the history database name it) and when it was asked.
``set_next_input`` cannot set cell metadata, so there the first-line comment
(``# dataagent: question``) stays the only provenance. Where this package's labextension
runs, the kernel also sends it the proposal over the ``dataagent.frontend`` comm target
(``frontend.py``); once the cell has run, the labextension puts the record into the
inserted cell's metadata under ``dataagent`` and, when the cell below is this cell's
previous proposal, replaces it instead of stacking a copy (``js/src/proposals.ts``).

The message is fire-and-forget: the front end handles it while the cell still runs,
but its reply can only reach the kernel after the cell (comm messages queue behind
execute requests), so nothing here waits for it.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Sequence
from typing import Any

from .events import Done, ProposedCell
from .frontend import FRONTEND_TARGET

log = logging.getLogger("dataagent_jupyter.provenance")

#: the cell-metadata key of the provenance record
METADATA_KEY = "dataagent"


def provenance(question: str, done: Done) -> dict[str, Any]:
    """The ``dataagent`` cell-metadata record for the code of ``done``."""
    asked = _dt.datetime.fromtimestamp(done.asked_at or 0, tz=_dt.timezone.utc)
    return {
        "question": question.strip(),
        "model": done.model,
        "turn_id": done.turn_id,
        "asked_at": asked.isoformat(timespec="seconds"),
    }


def announce_proposal(
    cell_id: str, text: str, record: dict[str, Any], cells: Sequence[ProposedCell] = ()
) -> None:
    """Tell the labextension that the cell ``cell_id`` proposes ``text`` (with ``record``).

    ``cells`` (an agent run's analysis: a Markdown cell, then a code cell per step that
    worked) are what the labextension inserts instead of ``text``, the one-cell ``# %%``
    form that ``set_next_input`` carries. The choice is made in the front end, once the
    cell has run, because only then could an answer reach the kernel: without the
    labextension nothing listens and the ``set_next_input`` cell stays, as it always was.
    """
    try:
        import comm as comm_package

        channel = comm_package.create_comm(target_name=FRONTEND_TARGET, primary=False)
        channel.on_msg(lambda msg: channel.close())
        data: dict[str, Any] = {
            "type": "proposal",
            "cell_id": cell_id,
            "code": text,
            "metadata": {METADATA_KEY: record},
        }
        if cells:
            data["cells"] = [{"cell_type": c.cell_type, "source": c.source} for c in cells]
        channel.open(data=data)
    except Exception as exc:  # the proposal is already in the payload: never fail the cell
        log.debug("could not announce the proposal to the front end: %s", exc)
