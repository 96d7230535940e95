"""What one agent step produced, checked and summarised for the model.

After a step runs in the child kernel, the child describes what it left behind
(:mod:`.child_report`); this module reads that report strictly (it comes from a kernel
where generated code just ran, so it is untrusted: size-capped, type-checked, every
string cut), names the silent failures a model tends to walk past (an empty frame, a
result or column that is all missing, a merge that multiplied the rows, a chart with
nothing drawn), and writes the message that goes back to the model, cut to a budget.

Under ``privacy="schema"`` that message holds shapes, dtypes and error types only: no
printed output, no rows, no error message (it may quote a value), no chart titles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

from ..sandbox.transfer import TransferError
from ..sandbox.untrusted import parse_reply

Privacy = Literal["sample", "schema"]

#: Largest report text accepted from the child; anything bigger is refused unread.
MAX_REPORT_CHARS = 64_000
#: Each string taken from the report is cut to this.
MAX_FIELD_CHARS = 2_000
MAX_COLUMNS = 40
MAX_FIGURES = 8
MAX_FRAMES = 40
#: What the module is called in the child.
CHILD_MODULE = "_dataagent_step"

_MERGE = re.compile(r"\.(merge|join)\s*\(|\bpd\.merge\s*\(")


@dataclass(frozen=True)
class FigureInfo:
    """A chart the step drew: its labels and how many things are drawn on it."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    axes: int = 0
    artists: int = 0


@dataclass(frozen=True)
class ResultInfo:
    """The step's ``result``: a frame/series of any engine (shape, dtypes, first rows) or a
    value. ``type`` names it for the model ("DataFrame", "polars LazyFrame", ...); ``kind``
    is what the checks go by; a row count is None where counting would run the query.
    """

    type: str
    kind: Literal["frame", "series", ""] = ""
    shape: tuple[int | None, ...] = ()
    dtypes: tuple[tuple[str, str], ...] = ()
    head: str = ""
    all_missing: tuple[str, ...] = ()
    repr: str = ""
    missing: bool = False
    figure: FigureInfo | None = None
    lazy: bool = False  # a lazy frame, reported from its schema and never collected

    @property
    def is_table(self) -> bool:
        return self.kind != ""


@dataclass(frozen=True)
class StepReport:
    """Everything the child said about one step, after strict parsing."""

    result: ResultInfo | None = None
    figures: tuple[FigureInfo, ...] = ()
    frames: tuple[tuple[str, int], ...] = ()  # name, rows of each frame in the child


@dataclass(frozen=True)
class StepOutcome:
    """One finished step as the loop knows it: what ran, what it printed, how it ended."""

    code: str
    stdout: str = ""
    error: tuple[str, str] | None = None  # (type, message)
    report: StepReport = field(default_factory=StepReport)
    charts: int = 0  # images shown in the notebook (charts are never sent)


class ReportError(ValueError):
    """The child's report is not what this module expects (bad JSON, wrong types, too big)."""


# --- the child side -------------------------------------------------------------------------


@cache
def _child_source() -> str:
    return resources.files(__package__).joinpath("child_report.py").read_text()


def report_request() -> tuple[str, dict[str, str]]:
    """The silent code and user expression that install the reporter and run it.

    The module source travels as a string literal and is executed only when the child
    does not hold it yet (a fresh child), so most steps pay one round trip and no compile.
    """
    install = (
        "def _dataagent_install_step(src):\n"
        "    import sys, types\n"
        f"    if {CHILD_MODULE!r} not in sys.modules:\n"
        f"        module = types.ModuleType({CHILD_MODULE!r})\n"
        "        exec(compile(src, '<dataagent step report>', 'exec'), module.__dict__)\n"
        f"        sys.modules[{CHILD_MODULE!r}] = module\n"
        f"_dataagent_install_step({_child_source()!r})\n"
        "del _dataagent_install_step\n"
    )
    expression = f"__import__({CHILD_MODULE!r}).report(globals())"
    return install, {"report": expression}


# --- parsing what came back -----------------------------------------------------------------


