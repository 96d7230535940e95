"""One "Insert cell" click: ask the labextension for the cell, else fall back to the magic.

A button callback cannot use ``set_next_input`` (that payload belongs to an
``execute_reply``, and a click is a comm message). The project's labextension listens on
the ``dataagent.frontend`` comm target (``frontend.request_insert``) and inserts the cell
below the widget's cell. A front end without it refuses the comm (JupyterLab and Notebook
7 close a comm to an unknown target) or does not answer within ``INSERT_ACK_TIMEOUT``
seconds (VS Code); the code is then kept as the session's pending cell and the answer
says to run ``%dataagent insert``, which every front end honours. A late "inserted"
answer still replaces the fallback message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..events import ProposedCell
from ..frontend import request_insert
from ..provenance import provenance
from ..session import Session
from .answer import AnswerView

__all__ = ["FALLBACK_INSERT", "INSERT_ACK_TIMEOUT", "InsertRequest"]

#: seconds to wait for the labextension to confirm an inserted cell before falling back
INSERT_ACK_TIMEOUT = 1.5

FALLBACK_INSERT = (
    "This front end cannot insert cells from a button; run `%dataagent insert` in any "
    "cell to get it as a new cell below."
)


class InsertRequest:
    """Waits for the front end's answer to one insert, on the comm's or a timer's thread.

    ``report`` shows an exception in the chat; ``forget`` is called once the request needs
    no more cancelling (the chat cancels pending requests when it closes).
    """

    def __init__(
        self,
        answer: AnswerView,
        text: str,
        session: Session,
        *,
        report: Callable[[BaseException], None],
        forget: Callable[[InsertRequest], None],
        cells: tuple[ProposedCell, ...] = (),
        where: str = "below the chat",
        proposal: bool = False,
    ) -> None:
        self.answer = answer
        self.text = text
        self.cells = cells
        self.where = where
        #: the cells are the asking cell's proposal: they replace its previous one
        self.proposal = proposal
        self.session = session
        self._report = report
        self._forget = forget
        self._lock = threading.Lock()
        self._done = False
        self.timer = threading.Timer(INSERT_ACK_TIMEOUT, self.on_timeout)
        self.timer.daemon = True

    def start(self, cell_id: str | None) -> None:
        """Ask for a new cell below ``cell_id`` (the chat's or asking cell) and start waiting."""
        # kept for %dataagent insert too: the magic gives the same code with one action
        self.session.pending_cell = self.text
        what = "the cells" if self.cells else "a new cell"
        self.answer.action_note(f"Inserting {what} {self.where}…")
        self.timer.start()
        done = self.answer.done
        request_insert(
            self.text,
            cell_id=cell_id,
            replace=False,
            on_ack=self.on_ack,
            provenance=provenance(self.answer.question, done) if done else None,
            cells=self.cells,
            proposal=self.proposal,
        )

    def cancel(self) -> None:
        """Stop waiting (the chat is closing)."""
        self.timer.cancel()

    def on_ack(self, ok: bool) -> None:
        """The front end answered (or closed the comm: ``ok`` False)."""
        try:
            with self._lock:
                late = self._done
                self._done = True
            self.timer.cancel()
            self._forget(self)
            if ok:
                # a late "yes" after the fallback was shown still means the cell is there
                what = f"{len(self.cells)} cells" if self.cells else "a new cell"
                self.answer.action_note(f"✓ Inserted {what} {self.where}.")
            elif not late:
                self.fall_back()
        except Exception as exc:
            self._report(exc)

    def on_timeout(self) -> None:
        """Runs on the timer's thread: no answer in time, so this front end cannot insert."""
        try:
            with self._lock:
                if self._done:
                    return
                self._done = True
            self._forget(self)
            self.fall_back()
        except Exception as exc:
            self._report(exc)

    def fall_back(self) -> None:
        """Keep the code for ``%dataagent insert`` and say so under the buttons."""
        self.session.pending_cell = self.text
        self.answer.action_note(FALLBACK_INSERT)
