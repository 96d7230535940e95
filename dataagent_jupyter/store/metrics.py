"""What this kernel session has cost and how it went, for ``%dataagent stats``.

Counted in memory per kernel: a restart starts the figures afresh (the history keeps the
long record). Tokens are the ones the endpoint billed, so cost is what was paid, not what
the cache saved. Cost comes from a price table per model; a model with no price is shown
as "unknown", never as free.
"""

from __future__ import annotations

import html
import math
import re
import statistics
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import parse_prices

#: Approximate list prices in USD per million tokens [input, output] for a few common
#: OpenAI models. They change; set your own with ``DataAgent.prices``.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}

PRICE_NOTE = (
    "Approximate list prices, configurable via DataAgent.prices "
    "{model: [usd_per_M_input, usd_per_M_output]}."
)

# Endpoints report dated snapshots ("gpt-4o-mini-2024-07-18", "gpt-4-0613") of the model
# that was asked for; they cost what the undated name costs.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


def price_table(overrides: Mapping[str, Any] | None = None) -> dict[str, tuple[float, float]]:
    """The defaults updated by ``overrides`` ({model: [input, output]} USD per M tokens)."""
    return {**DEFAULT_PRICES, **parse_prices(overrides or {})}


def price_of(model: str, table: Mapping[str, tuple[float, float]]) -> tuple[float, float] | None:
    """The price of ``model`` (or of the model a dated snapshot name belongs to), or None."""
    if model in table:
        return table[model]
    base = _SNAPSHOT.sub("", model)
    return table.get(base)


class TurnLike(Protocol):
    """What metrics need to know about a finished question (a :class:`Turn` has it)."""

    @property
    def model(self) -> str: ...
    @property
    def tokens_in(self) -> int: ...
    @property
    def tokens_out(self) -> int: ...
    @property
    def latency(self) -> float: ...


@dataclass(frozen=True)
class ModelUsage:
    """Questions and billed tokens of one model; ``cost_usd`` None when it has no price."""

    model: str
    questions: int
    tokens_in: int
    tokens_out: int
    price: tuple[float, float] | None
    cost_usd: float | None


@dataclass(frozen=True)
class Stats:
    """A snapshot of the session's figures; shows itself as a table.

    ``cost_usd`` is None ("unknown") when a model that spent tokens has no price.
    """

    questions: int
    cache_hits: int
    tokens_in: int
    tokens_out: int
    cost_usd: float | None
    unpriced: tuple[str, ...]
    latency_median: float | None
    latency_p95: float | None
    runs: int
    run_failures: int
    fix_attempts: int
    models: tuple[ModelUsage, ...] = ()
    agent_runs: int = 0
    agent_steps: int = 0
    agent_tokens_in: int = 0
    agent_tokens_out: int = 0
    agent_cost_usd: float | None = 0.0

    def _summary(self) -> list[tuple[str, str]]:
        if self.cost_usd is not None:
            cost = _usd(self.cost_usd)
        else:
            cost = f"unknown (no price for {', '.join(self.unpriced)})"
        latency = (
            "—"
            if self.latency_median is None
            else f"{self.latency_median:.2f} s / {self.latency_p95:.2f} s"
        )
        return [
            ("questions asked", str(self.questions)),
            ("cache hits", str(self.cache_hits)),
            ("tokens in / out", f"{self.tokens_in:,} / {self.tokens_out:,}"),
            ("estimated cost", cost),
            ("latency median / p95", latency),
            ("child-kernel runs / failures", f"{self.runs} / {self.run_failures}"),
            ("fix attempts", str(self.fix_attempts)),
            *self._agent_rows(),
        ]

    def _agent_rows(self) -> list[tuple[str, str]]:
        if not self.agent_runs:
            return []
        cost = "unknown" if self.agent_cost_usd is None else _usd(self.agent_cost_usd)
        return [
            ("agent runs / steps", f"{self.agent_runs} / {self.agent_steps}"),
            ("agent tokens in / out", f"{self.agent_tokens_in:,} / {self.agent_tokens_out:,}"),
            ("agent cost", cost),
        ]

    def _model_rows(self) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for m in self.models:
            price = "unknown" if m.price is None else f"${m.price[0]:g} / ${m.price[1]:g}"
            cost = "unknown" if m.cost_usd is None else _usd(m.cost_usd)
            rows.append(
                (m.model, str(m.questions), f"{m.tokens_in:,}", f"{m.tokens_out:,}", price, cost)
            )
        return rows

    _MODEL_HEADERS = (
        "model",
        "questions",
        "tokens in",
        "tokens out",
        "price per M in / out",
        "cost",
    )

    def _repr_markdown_(self) -> str:
        lines = ["| Data Agent | this session |", "|---|---|"]
        lines += [f"| {k} | {_md(v)} |" for k, v in self._summary()]
        if self.models:
            lines += [
                "",
                "| " + " | ".join(self._MODEL_HEADERS) + " |",
                "|" + "|".join("---" for _ in self._MODEL_HEADERS) + "|",
            ]
            lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in self._model_rows()]
        lines += ["", f"*{PRICE_NOTE}*"]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        summary = "".join(
            f'<tr><th style="text-align:left">{html.escape(k)}</th>'
            f'<td style="text-align:left">{html.escape(v)}</td></tr>'
            for k, v in self._summary()
        )
        out = [f'<table class="dataagent-stats"><tbody>{summary}</tbody></table>']
        if self.models:
            head = "".join(f"<th>{html.escape(h)}</th>" for h in self._MODEL_HEADERS)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in self._model_rows()
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        out.append(f"<p><small><i>{html.escape(PRICE_NOTE)}</i></small></p>")
        return "".join(out)


