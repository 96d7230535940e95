"""The ``%dataagent`` subcommands: one method each, its options declared once.

Each command is a method decorated with ``magic_arguments`` (named ``dataagent NAME``),
so its options are parsed by argparse and its usage and summary come from the same
declaration: ``%dataagent help``, the ``%dataagent?`` docstring and the "unknown
command" hint are all generated from :data:`COMMANDS`. Adding a command is adding a
method here.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.magic_arguments import argument, magic_arguments

from . import errors, store
from ._version import __version__
from .cell_output import render_in_cell, show_markdown, show_rich
from .fixes import fix_question, nothing_to_fix
from .frontend import current_cell_id
from .llm import endpoint_host
from .options import AskOptions
from .session import Session

__all__ = ["COMMANDS", "Commands", "command_help", "command_table"]


class Commands:
    """The ``%dataagent`` subcommands for one session in one shell.

    ``open_chat`` builds the chat widget: the magics may not import the widget (front
    ends never import each other), so the extension hands them a way to make one.
    """

    def __init__(self, session: Session, shell: Any, *, open_chat: Callable[[], Any]) -> None:
        self.session = session
        self.shell = shell
        self.config = session.config
        self._open_chat = open_chat

    def run(self, line: str) -> Any:
        """Run ``%dataagent LINE``: the first word names the command, the rest its options."""
        try:
            # shell-like words, so a quoted path may hold spaces (IPython's own magic
            # splitting keeps the quotes)
            words = shlex.split(line)
        except ValueError as exc:
            raise errors.UsageError(f"cannot parse {line!r}: {exc}.") from None
        name, options = (words[0], words[1:]) if words else ("status", [])
        if name not in COMMANDS:
            raise errors.UsageError(
                f"unknown command {name!r}.", hint="Commands: " + ", ".join(COMMANDS) + "."
            )
        method = getattr(self, name)
        return method(method.parser.parse_args(options))

    # --- the commands (the order here is the order of the help) ------------------------
    @magic_arguments("dataagent status")
    def status(self, args: argparse.Namespace) -> None:
        """Version, model, endpoint, key set?, privacy, sandbox."""
        info = self.session.status_info()
        rows = [
            ("version", __version__),
            ("model", info["model"]),
            ("endpoint", endpoint_host(self.config.base_url)),
            (
                "API key",
                "set"
                if self.config.resolved_api_key()
                else "not set (set OPENAI_API_KEY or %config DataAgent.api_key)",
            ),
            ("privacy", info["privacy"]),
            ("mode", info["mode"]),
            ("house rules", info["house_rules"]),
        ]
        if self.config.replay:
            rows.append(("replay", self.config.replay))
        if self.config.record:
            rows.append(("record", self.config.record))
        sandbox = self.session.sandbox_if_started()
        if sandbox is None:
            rows.append(("sandbox", "not started (starts on the first --run)"))
        table = "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
        text = f"**Data Agent**\n\n{table}"
        if sandbox is not None:
            text += "\n\n" + sandbox.status()._repr_markdown_()
        show_markdown(text)

    @magic_arguments("dataagent chat")
    def chat(self, args: argparse.Namespace) -> None:
        """Open the chat widget."""
        from IPython.display import display

        display(self._open_chat())

    @magic_arguments("dataagent load")
    @argument("path", help="The file (quote a path with spaces).")
    @argument("--name", help="Variable name (default: from the file name).")
    @argument("--sheet", help="Sheet of a workbook (name or number).")
    def load(self, args: argparse.Namespace) -> None:
        """Load a CSV/TSV/Excel/ODS/Parquet/JSON Lines file as a DataFrame."""
        from .loaders import load

        loaded = load(
            args.path,
            name=args.name,
            sheet=args.sheet,
            namespace=self.shell.user_ns,
            max_mb=self.config.max_upload_mb,
        )
        self.session.tracker.update(self.shell.user_ns)
        show_rich(loaded)

    @magic_arguments("dataagent history")
    @argument("n", nargs="?", metavar="N", help="How many (default 20).")
    def history(self, args: argparse.Namespace) -> None:
        """Recent questions of this notebook."""
        limit = _count(args.n, default=20, what="history N")
        history = self._require_history()
        show_rich(store.HistoryTable(history.recent(notebook=self.session.notebook, limit=limit)))

    @magic_arguments("dataagent export")
    @argument("path", help="Where to write it (.md or .ipynb).")
    def export(self, args: argparse.Namespace) -> None:
        """Write the conversation as Markdown or a notebook."""
        history = self._require_history()
        conversation = self.session.conversation or ""
        # each cell's current turn, where the saved notebook has the cell
        turns = store.in_notebook_order(
            history.current_turns(conversation), store.notebook_cell_ids(self.session.notebook)
        )
        path = store.export_conversation(turns, args.path)
        show_markdown(f"Wrote the conversation to `{path}`.")

    @magic_arguments("dataagent reset")
    def reset(self, args: argparse.Namespace) -> None:
        """Start a new conversation."""
        self.session.reset()
        show_markdown("Started a new conversation: follow-ups no longer see earlier questions.")

    @magic_arguments("dataagent restart")
    def restart(self, args: argparse.Namespace) -> None:
        """Restart the sandbox kernel."""
        self.session.sandbox.restart()
        show_markdown(
            "Restarted the sandbox kernel (its variables are gone; frames are "
            "sent again on the next run)."
        )

    @magic_arguments("dataagent stats")
    def stats(self, args: argparse.Namespace) -> None:
        """Questions, cache hits, tokens, cost, latency, runs."""
        show_rich(self.session.metrics.snapshot())

    @magic_arguments("dataagent replay")
    @argument("path", help="A .jsonl transcript written with DataAgent.record.")
    def replay(self, args: argparse.Namespace) -> None:
        """Answer from a recorded transcript (no endpoint, no key)."""
        store.TranscriptReplayer(args.path)  # fails clearly now if the file is unusable
        self.config.replay = args.path
        show_markdown(
            f"Answering from the transcript `{args.path}` (no endpoint, no key). "
            "Turn off with `%config DataAgent.replay = None`."
        )

    @magic_arguments("dataagent insert")
    def insert(self, args: argparse.Namespace) -> None:
        """Put the last proposed code in a new cell below."""
        if not self.session.pending_cell:
            raise errors.UsageError("there is no proposed code to insert yet.")
        self.shell.set_next_input(self.session.pending_cell, replace=False)

    @magic_arguments("dataagent fix")
    @argument(
        "--run",
        dest="mode",
        action="store_const",
        const="run",
        help="Run the corrected code in the sandboxed child kernel.",
    )
    @argument(
        "--check",
        action="store_true",
        help="Run the corrected code in the child first and fix it again if it fails.",
    )
    def fix(self, args: argparse.Namespace) -> None:
        """Propose a corrected version of the last cell, which failed."""
        failure = self.session.failures.last
        if failure is None:
            show_markdown(nothing_to_fix(self.session.failures))
            return
        fix = fix_question(failure, privacy=self.config.privacy, namespace=self.shell.user_ns)
        options = AskOptions(mode=args.mode, check=args.check, cell_id=current_cell_id()).resolve(
            self.config
        )
        events = self.session.fix(fix, options)
        render_in_cell(self.session, self.shell, fix.question, options, events)

    @magic_arguments("dataagent help")
    def help(self, args: argparse.Namespace) -> None:
        """This list."""
        show_markdown(command_table())

    # --- helpers -----------------------------------------------------------------------
    def _require_history(self) -> store.History:
        history = self.session.history
        if history is None:
            raise errors.StoreError(
                f"the history database under {self.config.data_dir} cannot be opened.",
                hint="Check the folder is writable, or set %config DataAgent.data_dir = '...'",
            )
        return history


#: the subcommands, in the order the help lists them
COMMANDS: tuple[str, ...] = tuple(
    name for name, value in vars(Commands).items() if hasattr(value, "parser")
)


def _usage(name: str) -> str:
    """``%dataagent load PATH [--name NAME] [--sheet SHEET]``, from the declared options."""
    parser: argparse.ArgumentParser = getattr(Commands, name).parser
    words = [f"%dataagent {name}"]
    optional = []
    for action in parser._actions:  # argparse's declared arguments, in order
        metavar = action.metavar or action.dest.upper()
        if action.option_strings and action.nargs == 0:  # a flag: --run
            optional.append(f"[{action.option_strings[0]}]")
        elif action.option_strings:
            optional.append(f"[{action.option_strings[0]} {metavar}]")
        elif action.nargs == "?":
            words.append(f"[{metavar}]")
        else:
            words.append(str(metavar))
    return " ".join(words + optional)


def _summary(name: str) -> str:
    parser: argparse.ArgumentParser = getattr(Commands, name).parser
    return (parser.description or "").strip().splitlines()[0].rstrip(".")


def command_table() -> str:
    """``%dataagent help``: the magics and every command, as a Markdown table."""
    rows = [
        ("%%ask [FRAME ...] [--run] [--into NAME] ...", "Cell body = question; `%%ask?`: options"),
        ("%ask QUESTION", "The same, frames found automatically"),
        *((_usage(name), _summary(name)) for name in COMMANDS),
        ("%config DataAgent", "Every option with its help"),
    ]
    table = "\n".join(f"| `{usage}` | {summary} |" for usage, summary in rows)
    return "**Data Agent** — ask questions about your DataFrames.\n\n| | |\n|---|---|\n" + table


def command_help() -> str:
    """The ``%dataagent?`` docstring: each command's usage and summary."""
    width = max(len(_usage(name)) for name in COMMANDS) + 2
    lines = [f"{_usage(name):<{width}}{_summary(name)}" for name in COMMANDS]
    return "Control the Data Agent.\n\n::\n\n" + "\n".join("    " + line for line in lines)


def _count(value: str | None, *, default: int, what: str) -> int:
    """A positive whole number typed by the user, with a message that says which."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise errors.UsageError(f"{what}: N must be a whole number, not {value!r}.") from None
    if number <= 0:
        raise errors.UsageError(f"{what}: N must be more than 0.")
    return number
