"""``DataAgent``: every user-facing option as a typed, documented traitlets trait.

``%config DataAgent`` lists them with their help; ``%config DataAgent.model = "..."`` sets
one; ``c.DataAgent.*`` in ``ipython_config.py`` sets defaults. The API key is held in a
:class:`Secret` whose repr is masked, so ``%config DataAgent`` never prints it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from traitlets import (
    Bool,
    Dict,
    Enum,
    Float,
    Int,
    List,
    TraitError,
    TraitType,
    Unicode,
    default,
    validate,
)
from traitlets.config import Configurable

from .errors import ConfigError, DataAgentError

__all__ = ["DataAgent", "Secret", "parse_prices", "parse_size"]


class Secret:
    """A string that never shows itself: repr and str are masked, ``reveal()`` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The real value, for the one place that needs it (the HTTP client)."""
        return self._value

    def __repr__(self) -> str:
        return "<secret: set>" if self._value else "<secret: empty>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


class SecretTrait(TraitType[Secret | None, str | Secret | None]):
    """Accepts a str (or Secret) and stores a :class:`Secret`."""

    default_value = None
    allow_none = True
    info_text = "a string (stored masked)"

    def validate(self, obj: Any, value: Any) -> Secret | None:
        if value is None or isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        self.error(obj, value)
        return None  # pragma: no cover - error() raises


#: The sandbox's protections by name (``sandbox.protections`` says what each one means).
PROTECTION_NAMES = (
    "landlock-fs",
    "landlock-net",
    "seccomp",
    "netns",
    "signal-scope",
    "process-limit",
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b|%)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str, *, total: int | None = None) -> int:
    """Bytes for ``"4G"``, ``"512 MiB"``, ``"1000000"`` or ``"50%"`` (of ``total``)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. '4G', '512M' or '50%')")
    number, unit = float(m.group(1)), (m.group(2) or "").lower()
    if unit == "%":
        if total is None:
            raise ValueError("a percentage needs a total")
        return int(total * number / 100)
    return int(number * _UNITS[unit[:1]])


