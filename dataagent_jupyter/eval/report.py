"""The figures of an evaluation: summary, the printed table, report.md and report.json.

``report.json`` holds every question's result and is rewritten after each one (write to
a temporary file, then rename), so a run that is stopped leaves a valid report and
``--resume`` continues from it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..errors import UsageError
from ..store.metrics import price_of, price_table
from .runner import Result, Settings

#: order in which miss reasons are listed
REASONS = ("wrong value", "missing answer", "code error", "timeout", "load error", "error")


@dataclass(frozen=True)
class Tally:
    """Right answers out of a total."""

    right: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.right / self.total if self.total else 0.0

    def text(self) -> str:
        return f"{self.right}/{self.total} ({self.percent:.1f}%)"

    def as_dict(self) -> dict[str, Any]:
        return {"right": self.right, "total": self.total, "accuracy": round(self.percent, 2)}


def summarize(
    results: Sequence[Result], settings: Settings, prices: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Accuracy overall, by level and by concept, sub-answers, tokens, cost, latency, misses."""
    by_level: dict[str, list[bool]] = {}
    by_concept: dict[str, list[bool]] = {}
    for r in results:
        by_level.setdefault(r.level, []).append(r.right)
        for concept in r.concepts:
            by_concept.setdefault(concept, []).append(r.right)
    seconds = sorted(r.seconds for r in results)
    tokens_in = sum(r.tokens_in for r in results)
    tokens_out = sum(r.tokens_out for r in results)
    price = price_of(settings.model, price_table(prices))
    cost = None if price is None else (tokens_in * price[0] + tokens_out * price[1]) / 1e6
    misses: dict[str, int] = {}
    for r in results:
        if r.reason:
            misses[r.reason] = misses.get(r.reason, 0) + 1
    return {
        "accuracy": _tally(r.right for r in results).as_dict(),
        "by_level": {k: _tally(v).as_dict() for k, v in sorted(by_level.items())},
        "by_concept": {k: _tally(v).as_dict() for k, v in sorted(by_concept.items())},
        "sub_answers": Tally(
            sum(r.sub_right for r in results), sum(r.sub_total for r in results)
        ).as_dict(),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "price_per_million": list(price) if price else None,
        "cost_usd": None if cost is None else round(cost, 6),
        "latency_median": round(statistics.median(seconds), 3) if seconds else None,
        "latency_p95": round(_nearest_rank(seconds, 95), 3) if seconds else None,
        "fix_attempts": sum(r.fix_attempts for r in results),
        "questions_with_fixes": sum(1 for r in results if r.fix_attempts),
        "misses": {k: misses[k] for k in REASONS if k in misses},
    }


