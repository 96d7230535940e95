"""``python -m dataagent_jupyter.eval`` end to end: a small DABench-style question set and
tables written by the test, the real pipeline (loader, session, sandbox child, fix loop)
and the scripted LLM server as the endpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from llm_server import LLMServer, Reply, Request, code_answer, tool_call

from dataagent_jupyter.eval import main
from dataagent_jupyter.eval.dabench import extract_answers, load_questions, same_value, score

pytestmark = pytest.mark.kernel

QUESTIONS = [
    {
        "id": 1,
        "question": "Q1 What is the mean of x?",
        "constraints": "Use all rows.",
        "format": "@mean_x[value] rounded to 2 decimals",
        "file_name": "nums.csv",
        "level": "easy",
        "concepts": ["Summary Statistics"],
    },
    {
        "id": 2,
        "question": "Q2 Largest x and the name of the first row?",
        "constraints": "",
        "format": "@max_x[value] @first[name]",
        "file_name": "nums.csv",
        "level": "medium",
        "concepts": ["Summary Statistics", "Data Preprocessing"],
    },
    {
        "id": 3,
        "question": "Q3 How many rows?",
        "constraints": "",
        "format": "@rows[count]",
        "file_name": "nums.csv",
        "level": "easy",
        "concepts": ["Summary Statistics"],
    },
    {
        "id": 4,
        "question": "Q4 Share of rows with x above 3?",
        "constraints": "",
        "format": "@share[fraction]",
        "file_name": "nums.csv",
        "level": "hard",
        "concepts": ["Distribution Analysis"],
    },
    {
        "id": 5,
        "question": "Q5 Mean of y?",
        "constraints": "",
        "format": "@mean_y[value]",
        "file_name": "missing.csv",
        "level": "easy",
        "concepts": ["Summary Statistics"],
    },
    {
        "id": 6,
        "question": "Q6 Correlation of x and z?",
        "constraints": "",
        "format": "@corr[value]",
        "file_name": "nums.csv",
        "level": "hard",
        "concepts": ["Correlation Analysis"],
    },
]
LABELS = [
    {"id": 1, "common_answers": [["mean_x", "2.50"]]},
    {"id": 2, "common_answers": [["max_x", "4"], ["first", "alice"]]},
    {"id": 3, "common_answers": [["rows", "4"]]},
    {"id": 4, "common_answers": [["share", "0.3333333333"]]},
    {"id": 5, "common_answers": [["mean_y", "1"]]},
    {"id": 6, "common_answers": [["corr", "1.0"]]},
]
# what the "model" answers, by question; a fix request gets the second entry
ANSWERS = {
    "Q1": ["print(f\"@mean_x[{df['x'].mean():.2f}]\")"],
    "Q2": ["df.plot(y='x')\nprint(f\"@max_x[{df['x'].max()}] @first[{df['name'].iloc[1]}]\")"],
    "Q3": ["print('there are', len(df), 'rows')"],
    "Q4": [
        "print(df['no_such_column'].mean())",
        "print(f\"@share[{(df['x'] > 2.5).mean() - 1/6}]\")",
    ],
    "Q6": ["df['z'].corr(df['x'])"] * 3,
}


def asked_about(request: Request) -> str:
    """The question (Q1 … Q6) a request asks."""
    found = re.search(r"Question: (Q\d)", request.text)
    assert found, request.text
    return found.group(1)


def route(request: Request) -> Reply:
    """Answer by the question a request is about; fix requests get the fixed code."""
    key = asked_about(request)
    fixes = sum("raised an error" in str(m["content"]) for m in request.messages)
    code = ANSWERS[key][min(fixes, len(ANSWERS[key]) - 1)]
    return Reply(text=code_answer(code), prompt_tokens=100, completion_tokens=20)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "nums.csv").write_text("x,name\n1,alice\n2,bob\n3,carol\n4,dan\n")
    (tmp_path / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in QUESTIONS))
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps(a) for a in LABELS))
    return tmp_path


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch):
    with LLMServer(default=route) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key or "")
        yield server


def questions_asked(server: LLMServer) -> set[str]:
    return {asked_about(r) for r in server.chat_requests()}


def test_scores_each_question_and_says_why_it_missed(
    dataset: Path, endpoint: LLMServer, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dataset / "report"
    status = main(
        [
            str(dataset / "questions.jsonl"),
            "--tables",
            str(dataset / "tables"),
            "--labels",
            str(dataset / "labels.jsonl"),
            "--out",
            str(out),
            "--jobs",
            "2",
            "--model",
            "test-model",
            "--price",
            "1",
            "2",
        ]
    )
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert printed.out.rstrip().splitlines()[-2] == "accuracy: 2/6 (33.3%)"
    assert "6/6" in printed.err  # the progress reached the end
    report = json.loads((out / "report.json").read_text())
    by_id = {q["id"]: q for q in report["questions"]}
    assert [q["id"] for q in report["questions"]] == ["1", "2", "3", "4", "5", "6"]
    assert by_id["1"]["right"] and by_id["1"]["got"] == {"mean_x": "2.50"}
    assert by_id["2"]["reason"] == "wrong value" and "expected 'alice'" in by_id["2"]["detail"]
    assert (by_id["2"]["sub_right"], by_id["2"]["sub_total"]) == (1, 2)
    assert by_id["3"]["reason"] == "missing answer" and "@rows[...]" in by_id["3"]["detail"]
    # raised, was fixed, and 1/3 - 1/6 + ... is within DABench's 1e-6 of the label
    assert by_id["4"]["right"] and by_id["4"]["fix_attempts"] == 1
    assert by_id["5"]["reason"] == "load error" and "missing.csv" in by_id["5"]["detail"]
    assert by_id["6"]["reason"] == "code error" and by_id["6"]["fix_attempts"] == 2
    assert "KeyError" in by_id["6"]["detail"]
    summary = report["summary"]
    assert summary["by_level"]["easy"] == {"right": 1, "total": 3, "accuracy": 33.33}
    assert summary["by_concept"]["Distribution Analysis"]["right"] == 1
    assert summary["sub_answers"] == {"right": 3, "total": 7, "accuracy": 42.86}
    # every LLM request was counted: 1+1+1+2+0+3 requests of 100 in / 20 out tokens
    assert len(endpoint.chat_requests()) == 8
    assert (summary["tokens_in"], summary["tokens_out"]) == (800, 160)
    assert summary["cost_usd"] == pytest.approx((800 * 1 + 160 * 2) / 1e6)
    assert summary["fix_attempts"] == 3 and summary["latency_p95"] >= summary["latency_median"]
    assert summary["misses"] == {
        "wrong value": 1,
        "missing answer": 1,
        "code error": 1,
        "load error": 1,
    }
    assert len(list((out / "charts").rglob("*.png"))) == 1  # Q2's chart, beside the report
    md = (out / "report.md").read_text()
    assert "**accuracy: 2/6 (33.3%)**" in md and "| 3 | easy | missing answer |" in md
    # the model saw the table described as `df`, the constraints and the format
    asked = next(r for r in endpoint.chat_requests() if "Q1" in r.text).text
    assert "Use all rows." in asked and "@mean_x[value]" in asked and "df" in asked
    assert "alice" in asked  # privacy 'sample' sends sampled values


def test_resume_asks_only_what_is_not_in_the_report(
    dataset: Path, endpoint: LLMServer, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dataset / "report"
    common = [
        str(dataset / "questions.jsonl"),
        "--tables",
        str(dataset / "tables"),
        "--labels",
        str(dataset / "labels.jsonl"),
        "--out",
        str(out),
        "--privacy",
        "schema",
    ]
    assert main([*common, "--ids", "1,3"]) == 0
    assert questions_asked(endpoint) == {"Q1", "Q3"}
    assert "alice" not in "".join(r.text for r in endpoint.chat_requests())  # schema: no values
    endpoint.requests.clear()
    assert main([*common, "--resume", "--limit", "4"]) == 0
    assert questions_asked(endpoint) == {"Q2", "Q4"}
    printed = capsys.readouterr().out
    assert "resuming: 2 question(s)" in printed
    assert printed.rstrip().splitlines()[-2] == "accuracy: 2/4 (50.0%)"
    # another privacy level into the same folder would mix two measurements: refused
    assert main([*common[:-1], "sample", "--resume"]) == 2
    assert "made with model=gpt-4o-mini, mode=run, privacy=schema" in capsys.readouterr().err


# agent mode: each question is one step (a run_python tool call) and a written summary
AGENT_STEPS = {
    "Q1": ("print(f\"@mean_x[{df['x'].mean():.2f}]\")", "The mean of x is as printed."),
    "Q2": ("print(f\"@max_x[{df['x'].max()}]\")", "The first row's name is @first[bob]."),
}


def agent_route(request: Request) -> Reply:
    """First request of a question: a step; once the step's output came back: the summary."""
    step, summary = AGENT_STEPS[asked_about(request)]
    if not any(m.get("role") == "tool" for m in request.messages):
        return Reply(tool_calls=[tool_call("run_python", code=step)])
    return Reply(text=summary)


