"""The loaded extension: owns the config, the session, the magics and every hook it adds.

Everything the extension adds to a shell is added here and removed in :meth:`unload`,
so ``%unload_ext`` leaves nothing behind. ``%load_ext dataagent`` and
``%load_ext dataagent_jupyter`` share one instance per shell.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from IPython.display import display
from traitlets import TraitError

from . import comm, errors, store
from ._version import __version__
from .cell_output import show_markdown, show_rich
from .config import DataAgent
from .llm import endpoint_host
from .magics import DataAgentMagics, cell_text, render_events
from .options import AskOptions
from .session import Session

log = logging.getLogger("dataagent_jupyter")

_ATTR = "_dataagent_extension"


class Extension:
    """One per shell; reachable with :func:`current` from the widget, comm and API."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        try:
            self.config = DataAgent(parent=shell)
        except TraitError as exc:
            raise errors.ConfigError(
                f"a DataAgent setting in the IPython config is invalid: {exc}",
                hint="Fix it in ipython_config.py or with %config DataAgent.<option> = ...",
            ) from None
        self.session = Session(self.config, shell.user_ns)
        self.magics = DataAgentMagics(shell, self)
        self._hooks: list[tuple[str, Any]] = []

    # --- lifecycle -------------------------------------------------------------------
    @classmethod
    def load(cls, shell: Any) -> Extension:
        existing = getattr(shell, _ATTR, None)
        if existing is not None:
            return existing
        ext = cls(shell)
        shell.register_magics(ext.magics)
        shell.configurables.append(ext.config)
        ext._add_hook("post_run_cell", ext._after_cell)
        shell.input_transformer_manager.line_transforms.append(ask_line_transform)
        ext.session.tracker.update(shell.user_ns)
        ext._register_comm()
        setattr(shell, _ATTR, ext)
        if ext.config.warm_child and getattr(shell, "kernel", None) is not None:
            try:
                ext.session.sandbox.start_warm()
            except Exception as exc:  # a sandbox that cannot start must not block loading
                log.warning("could not start the warm sandbox kernel: %s", exc)
        return ext

    def unload(self) -> None:
        shell = self.shell
        manager = shell.magics_manager
        for kind, names in (("line", ("ask", "dataagent")), ("cell", ("ask",))):
            for name in names:
                manager.magics[kind].pop(name, None)
        manager.registry.pop(type(self.magics).__name__, None)
        if self.config in shell.configurables:
            shell.configurables.remove(self.config)
        transforms = shell.input_transformer_manager.line_transforms
        while ask_line_transform in transforms:
            transforms.remove(ask_line_transform)
        for event, callback in self._hooks:
            try:
                shell.events.unregister(event, callback)
            except ValueError:
                pass
        self._hooks.clear()
        self._unregister_comm()
        from .widget import close_all  # lazily: ipywidgets loads only with a chat

        close_all(self)
        self.session.close()
        if getattr(shell, _ATTR, None) is self:
            delattr(shell, _ATTR)

    def _add_hook(self, event: str, callback: Any) -> None:
        self.shell.events.register(event, callback)
        self._hooks.append((event, callback))

    def _after_cell(self, result: Any) -> None:
        self.session.tracker.update(self.shell.user_ns)

    def _register_comm(self) -> None:
        if getattr(self.shell, "kernel", None) is not None:  # comms need a kernel
            comm.register(self.shell, lambda: self.session)

    def _unregister_comm(self) -> None:
        if getattr(self.shell, "kernel", None) is not None:
            comm.unregister(self.shell)

    # --- asking ----------------------------------------------------------------------
    def ask(self, question: str, options: AskOptions) -> None:
        """Run a question through the session and render it into the current cell."""
        options = options.resolve(self.config)
        events = self.session.ask(question, options)
        done = render_events(
            events, mode=options.mode or "insert", shell=self.shell, question=question
        )
        if done.mode == "insert":
            self.session.pending_cell = cell_text(question, done.code)

    # --- %dataagent commands -------------------------------------------------------------
    def cmd_help(self, args: list[str]) -> None:
        show_markdown(_HELP)

    def cmd_status(self, args: list[str]) -> None:
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

    def cmd_reset(self, args: list[str]) -> None:
        self.session.reset()
        show_markdown("Started a new conversation: follow-ups no longer see earlier questions.")

    def cmd_restart(self, args: list[str]) -> None:
        self.session.sandbox.restart()
        show_markdown(
            "Restarted the sandbox kernel (its variables are gone; frames are "
            "sent again on the next run)."
        )

    def cmd_history(self, args: list[str]) -> None:
        limit = _int_arg(args, default=20, what="history N")
        history = self._require_history()
        show_rich(store.HistoryTable(history.recent(notebook=self.session.notebook, limit=limit)))

    def cmd_export(self, args: list[str]) -> None:
        if len(args) != 1:
            raise errors.UsageError("usage: %dataagent export PATH (.md or .ipynb)")
        history = self._require_history()
        conversation = self.session.conversation or ""
        path = store.export_conversation(history.conversation(conversation), args[0])
        show_markdown(f"Wrote the conversation to `{path}`.")

    def cmd_stats(self, args: list[str]) -> None:
        show_rich(self.session.metrics.snapshot())

    def cmd_replay(self, args: list[str]) -> None:
        if len(args) != 1:
            raise errors.UsageError("usage: %dataagent replay PATH (a .jsonl transcript)")
        store.TranscriptReplayer(args[0])  # fails clearly now if the file is unusable
        self.config.replay = args[0]
        show_markdown(
            f"Answering from the transcript `{args[0]}` (no endpoint, no key). "
            "Turn off with `%config DataAgent.replay = None`."
        )

    def cmd_load(self, args: list[str]) -> None:
        from .loaders import load

        usage = "usage: %dataagent load PATH [--name NAME] [--sheet SHEET]"
        path, name, sheet = None, None, None
        it = iter(args)
        for word in it:
            if word in ("--name", "--sheet"):
                value = next(it, None)
                if value is None:
                    raise errors.UsageError(f"{word} needs a value; {usage}")
                if word == "--name":
                    name = value
                else:
                    sheet = value
            elif path is None:
                path = word
            else:
                raise errors.UsageError(f"unexpected {word!r}; {usage} (quote paths with spaces)")
        if path is None:
            raise errors.UsageError(usage)
        loaded = load(
            path,
            name=name,
            sheet=sheet,
            namespace=self.shell.user_ns,
            max_mb=self.config.max_upload_mb,
        )
        self.session.tracker.update(self.shell.user_ns)
        show_rich(loaded)

    def cmd_chat(self, args: list[str]) -> None:
        from .widget import ChatWidget

        display(ChatWidget(self))

    def _require_history(self) -> store.History:
        history = self.session.history
        if history is None:
            raise errors.StoreError(
                f"the history database under {self.config.data_dir} cannot be opened.",
                hint="Check the folder is writable, or set %config DataAgent.data_dir = '...'",
            )
        return history

    def cmd_insert(self, args: list[str]) -> None:
        if not self.session.pending_cell:
            raise errors.UsageError("there is no proposed code to insert yet.")
        self.shell.set_next_input(self.session.pending_cell, replace=False)


