"""The InfiAgent-DABench format: questions, labels, and the rule that scores an answer.

A question (one JSON object per line) has ``id``, ``question``, ``constraints``,
``format``, ``file_name``, ``level`` and ``concepts``; a label has ``id`` and
``common_answers`` as ``[[name, value], ...]`` (labels may also sit in the question
lines). An answer is the text the run printed; it holds ``@name[value]`` pairs. A
sub-answer is right when its value equals the label's as a string, or both parse as
numbers that differ by less than 1e-6; a question is right when all its sub-answers are.
This is DABench's own rule, so figures here compare with published ones.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

#: DABench's answer pattern: ``@name[value]`` (the value runs to the first ``]``)
ANSWER = re.compile(r"@(\w+)\[(.*?)\]")
#: how far apart two numbers may be and still be the same answer
TOLERANCE = 1e-6


@dataclass(frozen=True)
class Question:
    """One question of the set, with the answers it expects (name -> value)."""

    id: str
    question: str
    file_name: str
    constraints: str = ""
    format: str = ""
    level: str = ""
    concepts: tuple[str, ...] = ()
    expected: tuple[tuple[str, str], ...] = ()

    def prompt(self) -> str:
        """What is asked: the question, its constraints and the answer format, as DABench."""
        parts = [
            self.question.strip(),
            f"The table {self.file_name} is loaded as the DataFrame `df`.",
        ]
        if self.constraints.strip():
            parts.append("Constraints: " + self.constraints.strip())
        if self.format.strip():
            parts.append(
                "Answer format: "
                + self.format.strip()
                + "\nPrint the final answer with print(), exactly in this format."
            )
        return "\n\n".join(parts)


@dataclass(frozen=True)
class Score:
    """How an answer text compares with a question's expected answers."""

    got: dict[str, str] = field(default_factory=dict)
    right: tuple[str, ...] = ()  # names answered correctly
    missing: tuple[str, ...] = ()  # names with no @name[...] in the text
    wrong: tuple[str, ...] = ()  # names answered with another value

    @property
    def all_right(self) -> bool:
        return not self.missing and not self.wrong


def extract_answers(text: str) -> dict[str, str]:
    """The ``@name[value]`` pairs of ``text``; a name given twice keeps its last value."""
    return {name: value for name, value in ANSWER.findall(text)}


def same_value(got: str | None, expected: str) -> bool:
    """DABench equality: the same string, or two numbers less than 1e-6 apart."""
    if got is None:
        return False
    if got == expected:
        return True
    try:
        a, b = float(got), float(expected)
    except ValueError:
        return False
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) < TOLERANCE


def score(text: str, expected: Iterable[tuple[str, str]]) -> Score:
    """Score an answer text against ``expected`` (name, value) pairs."""
    got = extract_answers(text)
    right, missing, wrong = [], [], []
    for name, value in expected:
        if name not in got:
            missing.append(name)
        elif same_value(got[name], value):
            right.append(name)
        else:
            wrong.append(name)
    return Score(got=got, right=tuple(right), missing=tuple(missing), wrong=tuple(wrong))


def read_jsonl(path: str | Path, what: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file; a bad line is a UsageError naming it."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UsageError(f"the {what} file {str(path)!r} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"the {what} file {str(path)!r} cannot be read: {exc}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"line {number} of {path.name} is not valid JSON: {exc.msg}.",
                hint=f"The {what} file must hold one JSON object per line (JSON Lines).",
            ) from None
        if not isinstance(record, dict):
            raise UsageError(f"line {number} of {path.name} is not a JSON object.")
        records.append(record)
    return records


def load_questions(questions: str | Path, labels: str | Path | None = None) -> list[Question]:
    """Read a DABench question file (and its labels) into :class:`Question` records.

    Every question must have a label, from ``labels`` or a ``common_answers`` field of
    its own: a question that cannot be scored is a UsageError, not a silent miss.
    """
    rows = read_jsonl(questions, "questions")
    answers: dict[str, Any] = {}
    for row in rows:
        if "common_answers" in row and "id" in row:
            answers[str(row["id"])] = row["common_answers"]
    if labels is not None:
        for row in read_jsonl(labels, "labels"):
            if "id" not in row or "common_answers" not in row:
                raise UsageError(
                    f"a label in {Path(labels).name} has no 'id' or no 'common_answers'.",
                    hint='Each label line looks like {"id": 1, "common_answers": [["mean", '
                    '"2.5"]]}.',
                )
            answers[str(row["id"])] = row["common_answers"]
    out: list[Question] = []
    seen: set[str] = set()
    unlabelled: list[str] = []
    for number, row in enumerate(rows, 1):
        for key in ("id", "question", "file_name"):
            if key not in row:
                raise UsageError(f"question {number} of {Path(questions).name} has no {key!r}.")
        qid = str(row["id"])
        if qid in seen:
            raise UsageError(f"the question id {qid} appears twice in {Path(questions).name}.")
        seen.add(qid)
        if qid not in answers:
            unlabelled.append(qid)
            continue
        out.append(
            Question(
                id=qid,
                question=str(row["question"]),
                file_name=str(row["file_name"]),
                constraints=str(row.get("constraints") or ""),
                format=str(row.get("format") or ""),
                level=str(row.get("level") or "unknown"),
                concepts=_concepts(row.get("concepts")),
                expected=_pairs(answers[qid], qid),
            )
        )
    if unlabelled:
        shown = ", ".join(unlabelled[:10]) + (" …" if len(unlabelled) > 10 else "")
        raise UsageError(
            f"{len(unlabelled)} question(s) have no label: {shown}.",
            hint="Give the labels file with --labels LABELS.jsonl (DABench: da-dev-labels.jsonl).",
        )
    return out


def select(
    questions: list[Question], *, ids: Iterable[str] | None = None, limit: int | None = None
) -> list[Question]:
    """The questions named by ``ids`` (in file order), then at most ``limit`` of them."""
    chosen = questions
    if ids is not None:
        wanted = [str(i) for i in ids]
        known = {q.id for q in questions}
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise UsageError(f"no question with id {', '.join(unknown)} in the questions file.")
        keep = set(wanted)
        chosen = [q for q in questions if q.id in keep]
    if limit is not None:
        chosen = chosen[:limit]
    return chosen


def _concepts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(c.strip() for c in value.split(",") if c.strip())
    if isinstance(value, list):
        return tuple(str(c) for c in value)
    return ()


def _pairs(value: Any, qid: str) -> tuple[tuple[str, str], ...]:
    problem = UsageError(
        f"the label of question {qid} is not a list of [name, value] pairs.",
        hint='DABench labels look like "common_answers": [["mean_fare", "34.65"]].',
    )
    if not isinstance(value, list) or not value:
        raise problem
    pairs = []
    for item in value:
        if not isinstance(item, list | tuple) or len(item) != 2:
            raise problem
        pairs.append((str(item[0]), str(item[1])))
    return tuple(pairs)


def expected_dict(question: Question) -> Mapping[str, str]:
    """The expected answers as a mapping, for reports."""
    return dict(question.expected)
