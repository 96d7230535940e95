"""Pages generated from the code when the docs are built, so they cannot drift from it.

- ``_generated/config.md``: every ``DataAgent`` trait (name, type, default, help);
- ``_generated/errors.md``: every ``DataAgentError`` subclass, its meaning (docstring)
  and what to do; a new error class with no advice here fails the build;
- ``_generated/eval-help.txt``: ``python -m dataagent_jupyter.eval --help``.

The pages include them with ``{include}``; ``_generated/`` is not committed.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

#: What a user does about each error. The meaning comes from the class docstring.
ADVICE: dict[str, str] = {
    "DataAgentError": "An unexpected failure inside the extension. Your data is unchanged. "
    "Set `%config DataAgent.log_level = 'DEBUG'`, repeat, and report the log.",
    "UsageError": "Read the message: it names the flag or value. `%%ask?` and "
    "`%dataagent help` list every option.",
    "ConfigError": "Fix the named option with `%config DataAgent.NAME = ...`; "
    "`%config DataAgent` lists every option with its help.",
    "MissingAPIKey": "Set `OPENAI_API_KEY` before starting Jupyter, or "
    "`%config DataAgent.api_key = ...`; for a local server that needs no key, any "
    "non-empty value works (see [Endpoints](endpoints.md)). Or replay a transcript.",
    "FrameError": "Check the name with `%who DataFrame`; name only DataFrames or Series, "
    "or name none and let the agent find them.",
    "LLMError": "The message carries the endpoint's own words; check the endpoint's "
    "status, and `%dataagent status` for the URL in use.",
    "AuthenticationFailed": "The key is wrong, revoked or for another endpoint: check "
    "`OPENAI_API_KEY` / `DataAgent.api_key` against `OPENAI_BASE_URL`.",
    "EndpointUnreachable": "Start the server (e.g. `ollama serve`) or correct "
    "`OPENAI_BASE_URL` / `DataAgent.base_url`; `%dataagent status` shows the host used.",
    "LLMTimeout": "The model is slow or overloaded: raise `DataAgent.timeout`, pick a "
    "smaller model, or ask again.",
    "RateLimited": "Wait and ask again, raise `DataAgent.max_retries`, or use a key with "
    "a higher quota.",
    "ModelNotFound": "Set a model the endpoint serves (`%config DataAgent.model = ...`); "
    "Ollama: `ollama list`, others: `GET /v1/models`.",
    "BadResponse": "The server is not fully OpenAI-compatible or cut the answer; try "
    "again, or another server version.",
    "NoCodeInAnswer": "Rephrase the question as a data task, or use a stronger model; "
    "the hint quotes what the model said instead.",
    "ToolsUnsupported": "Agent mode needs a model and server that support tool calls: "
    "use run mode (`--run`) with this model, or pick one that has them.",
    "ReplayMiss": "The notebook asks something the transcript does not hold: record it "
    "again (`DataAgent.record`) with an endpoint, or turn replay off.",
    "SandboxError": "Run `%dataagent restart`; `%dataagent status` shows the analysis "
    "kernel's state and which protections it has.",
    "ExecutionFailed": "In run mode the model already tried to fix it "
    "(`DataAgent.max_fix_attempts`); the last version is offered for you to fix.",
    "ExecutionTimeout": "The run took longer than `DataAgent.exec_timeout`: ask for less "
    "work, or raise the limit.",
    "ChildDied": "Usually out of memory or CPU time: ask about less data, or raise "
    "`DataAgent.memory_limit` / `cpu_limit`. The next run gets a fresh kernel.",
    "Cancelled": "You pressed Stop or interrupted the kernel; ask again when ready.",
    "LoadError": "The message names the file and the reason: fix the path, the sheet "
    "(`--sheet`), the size limit (`DataAgent.max_upload_mb`) or install the named reader.",
    "StoreError": "The history or cache under `DataAgent.data_dir` could not be written: "
    "check that folder's permissions and free space. Answers still work.",
}


def _default(trait: Any, name: str) -> str:
    if name == "api_key":
        return "`$OPENAI_API_KEY`"
    dynamic = {
        "base_url": "`$OPENAI_BASE_URL`, else the OpenAI API",
        "record": "`$DATAAGENT_RECORD`",
        "replay": "`$DATAAGENT_REPLAY`",
        "data_dir": "Jupyter data dir / `dataagent`",
    }
    if name in dynamic:
        return dynamic[name]
    value = trait.default_value
    return f"`{value!r}`"


def config_page() -> str:
    from dataagent_jupyter.config import DataAgent

    rows = ["| option | type | default | what it does |", "|---|---|---|---|"]
    for name, trait in sorted(DataAgent.class_traits(config=True).items()):
        kind = type(trait).__name__.replace("SecretTrait", "Secret")
        if getattr(trait, "values", None):
            kind = " \\| ".join(f"`{v}`" for v in trait.values)
        help_text = " ".join(trait.help.split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {kind} | {_default(trait, name)} | {help_text} |")
    return "\n".join(rows) + "\n"


def errors_page() -> str:
    from dataagent_jupyter import errors

    classes = [
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.DataAgentError) and obj.__module__ == errors.__name__
    ]
    classes.sort(key=lambda c: inspect.getsourcelines(c)[1])  # file order: grouped
    missing = [c.__name__ for c in classes if c.__name__ not in ADVICE]
    if missing:
        raise ExtensionError(
            f"errors.py has error classes the docs do not explain: {', '.join(missing)}. "
            "Add what the user should do to ADVICE in docs/_ext/generated.py."
        )
    out = []
    for cls in classes:
        base = cls.__mro__[1].__name__
        meaning = " ".join(inspect.getdoc(cls).split())
        out += [
            f"### {cls.title} (`{cls.__name__}`)",
            "",
            f"*{meaning}*" + (f" A kind of `{base}`." if base != "Exception" else ""),
            "",
            f"**What to do:** {ADVICE[cls.__name__]}",
            "",
        ]
    return "\n".join(out)


def eval_help() -> str:
    from dataagent_jupyter.eval.cli import parser

    os.environ.setdefault("COLUMNS", "90")
    return parser().format_help()


def write_pages(app: Sphinx, config: Any = None) -> None:
    folder = Path(app.srcdir) / "_generated"
    folder.mkdir(exist_ok=True)
    for name, text in (
        ("config.md", config_page()),
        ("errors.md", errors_page()),
        ("eval-help.txt", eval_help()),
    ):
        path = folder / name
        if not path.exists() or path.read_text() != text:  # unchanged: no rebuild
            path.write_text(text)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", write_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
