"""House rules: DataAgent.instructions and DATAAGENT.md reach the system prompt."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from llm_server import LLMServer, code_answer

from dataagent_jupyter.rules import CUT_NOTE, RULES_FILE, find_rules_file, load_rules


@pytest.fixture
def sales(ip) -> pd.DataFrame:
    df = pd.DataFrame({"region": ["North", "South"], "amount": [10.0, 20.0]})
    ip.user_ns["sales"] = df
    ip.run_cell("pass")
    return df


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home folder holding project/analysis; the kernel works in analysis."""
    home = tmp_path / "home"
    work = home / "project" / "analysis"
    work.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home


def test_instructions_and_file_are_in_the_system_prompt(
    ip, llm_env: LLMServer, sales, project: Path
) -> None:
    (project / "project" / RULES_FILE).write_text(
        "# House rules\nThe fiscal year starts in April.\n", encoding="utf-8"
    )
    ip.run_line_magic("config", "DataAgent.instructions = 'Amounts are in EUR thousands.'")
    llm_env.script(code_answer("result = sales['amount'].sum()"))
    ip.run_cell_magic("ask", "sales", "total amount?")
    system = llm_env.chat_requests()[0].messages[0]["content"]
    assert "Amounts are in EUR thousands." in system
    assert "The fiscal year starts in April." in system
    # the user's text comes first, then the file
    assert system.index("EUR thousands") < system.index("fiscal year")


def test_nearest_file_wins_and_the_walk_stops_at_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = home / "a" / "b"
    work.mkdir(parents=True)
    (tmp_path / RULES_FILE).write_text("outside home", encoding="utf-8")
    assert find_rules_file(work, home) is None
    (home / RULES_FILE).write_text("home rules", encoding="utf-8")
    assert find_rules_file(work, home) == (home / RULES_FILE).resolve()
    (home / "a" / RULES_FILE).write_text("nearer", encoding="utf-8")
    assert find_rules_file(work, home) == (home / "a" / RULES_FILE).resolve()
    # a working folder outside home is searched alone, never its parents
    elsewhere = tmp_path / "srv" / "job"
    elsewhere.mkdir(parents=True)
    assert find_rules_file(elsewhere, home) is None


def test_a_file_too_large_is_cut_with_a_note_and_counts_against_the_budget(
    ip, llm_env: LLMServer, sales, project: Path
) -> None:
    work = Path(os.getcwd())
    lines = [f"Rule {i}: column c{i} is measured in units of {i}." for i in range(5000)]
    (work / RULES_FILE).write_text("\n".join(lines), encoding="utf-8")
    ip.run_line_magic("config", "DataAgent.max_prompt_tokens = 2000")
    llm_env.script(code_answer("result = 1"))
    ip.run_cell_magic("ask", "sales", "anything?")
    system = llm_env.chat_requests()[0].messages[0]["content"]
    assert "Rule 0:" in system and CUT_NOTE in system
    assert "Rule 4999:" not in system
    rules = load_rules("", budget_tokens=500, start=work, home=project)
    assert rules.cut and rules.tokens <= 500
    assert rules.file_bytes == (work / RULES_FILE).stat().st_size
    # the frames still made it into the prompt: the rules took only their share
    assert "### sales" in llm_env.chat_requests()[0].messages[-1]["content"]


def test_status_shows_which_file_was_read(ip, project: Path, capsys) -> None:
    path = Path(os.getcwd()) / RULES_FILE
    path.write_text("Never drop rows silently.\n", encoding="utf-8")
    ip.run_line_magic("dataagent", "status")
    shown = capsys.readouterr().out
    assert str(path.resolve()) in shown
    assert f"({path.stat().st_size} bytes)" in shown


def test_no_rules_leaves_the_prompt_as_before(ip, llm_env: LLMServer, sales, project) -> None:
    llm_env.script(code_answer("result = 1"))
    ip.run_cell_magic("ask", "sales", "anything?")
    system = llm_env.chat_requests()[0].messages[0]["content"]
    assert "house rules" not in system
    assert system.rstrip().endswith("do not use input().")
