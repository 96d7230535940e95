"""The loaded extension: builds the config, the session and the front ends, and wires them.

It only builds, registers and unregisters: everything it adds to a shell is added in
:meth:`Extension.load` and removed in :meth:`Extension.unload`, so ``%unload_ext`` leaves
nothing behind. ``%load_ext dataagent`` and ``%load_ext dataagent_jupyter`` share one
instance per shell. Questions never pass through here: each front end talks to the
session directly.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from traitlets import TraitError

from . import comm, errors
from .config import DataAgent
from .magics import DataAgentMagics, ask_line_transform
from .session import Session

if TYPE_CHECKING:
    from .options import AskOptions

log = logging.getLogger("dataagent_jupyter")

_ATTR = "_dataagent_extension"


class Extension:
    """One per shell; reachable with :func:`current` (the ``chat()`` and ``load()`` API)."""

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
        self.magics = DataAgentMagics(
            shell, self.session, open_chat=self.chat, ask_with_approval=self._ask_with_approval
        )
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
        if getattr(shell, "kernel", None) is not None:  # comms need a kernel
            comm.register(shell, ext.session)
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
        if getattr(shell, "kernel", None) is not None:
            comm.unregister(shell)
        from .widget import close_all  # lazily: ipywidgets loads only with a chat

        close_all(self.session)
        self.session.close()
        if getattr(shell, _ATTR, None) is self:
            delattr(shell, _ATTR)

    def chat(self) -> Any:
        """A new chat widget on this extension's session and shell."""
        from .widget import ChatWidget  # lazily: ipywidgets loads only with a chat

        return ChatWidget(self.session, self.shell)

    def _ask_with_approval(self, question: str, options: AskOptions) -> Any:
        """``%%ask --agent`` approved step by step: a widget in the cell runs it."""
        from .widget.agent_cell import ask_with_approval  # lazily, as for the chat

        return ask_with_approval(self.session, self.shell, question, options)

    def _add_hook(self, event: str, callback: Any) -> None:
        self.shell.events.register(event, callback)
        self._hooks.append((event, callback))

    def _after_cell(self, result: Any) -> None:
        self.session.tracker.update(self.shell.user_ns)
        self.session.failures.after_cell(result)  # %dataagent fix reads the last failure


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