class Metrics:
    """Counters for one kernel session; safe to update from the comm thread."""

    def __init__(
        self, prices: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
    ) -> None:
        # A callable is read at each snapshot, so %config DataAgent.prices applies at once.
        self._prices = prices
        self._lock = threading.Lock()
        self._latencies: list[float] = []
        self._per_model: dict[str, list[int]] = {}  # model -> [questions, in, out]
        self._cache_hits = 0
        self._runs = 0
        self._run_failures = 0
        self._fix_attempts = 0
        self._agent_runs = 0
        self._agent_steps = 0
        self._agent_tokens: dict[str, list[int]] = {}  # model -> [in, out]

    def record_question(self, turn: TurnLike) -> None:
        """Count a finished question: its billed tokens and how long the user waited."""
        with self._lock:
            counts = self._per_model.setdefault(turn.model or "unknown model", [0, 0, 0])
            counts[0] += 1
            counts[1] += int(turn.tokens_in)
            counts[2] += int(turn.tokens_out)
            self._latencies.append(float(turn.latency))

    def record_cache_hit(self) -> None:
        """Count one LLM request answered from the response cache."""
        with self._lock:
            self._cache_hits += 1

    def record_run(self, ok: bool) -> None:
        """Count one run of generated code in the child kernel."""
        with self._lock:
            self._runs += 1
            self._run_failures += not ok

    def record_runs(self, *, ok: int, failed: int) -> None:
        """Count several runs at once (an agent run's steps)."""
        with self._lock:
            self._runs += ok + failed
            self._run_failures += failed

    def record_fix_attempt(self) -> None:
        """Count one request to the model to repair code that failed."""
        with self._lock:
            self._fix_attempts += 1

    def record_agent_run(self, turn: TurnLike, steps: int) -> None:
        """Count one agent run (also counted as a question) and the steps it ran."""
        with self._lock:
            self._agent_runs += 1
            self._agent_steps += steps
            tokens = self._agent_tokens.setdefault(turn.model or "unknown model", [0, 0])
            tokens[0] += int(turn.tokens_in)
            tokens[1] += int(turn.tokens_out)

    def snapshot(self) -> Stats:
        """The figures so far, priced with the current price table."""
        raw = self._prices() if callable(self._prices) else self._prices
        table = price_table(raw)
        with self._lock:
            latencies = sorted(self._latencies)
            per_model = {m: tuple(c) for m, c in self._per_model.items()}
            hits, runs, failures, fixes = (
                self._cache_hits,
                self._runs,
                self._run_failures,
                self._fix_attempts,
            )
            agent_runs, agent_steps = self._agent_runs, self._agent_steps
            agent_tokens = {m: tuple(t) for m, t in self._agent_tokens.items()}
        models = []
        for model, (questions, tokens_in, tokens_out) in sorted(per_model.items()):
            price = price_of(model, table)
            cost = (
                None
                if price is None
                else (tokens_in * price[0] + tokens_out * price[1]) / 1_000_000
            )
            models.append(ModelUsage(model, questions, tokens_in, tokens_out, price, cost))
        unpriced = tuple(
            m.model for m in models if m.cost_usd is None and (m.tokens_in or m.tokens_out)
        )
        total = None if unpriced else sum(m.cost_usd or 0.0 for m in models)
        return Stats(
            questions=sum(m.questions for m in models),
            cache_hits=hits,
            tokens_in=sum(m.tokens_in for m in models),
            tokens_out=sum(m.tokens_out for m in models),
            cost_usd=total,
            unpriced=unpriced,
            latency_median=statistics.median(latencies) if latencies else None,
            latency_p95=_percentile(latencies, 95) if latencies else None,
            runs=runs,
            run_failures=failures,
            fix_attempts=fixes,
            models=tuple(models),
            agent_runs=agent_runs,
            agent_steps=agent_steps,
            agent_tokens_in=sum(t[0] for t in agent_tokens.values()),
            agent_tokens_out=sum(t[1] for t in agent_tokens.values()),
            agent_cost_usd=_cost(agent_tokens, table),
        )


def _cost(
    tokens: Mapping[str, tuple[int, ...]], table: Mapping[str, tuple[float, float]]
) -> float | None:
    """USD for {model: (in, out)} tokens; None when a model that spent tokens has no price."""
    total = 0.0
    for model, (tokens_in, tokens_out) in tokens.items():
        price = price_of(model, table)
        if price is None:
            if tokens_in or tokens_out:
                return None
            continue
        total += (tokens_in * price[0] + tokens_out * price[1]) / 1_000_000
    return total


def _percentile(ordered: Sequence[float], pct: float) -> float:
    # Nearest rank: an observed latency, not an interpolation between two.
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _usd(value: float) -> str:
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def _md(text: str) -> str:
    return text.replace("|", "\\|")
