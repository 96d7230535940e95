"""Errors a notebook user can meet, each written for the person reading it.

Every class means one thing the user can act on. The message says what happened, the
``hint`` what to do about it. IPython calls ``_render_traceback_`` instead of printing a
traceback, so a failing ``%%ask`` cell shows these two lines and nothing from inside the
extension.
"""

from __future__ import annotations

import html


class DataAgentError(Exception):
    """Base of every error the user can meet; ``message`` says what, ``hint`` what to do."""

    #: short label shown before the message, e.g. "No API key"
    title: str = "Data Agent error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"

    def to_json(self) -> dict[str, str | None]:
        """The error as the comm and the widget send it to a front end."""
        return {
            "kind": type(self).__name__,
            "title": self.title,
            "message": self.message,
            "hint": self.hint,
        }

    def _render_traceback_(self) -> list[str]:
        lines = [f"\x1b[1;31m{self.title}:\x1b[0m {self.message}"]
        if self.hint:
            lines.append(self.hint)
        return lines

    def _repr_markdown_(self) -> str:
        text = f"**{self.title}:** {_md_escape(self.message)}"
        if self.hint:
            text += f"  \n{_md_escape(self.hint)}"
        return text

    def _repr_html_(self) -> str:
        hint = f"<div>{html.escape(self.hint)}</div>" if self.hint else ""
        return (
            '<div class="dataagent-error" style="border-left:3px solid #d32f2f;'
            'padding:4px 8px;background:rgba(211,47,47,0.06)">'
            f"<b>{html.escape(self.title)}:</b> {html.escape(self.message)}{hint}</div>"
        )


def _md_escape(text: str) -> str:
    # Keep messages literal: model output or file names may contain Markdown syntax.
    return "".join("\\" + ch if ch in "\\`*_[]<>#|" else ch for ch in text)


# --- usage -------------------------------------------------------------------------------


class UsageError(DataAgentError):
    """The magic or function was called in a way that cannot work (empty question, bad flag)."""

    title = "Usage"


class ConfigError(DataAgentError):
    """A configuration value is missing or invalid."""

    title = "Configuration"


class MissingAPIKey(ConfigError):
    """No API key is configured for an endpoint that needs one."""

    title = "No API key"


class FrameError(DataAgentError):
    """A name given to ``%%ask`` is missing or is not a DataFrame/Series."""

    title = "Frame"


# --- the LLM endpoint --------------------------------------------------------------------


class LLMError(DataAgentError):
    """The LLM endpoint failed; subclasses say how."""

    title = "LLM endpoint"


class AuthenticationFailed(LLMError):
    """The endpoint refused the API key (401/403)."""

    title = "Authentication refused"


class EndpointUnreachable(LLMError):
    """Nothing answered at the configured base URL."""

    title = "Endpoint unreachable"


class LLMTimeout(LLMError):
    """The endpoint did not answer within ``DataAgent.timeout``."""

    title = "Timed out"


class RateLimited(LLMError):
    """The endpoint kept answering 429 after the configured retries."""

    title = "Rate limited"


class ModelNotFound(LLMError):
    """The endpoint does not know the configured model."""

    title = "Unknown model"


class BadResponse(LLMError):
    """The endpoint answered with something that is not a usable chat completion."""

    title = "Bad response"


class NoCodeInAnswer(LLMError):
    """The model's answer held no Python code that parses, even after asking again."""

    title = "No usable code"


class ToolsUnsupported(LLMError):
    """The endpoint refused the ``tools`` parameter; agent mode then uses plain messages."""

    title = "No tool calling"


class ReplayMiss(LLMError):
    """Replay mode is on and the transcript holds no answer for this request."""

    title = "Not in transcript"


# --- running code ------------------------------------------------------------------------


class SandboxError(DataAgentError):
    """The child kernel could not run the code; subclasses say why."""

    title = "Sandbox"


class ExecutionFailed(SandboxError):
    """The generated code raised inside the child kernel."""

    title = "The code failed"

    def __init__(
        self,
        message: str,
        *,
        traceback: str = "",
        ename: str = "",
        evalue: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.traceback = traceback
        self.ename = ename
        self.evalue = evalue


class ExecutionTimeout(SandboxError):
    """The code ran longer than ``DataAgent.exec_timeout``."""

    title = "Time limit"


class ChildDied(SandboxError):
    """The child kernel died (out of memory, CPU limit, killed); it is replaced."""

    title = "The analysis kernel died"


class Cancelled(DataAgentError):
    """The user pressed Stop (or interrupted the cell)."""

    title = "Cancelled"


# --- files -------------------------------------------------------------------------------


class LoadError(DataAgentError):
    """A file could not be loaded as a DataFrame; the message names the file and why."""

    title = "Cannot load file"


# --- store -------------------------------------------------------------------------------


class StoreError(DataAgentError):
    """History, cache or transcript storage failed."""

    title = "Storage"