_HELP = """\
**Data Agent** — ask questions about your DataFrames.

| | |
|---|---|
| `%%ask [FRAME ...] [--run] [--into NAME] ...` | cell body = question; `%%ask?`: options |
| `%ask QUESTION` | the same, frames found automatically |
| `%dataagent status` | version, model, endpoint, key set?, privacy, sandbox |
| `%dataagent chat` | the chat widget |
| `%dataagent load PATH [--name N] [--sheet S]` | load CSV/TSV/Excel/ODS/Parquet/JSON Lines |
| `%dataagent history [N]` / `export PATH` | recent questions / write the conversation |
| `%dataagent reset` / `restart` | new conversation / restart the sandbox kernel |
| `%dataagent stats` | questions, cache hits, tokens, cost, latency |
| `%dataagent replay PATH` | answer from a recorded transcript (no key needed) |
| `%config DataAgent` | every option with its help |
"""


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


def _int_arg(args: list[str], *, default: int, what: str) -> int:
    if not args:
        return default
    try:
        value = int(args[0])
    except ValueError:
        raise errors.UsageError(f"{what}: N must be a whole number, not {args[0]!r}.") from None
    if value <= 0:
        raise errors.UsageError(f"{what}: N must be more than 0.")
    return value


def current(shell: Any | None = None) -> Extension:
    """The extension of ``shell`` (default: the running IPython), loading it if needed."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            raise errors.UsageError(
                "this needs a running IPython or Jupyter kernel.",
                hint="Call it from a notebook, or load the extension: %load_ext dataagent",
            )
    existing = getattr(shell, _ATTR, None)
    if existing is not None:
        return existing
    # through IPython's extension manager, so %unload_ext dataagent_jupyter undoes it
    shell.extension_manager.load_extension("dataagent_jupyter")
    return getattr(shell, _ATTR)