def build(
    results: Sequence[Result],
    settings: Settings,
    *,
    source: Mapping[str, str],
    prices: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole report as report.json holds it."""
    return {
        "settings": {**settings.as_dict(), **source},
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "summary": summarize(results, settings, prices),
        "questions": [r.as_dict() for r in results],
    }


def write(out: Path, report: Mapping[str, Any]) -> None:
    """Write report.json and report.md into ``out``, each replaced in one step."""
    out.mkdir(parents=True, exist_ok=True)
    _replace(out / "report.json", json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    _replace(out / "report.md", markdown(report))


def read_previous(out: Path, settings: Settings) -> list[Result]:
    """The results of an earlier run into ``out``, for ``--resume``.

    Results made with another model, mode or privacy level would mix two measurements in
    one report: that is refused with a message, never merged silently.
    """
    path = out / "report.json"
    if not path.exists():
        return []
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        earlier = {k: report["settings"][k] for k in ("model", "mode", "privacy")}
        results = [Result.from_dict(q) for q in report["questions"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"--resume cannot read {path}: {exc}.",
            hint="Delete it to start afresh, or give another --out folder.",
        ) from None
    if earlier != settings.as_dict():
        raise UsageError(
            f"the report in {out} was made with "
            + ", ".join(f"{k}={v}" for k, v in earlier.items())
            + "; this run uses "
            + ", ".join(f"{k}={v}" for k, v in settings.as_dict().items())
            + ".",
            hint="Give another --out folder to compare two settings side by side.",
        )
    return results


def table(report: Mapping[str, Any]) -> str:
    """The plain-text table printed at the end: by level, overall, then the accuracy line."""
    s = report["summary"]
    rows = [("level", "right", "total", "accuracy")]
    for level, t in s["by_level"].items():
        rows.append((level, str(t["right"]), str(t["total"]), f"{t['accuracy']:.1f}%"))
    a = s["accuracy"]
    rows.append(("all", str(a["right"]), str(a["total"]), f"{a['accuracy']:.1f}%"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.insert(len(lines) - 1, "  ".join("-" * w for w in widths))
    sub = s["sub_answers"]
    lines += [
        "",
        f"sub-answers: {sub['right']}/{sub['total']} ({sub['accuracy']:.1f}%)",
        f"tokens in/out: {s['tokens_in']:,} / {s['tokens_out']:,}   estimated cost: {_cost(s)}",
        f"latency median/p95: {_seconds(s['latency_median'])} / {_seconds(s['latency_p95'])}"
        f"   fix attempts: {s['fix_attempts']}",
    ]
    if s["misses"]:
        lines.append("misses: " + ", ".join(f"{k} {v}" for k, v in s["misses"].items()))
    lines.append(f"accuracy: {a['right']}/{a['total']} ({a['accuracy']:.1f}%)")
    return "\n".join(lines)


def markdown(report: Mapping[str, Any]) -> str:
    """report.md: the same figures for people, with the reason for every miss."""
    s, cfg = report["summary"], report["settings"]
    a, sub = s["accuracy"], s["sub_answers"]
    out = [
        "# Evaluation report",
        "",
        f"- model: `{cfg['model']}` · mode: `{cfg['mode']}` · privacy: `{cfg['privacy']}`",
        f"- endpoint: {cfg.get('endpoint', '')} · questions: `{cfg.get('questions', '')}`",
        f"- updated: {report['updated']}",
        "",
        f"**accuracy: {a['right']}/{a['total']} ({a['accuracy']:.1f}%)** · sub-answers: "
        f"{sub['right']}/{sub['total']} ({sub['accuracy']:.1f}%)",
        "",
        "| figure | value |",
        "|---|---|",
        f"| tokens in / out | {s['tokens_in']:,} / {s['tokens_out']:,} |",
        f"| estimated cost | {_cost(s)} |",
        f"| latency median / p95 | {_seconds(s['latency_median'])} / "
        f"{_seconds(s['latency_p95'])} |",
        f"| fix attempts (questions that needed one) | {s['fix_attempts']} "
        f"({s['questions_with_fixes']}) |",
        "",
        "## By level",
        "",
        *_tally_table("level", s["by_level"]),
        "",
        "## By concept",
        "",
        *_tally_table("concept", s["by_concept"]),
        "",
        "## Misses",
        "",
    ]
    misses = [q for q in report["questions"] if not q["right"]]
    if not misses:
        out.append("None.")
    else:
        out += ["| id | level | reason | detail |", "|---|---|---|---|"]
        for q in misses:
            out.append(f"| {q['id']} | {q['level']} | {q['reason']} | {_cell(q['detail'])} |")
    return "\n".join(out) + "\n"


class Progress:
    """A progress bar on a terminal; one line per question otherwise (logs, CI)."""

    WIDTH = 24

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.right = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()

    def start(self) -> None:
        self._draw("")

    def update(self, result: Result) -> None:
        self.done += 1
        self.right += result.right
        mark = "right" if result.right else f"miss ({result.reason})"
        self._draw(f"question {result.id}: {mark} in {result.seconds:.1f} s")

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, last: str) -> None:
        filled = self.WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"[{bar}] {self.done}/{self.total}  right {self.right}"
        if self.done:
            each = (time.monotonic() - self.started) / self.done
            line += f"  ~{each * (self.total - self.done):.0f} s left"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        elif last:
            self.stream.write(f"{line}  {last}\n")
        self.stream.flush()


def _tally(values: Iterable[bool]) -> Tally:
    values = list(values)
    return Tally(sum(values), len(values))


def _tally_table(what: str, tallies: Mapping[str, Mapping[str, Any]]) -> list[str]:
    if not tallies:
        return ["(none given)"]
    rows = [f"| {what} | right | total | accuracy |", "|---|---:|---:|---:|"]
    for name, t in tallies.items():
        rows.append(f"| {_cell(name)} | {t['right']} | {t['total']} | {t['accuracy']:.1f}% |")
    return rows


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cost(summary: Mapping[str, Any]) -> str:
    if summary["cost_usd"] is None:
        return "unknown (no price for this model: give --price IN OUT, USD per million tokens)"
    return f"${summary['cost_usd']:.4f}"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _nearest_rank(ordered: Sequence[float], pct: float) -> float:
    # an observed latency, not an interpolation between two (as %dataagent stats)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
