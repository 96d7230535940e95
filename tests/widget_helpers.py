"""Helpers for the chat widget's tests: read a widget's state as a user would see it.

The same reader runs in-process (``conversation(widget)``) and inside a real kernel (the
source of this module's ``_kernel_side`` functions is executed there, see
``KERNEL_SNIPPET``), so both kinds of test assert on the same view: the text of each
message, the buttons offered, the status line, the frames listed.
"""

from __future__ import annotations

import ast
import inspect
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def walk(widget: Any) -> Any:
    """Every widget under ``widget``, depth first, ``widget`` included."""
    yield widget
    for child in getattr(widget, "children", ()) or ():
        yield from walk(child)


def widget_text(widget: Any) -> str:
    """What a user reads in ``widget``: Markdown/plain outputs, HTML text, button labels."""
    import re

    import ipywidgets

    parts: list[str] = []
    for part in walk(widget):
        if isinstance(part, ipywidgets.Output):
            for out in part.outputs:
                if out.get("output_type") == "stream":
                    parts.append(out.get("text", ""))
                else:
                    data = out.get("data", {})
                    parts.append(str(data.get("text/markdown") or data.get("text/plain") or ""))
        elif isinstance(part, ipywidgets.HTML):
            parts.append(re.sub(r"<[^>]+>", "", part.value))
        elif isinstance(part, ipywidgets.Button):
            parts.append(f"[{part.description}]")
    return "\n".join(p for p in parts if p)


def widget_mimes(widget: Any) -> list[str]:
    """The MIME types of every rich output under ``widget`` (to find charts and tables)."""
    import ipywidgets

    found: list[str] = []
    for part in walk(widget):
        if isinstance(part, ipywidgets.Output):
            for out in part.outputs:
                found += list(out.get("data", {}))
    return found


def conversation(chat: Any) -> dict[str, Any]:
    """The chat's state as plain data: messages (classes, text, mimes), status, frames."""
    import re

    messages = [
        {
            "classes": list(getattr(m, "_dom_classes", ())),
            "text": widget_text(m),
            "mimes": widget_mimes(m),
        }
        for m in chat.messages.children
    ]
    return {
        "busy": chat.busy,
        "status": re.sub(r"<[^>]+>", "", chat.status.value),
        "messages": messages,
        "frames": [list(option) for option in chat.frames.options],
        "selected": list(chat.frames.value),
        "send_disabled": chat.send_button.disabled,
        "stop_disabled": chat.stop_button.disabled,
    }


def click(chat: Any, description: str, index: int = -1) -> None:
    """Click the ``index``-th button labelled ``description`` in the conversation."""
    import ipywidgets

    buttons = [
        b
        for b in walk(chat.messages)
        if isinstance(b, ipywidgets.Button) and b.description == description
    ]
    buttons[index].click()


#: executed in a kernel so that ``_chat_state(w)`` and ``_click(w, ...)`` exist there
KERNEL_SNIPPET = (
    "import json as _json\nfrom typing import Any\n\n"
    + "\n\n".join(
        inspect.getsource(f) for f in (walk, widget_text, widget_mimes, conversation, click)
    )
    + "\n\n_click = click\n\ndef _chat_state(chat):\n    return _json.dumps(conversation(chat))\n"
)


@contextmanager
def widget_kernel(server: Any, data_dir: str, setup: str) -> Iterator[Any]:
    """A kernel to drive widgets in: extension loaded, ``setup`` run, ``_chat_state`` and
    ``_click`` defined (``KERNEL_SNIPPET``). Its own data dir and no response cache: an
    answer cached by another test (or module) for the same frames and question would
    otherwise replace the scripted one."""
    from kernel_helpers import extension_kernel

    with extension_kernel(
        server,
        f"%load_ext dataagent_jupyter\n{setup}\n{KERNEL_SNIPPET}",
        env={"JUPYTER_DATA_DIR": data_dir},
        extra_args=["--DataAgent.warm_child=False", "--DataAgent.cache=False"],
    ) as kernel:
        yield kernel


def wait_until(
    check: Callable[[], Any], *, timeout: float = 30, interval: float = 0.05, what: str = ""
) -> Any:
    """Call ``check`` until it returns something truthy; raise with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}: {last!r}")


class KernelChat:
    """Drives a chat widget bound to the name ``var`` inside a real kernel."""

    def __init__(self, kernel: Any, var: str = "w") -> None:
        self.kernel = kernel
        self.var = var
        #: stderr and error outputs seen in every execution: no traceback may appear
        self.problems: list[str] = []

    def run(self, code: str, **kwargs: Any) -> Any:
        ex = self.kernel.execute(code, **kwargs)
        if ex.stderr:
            self.problems.append(ex.stderr)
        if ex.error:
            self.problems.append("\n".join(ex.error["traceback"]))
        return ex

    def state(self) -> dict[str, Any]:
        ex = self.run("", user_expressions={"s": f"_chat_state({self.var})"})
        value = ex.reply["content"]["user_expressions"]["s"]
        if value["status"] != "ok":
            raise RuntimeError(f"{value.get('ename')}: {value.get('evalue')}")
        return json.loads(ast.literal_eval(value["data"]["text/plain"]))

    def eval(self, expression: str) -> Any:
        """``expression`` evaluated in the kernel, as a Python literal."""
        ex = self.run("", user_expressions={"x": expression})
        value = ex.reply["content"]["user_expressions"]["x"]
        if value["status"] != "ok":
            raise RuntimeError(f"{expression}: {value.get('ename')}: {value.get('evalue')}")
        return ast.literal_eval(value["data"]["text/plain"])

    def ask(self, question: str) -> None:
        """Type ``question`` and press Send, as the user would."""
        self.run(f"{self.var}.input.value = {question!r}\n{self.var}.send_button.click()")

    def click(self, description: str, index: int = -1) -> None:
        self.run(f"_click({self.var}, {description!r}, {index})")

    def wait_idle(self, timeout: float = 30) -> dict[str, Any]:
        """Wait for the current answer to end; return the final state."""
        return wait_until(
            lambda: (s := self.state()) and not s["busy"] and s,
            timeout=timeout,
            what="the answer to end",
        )

    def wait_text(self, needle: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until ``needle`` appears in the conversation; return that state."""

        def check() -> dict[str, Any] | None:
            state = self.state()
            return state if needle in all_text(state) else None

        return wait_until(check, timeout=timeout, what=repr(needle))


def all_text(state: dict[str, Any]) -> str:
    """The whole conversation as one string."""
    return "\n".join(m["text"] for m in state["messages"])