def parse_prices(prices: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """``DataAgent.prices`` as {model: (input, output)} USD per million tokens, checked."""
    table: dict[str, tuple[float, float]] = {}
    for model, value in prices.items():
        try:
            usd_in, usd_out = (float(v) for v in value)
            if usd_in < 0 or usd_out < 0 or math.isnan(usd_in + usd_out):
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(
                f"DataAgent.prices[{model!r}] must be two numbers, not {value!r}.",
                hint="Give USD per million tokens for input and output, e.g. "
                "%config DataAgent.prices = {'gpt-4o-mini': [0.15, 0.60]}",
            ) from None
        table[str(model)] = (usd_in, usd_out)
    return table


class DataAgent(Configurable):
    """Options of the Data Agent (``%config DataAgent`` lists them; ``DataAgent.x = ...`` sets)."""

    # --- the LLM ---------------------------------------------------------------------
    model = Unicode(
        "gpt-4o-mini", help="Chat model name sent to the endpoint (e.g. gpt-4o, llama3.1)."
    ).tag(config=True)
    base_url = Unicode(
        None,
        allow_none=True,
        help="OpenAI-compatible endpoint URL, e.g. http://localhost:11434/v1 for Ollama. "
        "Defaults to $OPENAI_BASE_URL, else the OpenAI API.",
    ).tag(config=True)
    api_key = SecretTrait(
        help="API key for the endpoint. Defaults to $OPENAI_API_KEY. Never displayed, "
        "logged, recorded or passed to the child kernel."
    ).tag(config=True)
    temperature = Float(
        None, allow_none=True, help="Sampling temperature; None leaves the endpoint's default."
    ).tag(config=True)
    timeout = Float(60.0, help="Seconds to wait for the endpoint before giving up.").tag(
        config=True
    )
    max_retries = Int(
        2,
        min=0,
        help="Retries for connection errors, 429 and 5xx answers (the openai SDK's backoff).",
    ).tag(config=True)

    # --- how questions are asked -----------------------------------------------------
    mode = Enum(
        ["insert", "run", "agent"],
        "insert",
        help="insert: propose the code as a new cell to review. run: run it in the sandboxed "
        "child kernel and show the answer. agent: work in several steps in the child kernel, "
        "then summarise and propose the steps that worked as cells.",
    ).tag(config=True)
    privacy = Enum(
        ["sample", "schema"],
        "sample",
        help="sample: send a few sampled values per column. schema: send names, dtypes and "
        "counts only; no cell value leaves the kernel.",
    ).tag(config=True)
    sample_rows = Int(5, min=0, help="Example rows sent per frame in privacy='sample'.").tag(
        config=True
    )
    stats_sample = Int(
        10_000,
        min=0,
        help="Rows sampled (positionally, at random) for per-column statistics; keeps the "
        "cost of describing a frame independent of its length.",
    ).tag(config=True)
    max_frames = Int(
        8, min=0, help="Most frames described when %%ask names none (most recently defined first)."
    ).tag(config=True)
    max_prompt_tokens = Int(
        3000,
        min=0,
        help="Budget (estimated tokens) for frame descriptions plus history in one prompt; "
        "wide frames are cut to it and the prompt says how many columns were left out.",
    ).tag(config=True)
    max_history_turns = Int(
        6, min=0, help="Earlier turns (question, code, outcome) sent with a follow-up question."
    ).tag(config=True)
    max_fix_attempts = Int(
        2, min=0, help="In run mode, times the model may repair code that raised (0 = never)."
    ).tag(config=True)
    instructions = Unicode(
        "",
        help="House rules added to every prompt, e.g. 'amounts are in EUR thousands'. A "
        "DATAAGENT.md in the kernel's working folder (or a parent up to home) is added too.",
    ).tag(config=True)

    # --- agent mode ------------------------------------------------------------------
    agent_max_steps = Int(
        8, min=1, help="Agent mode: most steps (code runs) in one run; then it ends with a summary."
    ).tag(config=True)
    agent_max_tokens = Int(
        60_000,
        min=0,
        help="Agent mode: most tokens (prompt + answer, all requests) one run may use; "
        "then it ends with the summary so far (0 = no limit).",
    ).tag(config=True)
    agent_timeout = Float(
        600.0, help="Agent mode: wall-clock seconds one run may take; then it ends with a summary."
    ).tag(config=True)
    agent_approval = Enum(
        ["none", "each-step"],
        "none",
        help="Agent mode: 'each-step' waits for Run / Skip / Stop before each step runs.",
    ).tag(config=True)
    agent_result_chars = Int(
        2_000,
        min=1,
        help="Agent mode: characters of a step's outcome (printed output, first rows) sent "
        "back to the model.",
    ).tag(config=True)

    # --- the sandbox -----------------------------------------------------------------
    memory_limit = Unicode(
        "50%",
        help="Address-space limit of the child kernel: '4G', '512M', or a percentage of RAM.",
    ).tag(config=True)
    cpu_limit = Int(
        3600,
        min=0,
        help="CPU seconds the child kernel may use in its lifetime before it is replaced.",
    ).tag(config=True)
    exec_timeout = Float(
        120.0, help="Wall-clock seconds one run may take; then it is interrupted."
    ).tag(config=True)
    max_file_size = Unicode("1G", help="Largest file the child kernel may write.").tag(config=True)
    max_processes = Int(
        256,
        min=0,
        help="Processes and threads the child kernel may start: a cgroup pids limit where "
        "the machine allows one, else RLIMIT_NPROC set to the user's existing tasks plus "
        "this many. 0 = no limit.",
    ).tag(config=True)
    disk_limit = Unicode(
        "4G",
        help="Total size of what the child kernel may write to its work folder and its "
        "/dev/shm folder; past it the run is stopped and the kernel replaced. 0 = no limit.",
    ).tag(config=True)
    sandbox_network = Bool(
        False, help="Allow the child kernel to open network connections (off by default)."
    ).tag(config=True)
    sandbox_read_paths = List(
        Unicode(),
        help="Extra folders the child kernel may read (it sees only its work folder "
        "and the Python installation otherwise).",
    ).tag(config=True)
    sandbox_require = List(
        Enum(list(PROTECTION_NAMES)),
        help="Protections --run must have, by name: landlock-fs, landlock-net, seccomp, netns, "
        "signal-scope, process-limit. Without one of them the run is refused.",
    ).tag(config=True)
    warm_child = Bool(
        True, help="Start one child kernel in the background when the extension loads."
    ).tag(config=True)
    output_dir = Unicode(
        ".dataagent", help="Folder (relative to the notebook's) where charts are saved as PNG."
    ).tag(config=True)
    max_output_mb = Float(
        20.0,
        min=0.001,
        help="Largest single output of an answer, in MB; all outputs of one answer together "
        "may be 5 times this. What is cut is said in one line.",
    ).tag(config=True)
    max_saved_charts_mb = Float(
        200.0,
        min=0,
        help="Charts saved to output_dir per session, in MB; the oldest are removed first. "
        "0 turns saving off.",
    ).tag(config=True)

    # --- storage ---------------------------------------------------------------------
    data_dir = Unicode(
        help="Folder for the history and cache database (default: Jupyter data dir/dataagent)."
    ).tag(config=True)
    cache = Bool(True, help="Answer repeated identical requests from the response cache.").tag(
        config=True
    )
    cache_max_entries = Int(
        2000, min=0, help="Response cache size; oldest entries are evicted."
    ).tag(config=True)
    record = Unicode(
        None,
        allow_none=True,
        help="Append every LLM exchange to this JSON Lines transcript (default $DATAAGENT_RECORD).",
    ).tag(config=True)
    replay = Unicode(
        None,
        allow_none=True,
        help="Answer every LLM request from this transcript: no endpoint, no key needed "
        "(default $DATAAGENT_REPLAY).",
    ).tag(config=True)
    prices = Dict(
        help="Price per million tokens, {model: [input, output]} in USD, for %dataagent stats."
    ).tag(config=True)
    max_upload_mb = Int(200, min=0, help="Largest file %dataagent load accepts, in MB.").tag(
        config=True
    )
    log_level = Enum(
        ["DEBUG", "INFO", "WARNING", "ERROR"],
        "WARNING",
        help="Level of the 'dataagent_jupyter' logger.",
    ).tag(config=True)

    @default("base_url")
    def _default_base_url(self) -> str | None:
        return os.environ.get("OPENAI_BASE_URL") or None

    @default("record")
    def _default_record(self) -> str | None:
        return os.environ.get("DATAAGENT_RECORD") or None

    @default("replay")
    def _default_replay(self) -> str | None:
        return os.environ.get("DATAAGENT_REPLAY") or None

    @default("data_dir")
    def _default_data_dir(self) -> str:
        from jupyter_core.paths import jupyter_data_dir

        return os.path.join(jupyter_data_dir(), "dataagent")

    @validate("memory_limit", "max_file_size", "disk_limit")
    def _check_size(self, proposal: dict[str, Any]) -> str:
        if proposal["trait"].name != "memory_limit" and str(proposal["value"]).strip()[-1:] == "%":
            raise TraitError(f"{proposal['trait'].name} takes a size such as '4G', not a share")
        try:
            parse_size(proposal["value"], total=1)
        except ValueError as exc:
            raise TraitError(str(exc)) from None
        return proposal["value"]

    @validate("timeout", "exec_timeout", "agent_timeout")
    def _check_positive(self, proposal: dict[str, Any]) -> float:
        if proposal["value"] <= 0:
            raise TraitError(f"{proposal['trait'].name} must be more than 0 seconds")
        return proposal["value"]

    @validate("prices")
    def _check_prices(self, proposal: dict[str, Any]) -> dict[str, Any]:
        try:
            parse_prices(proposal["value"])
        except DataAgentError as exc:
            raise TraitError(exc.message) from None
        return proposal["value"]

    def resolved_api_key(self) -> str | None:
        """The key to send: ``DataAgent.api_key`` if set, else ``$OPENAI_API_KEY``."""
        if self.api_key:
            return self.api_key.reveal()
        return os.environ.get("OPENAI_API_KEY") or None