def parse_report(expressions: Any) -> StepReport:
    """The report from the user_expressions reply; raises :class:`ReportError` if malformed.

    The JSON is read by the sandbox's one reader of child replies (size cap first, JSON
    only); this function then checks every field's type and cuts every string.
    """
    if not isinstance(expressions, dict):
        raise ReportError("no user expressions")
    try:
        raw = parse_reply(expressions, "report", max_bytes=MAX_REPORT_CHARS)
    except TransferError as exc:
        raise ReportError(str(exc)) from None
    result = raw.get("result")
    figures = _list(raw.get("figures"))[:MAX_FIGURES]
    frames = raw.get("frames") or {}
    if not isinstance(frames, dict):
        raise ReportError("'frames' is not an object")
    return StepReport(
        result=None if result is None else _result(result),
        figures=tuple(_figure(f) for f in figures),
        frames=tuple((_str(k, 200), _int(v)) for k, v in list(frames.items())[:MAX_FRAMES]),
    )


def _result(raw: Any) -> ResultInfo:
    if not isinstance(raw, dict):
        raise ReportError("'result' is not an object")
    dtypes = raw.get("dtypes") or {}
    if not isinstance(dtypes, dict):
        raise ReportError("'dtypes' is not an object")
    figure = raw.get("figure")
    kind = raw.get("kind", "")
    if kind not in ("frame", "series", ""):
        raise ReportError("'kind' is not a known kind")
    return ResultInfo(
        type=_str(raw.get("type", "unknown"), 80),
        kind=kind,
        shape=tuple(None if n is None else _int(n) for n in _list(raw.get("shape"))[:2]),
        dtypes=tuple((_str(k, 200), _str(v, 80)) for k, v in list(dtypes.items())[:MAX_COLUMNS]),
        head=_str(raw.get("head", "")),
        all_missing=tuple(_str(c, 200) for c in _list(raw.get("all_missing"))[:MAX_COLUMNS]),
        repr=_str(raw.get("repr", "")),
        missing=raw.get("missing") is True,
        figure=None if figure is None else _figure(figure),
        lazy=raw.get("lazy") is True,
    )


def _figure(raw: Any) -> FigureInfo:
    if not isinstance(raw, dict):
        raise ReportError("a figure is not an object")
    return FigureInfo(
        title=_str(raw.get("title", ""), 200),
        xlabel=_str(raw.get("xlabel", ""), 200),
        ylabel=_str(raw.get("ylabel", ""), 200),
        axes=_int(raw.get("axes", 0)),
        artists=_int(raw.get("artists", 0)),
    )


def _str(value: Any, limit: int = MAX_FIELD_CHARS) -> str:
    if not isinstance(value, str):
        raise ReportError(f"expected a string, got {type(value).__name__}")
    return value if len(value) <= limit else value[:limit] + " …"


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 62:
        raise ReportError("expected a count")
    return value


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ReportError("expected a list")
    return value


# --- silent failures ------------------------------------------------------------------------


def silent_failures(outcome: StepOutcome, inputs: dict[str, int]) -> list[str]:
    """One line per suspect thing a step produced without raising.

    ``inputs`` maps the frames the question started from to their row counts: a frame
    the step made by merging that is longer than every input is the classic many-to-many
    join that silently multiplies rows.
    """
    if outcome.error is not None:
        return []
    notes: list[str] = []
    result = outcome.report.result
    if result is not None and result.is_table:
        if result.shape and result.shape[0] == 0:
            notes.append("`result` is empty (0 rows): a filter or join matched nothing.")
        elif result.kind == "frame" and result.all_missing:
            cols = ", ".join(repr(c) for c in result.all_missing[:8])
            notes.append(f"in `result`, column(s) {cols} are all missing (NaN/null).")
        elif result.kind == "series" and result.all_missing:
            notes.append("`result` is all missing (NaN/null).")
    elif result is not None and result.missing:
        notes.append("`result` is missing (NaN/None): the computation produced no value.")
    if _MERGE.search(outcome.code) and inputs:
        largest = max(inputs.values())
        grown = [
            (name, rows)
            for name, rows in outcome.report.frames
            if name not in inputs and rows > largest
        ]
        if grown:
            name, rows = max(grown, key=lambda item: item[1])
            notes.append(
                f"after the merge `{name}` has {rows} rows, more than any input frame "
                f"({largest}): the join keys may not be unique, multiplying rows."
            )
    figures = list(outcome.report.figures)
    if result is not None and result.figure is not None:
        figures.append(result.figure)
    for figure in figures:
        if figure.artists == 0:
            label = f" {figure.title!r}" if figure.title else ""
            notes.append(f"the chart{label} has nothing drawn on it.")
            break
    return notes


