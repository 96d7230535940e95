"""nbval, taught display updates, so the example notebooks are compared as they are saved.

The magics show a live status line and stream the answer into a display that they
update (``update_display_data``). Every front end, and nbclient which stored the
notebooks' outputs, shows the final state; nbval (0.11) drops update messages and would
compare the first, empty placeholders instead, so a change in what a replayed answer
shows would pass unseen. Here a cell's messages are read up to the kernel's idle state,
updates are applied to the displays they name, and nbval reads the result.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import pytest


def _settle(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply each update_display_data to the display with its display_id; drop updates."""
    shown: dict[str, list[dict[str, Any]]] = {}
    settled = []
    for msg in messages:
        kind = msg["msg_type"]
        display_id = (msg["content"].get("transient") or {}).get("display_id")
        if kind == "update_display_data":
            for target in shown.get(display_id, []):
                target["content"]["data"] = msg["content"]["data"]
                target["content"]["metadata"] = msg["content"]["metadata"]
            continue
        if kind == "display_data" and display_id:
            msg = copy.copy(msg)
            msg["content"] = dict(msg["content"])
            shown.setdefault(display_id, []).append(msg)
        settled.append(msg)
    return settled


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    try:
        from nbval.plugin import IPyNbFile
    except ImportError:  # nbval not installed: nothing to teach
        return
    if getattr(IPyNbFile, "_dataagent_settles_updates", False):
        return
    original = IPyNbFile.get_kernel_message

    def get_kernel_message(self: Any, timeout: float | None = None, stream: str = "iopub"):
        if stream != "iopub":
            return original(self, timeout=timeout, stream=stream)
        pending: deque[dict[str, Any]] = self.__dict__.setdefault("_dataagent_pending", deque())
        if not pending:
            batch = []
            while True:  # one execution's messages, up to its idle status
                msg = original(self, timeout=timeout, stream=stream)
                batch.append(msg)
                if (
                    msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"
                    and msg["parent_header"].get("msg_type") == "execute_request"
                ):
                    break
            pending.extend(_settle(batch))
        return pending.popleft()

    IPyNbFile.get_kernel_message = get_kernel_message
    IPyNbFile._dataagent_settles_updates = True