def test_agent_mode_scores_what_the_steps_printed_and_the_summary(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dataset / "agent"
    with LLMServer(default=agent_route) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", server.api_key or "")
        status = main(
            [
                str(dataset / "questions.jsonl"),
                "--tables",
                str(dataset / "tables"),
                "--labels",
                str(dataset / "labels.jsonl"),
                "--ids",
                "1,2",
                "--mode",
                "agent",
                "--out",
                str(out),
            ]
        )
        requests = server.chat_requests()
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert printed.out.rstrip().splitlines()[-2] == "accuracy: 1/2 (50.0%)"
    by_id = {q["id"]: q for q in json.loads((out / "report.json").read_text())["questions"]}
    # Q1's answer was only printed by its step; Q2's second answer only written in the summary
    assert by_id["1"]["right"] and by_id["1"]["got"] == {"mean_x": "2.50"}
    assert by_id["2"]["reason"] == "wrong value"
    assert by_id["2"]["got"] == {"max_x": "4", "first": "bob"}
    # two requests a question, with the tools offered; the step's output went back to the model
    assert len(requests) == 4 and all(r.body.get("tools") for r in requests)
    back = [m for r in requests for m in r.messages if m.get("role") == "tool"]
    assert any("@mean_x[2.50]" in str(m["content"]) for m in back)


def test_command_line_errors_are_messages_not_tracebacks(dataset: Path, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        return subprocess.run(
            [sys.executable, "-m", "dataagent_jupyter.eval", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    q, t = str(dataset / "questions.jsonl"), str(dataset / "tables")
    agent = run(q, "--tables", t, "--labels", str(dataset / "labels.jsonl"), "--mode", "agent",
                "--out", str(tmp_path / "agent"))  # fmt: skip
    assert "Traceback" not in agent.stderr
    # the mode goes through to the session: here it stops at the missing key
    assert agent.returncode == 1 and "No API key" in agent.stderr
    unlabelled = run(q, "--tables", t)
    assert unlabelled.returncode == 2 and "6 question(s) have no label" in unlabelled.stderr
    assert "--labels" in unlabelled.stderr
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\nnot json\n')
    bad = run(str(tmp_path / "bad.jsonl"), "--tables", t)
    assert bad.returncode == 2 and "line 2 of bad.jsonl is not valid JSON" in bad.stderr
    # no key and no endpoint: the run stops at the first question with the usual message
    nokey = run(
        q, "--tables", t, "--labels", str(dataset / "labels.jsonl"), "--out", str(tmp_path / "r")
    )
    assert nokey.returncode == 1 and "No API key" in nokey.stderr
    assert "Traceback" not in nokey.stderr and "accuracy: 0/0" in nokey.stdout


def test_dabench_scoring_rule() -> None:
    text = "@mean[2.5000001] @city[Paris] junk @n[3]\n@n[4]"
    assert extract_answers(text) == {"mean": "2.5000001", "city": "Paris", "n": "4"}
    assert same_value("2.5000001", "2.5") and not same_value("2.50001", "2.5")
    assert same_value("Paris", "Paris") and not same_value("paris", "Paris")
    assert not same_value(None, "1") and not same_value("nan", "nan ")
    marks = score(text, [("mean", "2.5"), ("city", "Rome"), ("gone", "1")])
    assert (marks.right, marks.wrong, marks.missing) == (("mean",), ("city",), ("gone",))
    assert not marks.all_right


def test_labels_may_sit_in_the_questions_file(tmp_path: Path) -> None:
    rows = [{**QUESTIONS[0], "common_answers": [["mean_x", "2.5"]]}]
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(rows[0]) + "\n")
    (question,) = load_questions(path)
    assert question.expected == (("mean_x", "2.5"),) and question.concepts == (
        "Summary Statistics",
    )
    assert "Constraints: Use all rows." in question.prompt()