# --- the message back to the model -------------------------------------------------------


def step_message(
    outcome: StepOutcome,
    *,
    step: int,
    inputs: dict[str, int],
    privacy: Privacy,
    budget_chars: int,
) -> str:
    """What the model reads about step ``step``, at most ``budget_chars`` characters.

    The lines that steer the next step (ok or failed, shapes, dtypes, warnings) are
    always kept; printed output and first rows share what is left of the budget.
    """
    schema = privacy == "schema"
    result = outcome.report.result
    head: list[str] = []
    tail: list[str] = []
    printed = ""
    rows = ""
    if outcome.error is not None:
        ename, evalue = outcome.error
        detail = "(message withheld: privacy='schema')" if schema else evalue
        head.append(f"Step {step} failed: {ename}: {detail}".rstrip())
    else:
        head.append(f"Step {step} ran without error.")
    if outcome.stdout.strip():
        if schema:
            count = len(outcome.stdout.splitlines())
            head.append(f"It printed {count} line(s) (not sent: privacy='schema').")
        else:
            printed = outcome.stdout.rstrip()
    if outcome.error is None:
        tail.extend(_result_lines(result, schema=schema))
        if result is not None and result.is_table and result.head and not schema:
            rows = result.head
        figures = list(outcome.report.figures)
        if result is not None and result.figure is not None and result.figure not in figures:
            figures.append(result.figure)
        tail.extend(_figure_line(figure, schema=schema) for figure in figures)
        if outcome.charts and not figures:
            tail.append(f"{outcome.charts} chart(s) were shown to the user.")
        tail.extend("Warning: " + note for note in silent_failures(outcome, inputs))
    fixed = sum(len(line) + 1 for line in head + tail)
    room = max(budget_chars - fixed - 40, 0)
    parts = list(head)
    if printed:
        share = room if not rows else room // 2
        parts.append("Printed output:\n" + _cut_middle(printed, share))
    parts.extend(tail)
    if rows:
        share = room - (len(parts[len(head)]) if printed else 0)
        parts.append("First rows of `result`:\n" + _cut_middle(rows, share))
    return _cut_middle("\n".join(parts), budget_chars)


def _result_lines(result: ResultInfo | None, *, schema: bool) -> list[str]:
    if result is None:
        return ["No `result` was set."]
    if result.is_table:
        shape = " x ".join("unknown" if n is None else str(n) for n in result.shape)
        dtypes = ", ".join(f"{name}: {dtype}" for name, dtype in result.dtypes)
        lazy = " (lazy: not collected)" if result.lazy else ""
        return [
            f"`result` is a {result.type} of shape ({shape}){lazy}; dtypes: {dtypes or 'none'}."
        ]
    if result.figure is not None:
        return ["`result` is a matplotlib figure."]
    if schema:
        return [f"`result` is a {result.type} (value not sent: privacy='schema')."]
    return [f"`result` = {result.repr} ({result.type})."]


def _figure_line(figure: FigureInfo, *, schema: bool) -> str:
    if schema:
        return f"A chart was drawn: {figure.axes} axes, {figure.artists} artists."
    return (
        f"A chart was drawn: title {figure.title!r}, x label {figure.xlabel!r}, "
        f"y label {figure.ylabel!r}, {figure.artists} artists."
    )


def _cut_middle(text: str, limit: int) -> str:
    """Keep the start and the end (where errors and totals usually are) within ``limit``."""
    limit = max(limit, 80)
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit} characters cut ...]\n"
    keep = limit - len(marker)
    return text[: keep // 2] + marker + text[len(text) - (keep - keep // 2) :]
