"""``%%ask`` / ``%ask`` and ``%dataagent``: the magics front end.

Options are declared with ``magic_arguments`` so ``%%ask?`` documents them and a wrong
flag is a usage error. State lives on the instance (via the extension), so unloading the
extension removes everything.
"""

from __future__ import annotations

import shlex
import threading
from typing import TYPE_CHECKING, Any

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import errors
from .cell_output import CellOutput
from .events import CodeProposed, Done, Failed
from .options import AskOptions

if TYPE_CHECKING:
    from .extension import Extension

#: options %ask (line form) understands before the question; name -> takes a value
_LINE_OPTIONS = {
    "--run": False,
    "--insert": False,
    "--check": False,
    "--no-cache": False,
    "--into": True,
    "--model": True,
    "--privacy": True,
}


@magics_class
class DataAgentMagics(Magics):
    """The magics; they only parse, call the session and render its events."""

    def __init__(self, shell: Any, extension: Extension) -> None:
        super().__init__(shell)
        self.extension = extension

    @magic_arguments()
    @argument(
        "frames",
        nargs="*",
        help="DataFrames or Series the question is about (default: every DataFrame in "
        "the notebook, most recently defined first).",
    )
    @argument(
        "--run",
        dest="mode",
        action="store_const",
        const="run",
        help="Run the code in the sandboxed child kernel and show the answer.",
    )
    @argument(
        "--insert",
        dest="mode",
        action="store_const",
        const="insert",
        help="Propose the code as a new cell below for review (the default).",
    )
    @argument(
        "--check",
        action="store_true",
        help="With --insert: run the code in the child first and fix it if it fails.",
    )
    @argument(
        "--into",
        metavar="NAME",
        help="With --run: bind the child's `result` in the notebook as NAME.",
    )
    @argument("--model", metavar="M", help="Model for this question (default DataAgent.model).")
    @argument(
        "--privacy",
        choices=["schema", "sample"],
        help="schema: send no cell values; sample: a few sampled rows (default).",
    )
    @argument(
        "--no-cache",
        dest="no_cache",
        action="store_true",
        help="Ask the endpoint even if an identical request is cached.",
    )
    @line_cell_magic
    def ask(self, line: str, cell: str | None = None) -> None:
        """Ask a question about your DataFrames; the cell body is the question.

        ::

            %%ask sales
            which region grew fastest last quarter? plot it

            %ask how many rows have no price?

        By default the answer is proposed as a new code cell below, for you to review and
        run. With --run it runs in an isolated child kernel and the output is shown here.
        """
        if cell is None:
            args, question = _parse_line_form(line)
        else:
            args = parse_argstring(self.ask, line)
            question = cell
        options = AskOptions(
            frames=tuple(args.frames or ()) or None,
            mode=args.mode,
            check=args.check,
            into=args.into,
            model=args.model,
            privacy=args.privacy,
            use_cache=not args.no_cache,
        )
        self.extension.ask(question, options)

    @line_magic
    def dataagent(self, line: str) -> Any:
        """Control the Data Agent.

        ::

            %dataagent status            version, model, endpoint, key set?, privacy, sandbox
            %dataagent chat              open the chat widget
            %dataagent load PATH [--name N] [--sheet S]
                                         load a CSV/Excel/Parquet/JSON file as a DataFrame
            %dataagent history [N]       recent questions
            %dataagent export PATH       write the conversation (.md or .ipynb)
            %dataagent reset             start a new conversation
            %dataagent restart           restart the sandbox kernel
            %dataagent stats             questions, tokens, cost, latency, runs
            %dataagent replay PATH       answer from a recorded transcript
            %dataagent insert            put the last proposed code in a new cell below
            %dataagent help              this text
        """
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise errors.UsageError(f"cannot parse {line!r}: {exc}.") from None
        command, rest = (words[0], words[1:]) if words else ("status", [])
        handler = getattr(self.extension, f"cmd_{command}", None)
        if handler is None or command.startswith("_"):
            raise errors.UsageError(
                f"unknown command {command!r}.",
                hint="Commands: status, chat, load, history, export, reset, restart, stats, "
                "replay, insert, help.",
            )
        return handler(rest)


def _parse_line_form(line: str) -> tuple[Any, str]:
    """Leading ``--options`` of ``%ask``, then the question as typed (apostrophes and all)."""
    import argparse

    args = argparse.Namespace(
        frames=None, mode=None, check=False, into=None, model=None, privacy=None, no_cache=False
    )
    rest = line.strip()
    while rest.startswith("--"):
        word, _, tail = rest.partition(" ")
        if word not in _LINE_OPTIONS:
            raise errors.UsageError(
                f"unknown option {word} for %ask.",
                hint="Options: " + ", ".join(_LINE_OPTIONS) + ".",
            )
        if _LINE_OPTIONS[word]:
            value, _, tail = tail.strip().partition(" ")
            if not value:
                raise errors.UsageError(f"{word} needs a value.")
            setattr(args, word[2:].replace("-", "_"), value)
        elif word in ("--run", "--insert"):
            args.mode = word[2:]
        else:
            setattr(args, word[2:].replace("-", "_"), True)
        rest = tail.strip()
    if args.privacy not in (None, "schema", "sample"):
        raise errors.UsageError("--privacy must be 'schema' or 'sample'.")
    return args, rest


def render_events(
    events: Any, *, mode: str, shell: Any, question: str, cancel: threading.Event | None = None
) -> Done:
    """Drive a question's events into the cell; insert the code; raise on failure."""
    view = CellOutput(mode=mode)
    last_code = ""
    for event in events:
        view.handle(event)
        if isinstance(event, CodeProposed):
            last_code = event.code
        elif isinstance(event, Done):
            if event.mode == "insert":
                shell.set_next_input(cell_text(question, event.code), replace=False)
            return event
        elif isinstance(event, Failed):
            code = event.code or last_code
            if (
                code
                and isinstance(event.error, errors.SandboxError)
                and not isinstance(event.error, errors.Cancelled)
            ):
                # keep the work: the last code is offered as a cell to review and fix
                shell.set_next_input(cell_text(question, code, failed=True), replace=False)
            raise event.error
    raise errors.DataAgentError("the question ended without an answer.")  # pragma: no cover


def cell_text(question: str, code: str, *, failed: bool = False) -> str:
    """The proposed cell: a one-line comment recording the question, then the code."""
    first = " ".join(question.strip().split())
    if len(first) > 100:
        first = first[:99] + "…"
    tag = "dataagent (failed, review it)" if failed else "dataagent"
    return f"# {tag}: {first}\n{code.rstrip()}\n"
