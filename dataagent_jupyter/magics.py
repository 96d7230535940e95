"""``%%ask`` / ``%ask`` and ``%dataagent``: the magics front end.

Options are declared once, with ``magic_arguments``: ``%%ask?`` documents them, a wrong
flag is a usage error, and the ``%ask`` line form reads its leading options with the same
parser. The ``%dataagent`` subcommands live beside the magics in ``commands.py``. A
question flows magic → session → events → ``cell_output.render_events``; nothing here
climbs back into the extension, which only builds and registers this class.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError as IPythonUsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import errors
from .cell_output import render_in_cell
from .commands import Commands, command_help
from .frontend import current_cell_id
from .options import AskOptions
from .session import Session

__all__ = ["DataAgentMagics", "ask_line_transform"]


@magics_class
class DataAgentMagics(Magics):
    """The magics; they only parse, call the session and render its events into the cell.

    State lives on the instance (the session, the commands), so unloading the extension
    removes everything.
    """

    def __init__(
        self,
        shell: Any,
        session: Session,
        *,
        open_chat: Callable[[], Any],
        ask_with_approval: Callable[[str, AskOptions], Any],
    ) -> None:
        super().__init__(shell)
        self.session = session
        self.commands = Commands(session, shell, open_chat=open_chat)
        #: an agent run approved step by step: shown as a widget (the widget front end's)
        self.ask_with_approval = ask_with_approval

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
        "--agent",
        dest="mode",
        action="store_const",
        const="agent",
        help="Work in several steps in the child kernel, then summarise and propose the "
        "steps that worked as cells (budgets: DataAgent.agent_max_steps, agent_max_tokens, "
        "agent_timeout).",
    )
    @argument(
        "--check",
        action="store_true",
        help="With --insert: run the code in the child first and fix it if it fails.",
    )
    @argument(
        "--into",
        metavar="NAME",
        help="With --run or --agent: bind the child's (last step's) `result` in the notebook "
        "as NAME.",
    )
    @argument(
        "--sample",
        type=int,
        metavar="N",
        help="With --run or --agent on a Dask or Spark frame: run on its first N rows, "
        "pulled by the engine (the sandbox cannot reach the cluster).",
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
            args, question = self._parse_line_form(line)
        else:
            args = parse_argstring(self.ask, line)
            question = cell
        options = AskOptions(
            frames=tuple(args.frames or ()) or None,
            mode=args.mode,
            check=args.check,
            into=args.into,
            sample=args.sample,
            model=args.model,
            privacy=args.privacy,
            use_cache=not args.no_cache,
            cell_id=current_cell_id(),  # a re-run of this cell replaces its turn
        ).resolve(self.session.config)
        if options.mode == "agent" and self.session.config.agent_approval == "each-step":
            # Run / Skip / Stop are buttons, clicked while the run goes on after the cell
            self.ask_with_approval(question, options)
            return
        render_in_cell(
            self.session, self.shell, question, options, self.session.ask(question, options)
        )

    @line_magic
    def dataagent(self, line: str) -> Any:
        # the docstring (%dataagent?) is generated from the commands, below the class
        return self.commands.run(line)

    def _parse_line_form(self, line: str) -> tuple[argparse.Namespace, str]:
        """``%ask``: leading ``--options`` (those of ``%%ask``), then the question as typed.

        The question keeps its apostrophes and quotes, so it is not split like a command
        line; only the leading words that are ``%%ask`` options are, by ``%%ask``'s own
        parser.
        """
        takes_value = {
            option: action.nargs != 0
            for action in self.ask.parser._actions  # argparse's declared arguments
            for option in action.option_strings
        }
        words: list[str] = []
        rest = line.strip()
        while rest.startswith("--"):
            word, _, rest = rest.partition(" ")
            if word not in takes_value:
                raise errors.UsageError(
                    f"unknown option {word} for %ask.",
                    hint="Options: " + ", ".join(takes_value) + ".",
                )
            words.append(word)
            if takes_value[word]:
                value, _, rest = rest.strip().partition(" ")
                if not value:
                    raise errors.UsageError(f"{word} needs a value.")
                words.append(value)
            rest = rest.strip()
        try:
            args = self.ask.parser.parse_args(words)
        except IPythonUsageError as exc:
            raise errors.UsageError(f"%ask: {exc}") from None
        return args, rest


DataAgentMagics.dataagent.__doc__ = command_help()


_ASK_LINE = re.compile(r"^([ \t]*)%ask[ \t]+(\S.*?)[ \t]*$")


def ask_line_transform(lines: list[str]) -> list[str]:
    """Let ``%ask how many rows have no price?`` be a question, not a help request.

    IPython reads a line ending in ``?`` as ``object?`` help before magics are expanded,
    so the question above would show "Object `price` not found". Questions end in ``?``;
    this rewrites such a line into the explicit call first. ``%ask?`` (help for the
    magic) and ``%%ask`` cells are left alone.
    """
    out = []
    for line in lines:
        match = _ASK_LINE.match(line.rstrip("\r\n"))
        if match and match.group(2).endswith("?"):
            indent, question = match.groups()
            out.append(f"{indent}get_ipython().run_line_magic('ask', {question!r})\n")
        else:
            out.append(line)
    return out
