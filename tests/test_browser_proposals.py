"""Run All twice in a real JupyterLab: proposals do not stack, and carry their provenance.

A notebook with two insert-mode ``%%ask`` cells is run twice with Run All; the second
pass is answered from the response cache and leaves the notebook as the first left it.
A proposal the user edited is kept (the new one goes above it) and the asking cell's
status line says so. An ``%%ask --agent`` cell proposes its analysis as separate cells
(the question and summary in Markdown, then each step that worked), not stacked either.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    CHROMIUM,
    NOTEBOOK,
    LabServer,
    chromium_page,
    lab_for,
    open_notebook,
    wait_kernel_idle,
)
from llm_server import LLMServer, Reply, Request, code_answer, tool_call

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed"),
]

SETUP = (
    "import pandas as pd\n"
    "sales = pd.DataFrame({'region': ['N', 'S', 'N'], 'revenue': [1.0, 2.5, 4.0]})\n"
    "%load_ext dataagent"
)
ASK_1 = "%%ask sales\nrevenue per region?"
ASK_2 = "%%ask sales\nhow many rows?"


def answer(request: Request) -> Reply:
    """A different answer per question, so the two proposals differ."""
    question = request.messages[-1]["content"].rsplit("Question: ", 1)[-1]
    return Reply(text=code_answer(f"result = {len(question)}  # {question}", "Here it is."))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[LabServer, LLMServer]]:
    cells = [SETUP, ASK_1, ASK_2]
    with LLMServer(default=answer) as llm, lab_for(tmp_path, llm, "runall.ipynb", cells) as server:
        yield server, llm


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[Any]:
    with chromium_page(request) as pg:
        yield pg


def run_all(page: Any) -> None:
    """Run All, as the menu does; returns once every cell has run."""
    page.evaluate(
        "async () => { await window.jupyterapp.commands.execute('notebook:run-all-cells'); }"
    )
    wait_kernel_idle(page)


def cells(page: Any) -> list[dict[str, Any]]:
    return page.evaluate(
        f"""() => {NOTEBOOK}.content.model.sharedModel.cells.map(c => ({{
            id: c.id,
            source: c.getSource(),
            dataagent: c.getMetadata('dataagent') || null,
            outputs: c.cell_type === 'code'
                ? c.getOutputs().map(o => [].concat((o.data || {{}})['text/plain'] || []).join(''))
                : [],
        }}))"""
    )


def test_run_all_twice_keeps_the_cell_count(lab, page) -> None:
    server, llm = lab
    open_notebook(page, server, "runall.ipynb")
    run_all(page)
    first = cells(page)
    assert len(first) == 5
    assert [first[i]["source"] for i in (0, 1, 3)] == [SETUP, ASK_1, ASK_2]
    proposals = [first[2], first[4]]
    assert proposals[0]["source"].startswith("# dataagent: revenue per region?\n")
    assert proposals[1]["source"].startswith("# dataagent: how many rows?\n")
    for proposal, asking, question in zip(
        proposals, (first[1], first[3]), ("revenue per region?", "how many rows?"), strict=True
    ):
        record = proposal["dataagent"]
        assert record["question"] == question
        assert record["model"] == "gpt-4o-mini"
        assert record["turn_id"] and record["asked_at"]
        assert record["asked_in"] == asking["id"]
    assert len(llm.chat_requests()) == 2

    run_all(page)
    second = cells(page)
    assert len(second) == 5  # nothing stacked
    assert [c["source"] for c in second] == [c["source"] for c in first]
    assert len(llm.chat_requests()) == 2  # answered from the cache
    assert any("from cache" in o for o in second[1]["outputs"])
    # the kept proposal now stands for the newest turn
    assert second[2]["dataagent"]["turn_id"] != first[2]["dataagent"]["turn_id"]

    # the user edits the first proposal, then runs everything again: the edit is kept
    page.evaluate(
        f"() => {NOTEBOOK}.content.model.sharedModel.cells[2].setSource('result = \"mine\"')"
    )
    run_all(page)
    third = cells(page)
    assert [c["source"] for c in third] == [
        SETUP,
        ASK_1,
        first[2]["source"],
        'result = "mine"',
        ASK_2,
        first[4]["source"],
    ]
    assert any("your edited version" in o for o in third[1]["outputs"])


def test_agent_cell_proposes_markdown_and_code_cells_below(lab, page) -> None:
    server, llm = lab
    ask = "%%ask sales --agent\nwhere does the revenue come from?"
    server.new_notebook("agent.ipynb", cells=[SETUP, ask])
    good = "result = sales.groupby('region')['revenue'].sum()"
    replies = (
        Reply(text="Totals first.", tool_calls=[tool_call("run_python", code=good)]),
        Reply(tool_calls=[tool_call("run_python", code="result = sales['nope']")]),
        "Region **N** brings most of the revenue.",
    )
    llm.script(*replies, *replies)  # the second pass may be answered from the cache
    open_notebook(page, server, "agent.ipynb")
    run_all(page)
    page.wait_for_function(f"() => {NOTEBOOK}.content.model.sharedModel.cells.length === 4")
    first = cells(page)
    kinds = page.evaluate(f"() => {NOTEBOOK}.content.model.sharedModel.cells.map(c => c.cell_type)")
    assert kinds == ["code", "code", "markdown", "code"]
    assert [c["source"] for c in first[:2]] == [SETUP, ask]
    summary, step = first[2]["source"], first[3]["source"]
    assert "> where does the revenue come from?" in summary
    assert "Region **N** brings most of the revenue." in summary
    assert step.strip() == good  # the failed step is left out, no # %% markers
    assert "# %%" not in summary + step
    for proposed in first[2:]:
        record = proposed["dataagent"]
        assert record["question"] == "where does the revenue come from?"
        assert record["asked_in"] == first[1]["id"]
    assert first[3]["outputs"] == []  # proposed for review: nothing ran in the notebook
    assert any("Analysis in 2 step(s) proposed below" in o for o in first[1]["outputs"])

    run_all(page)  # the same cell run again: the same proposal, not a second copy
    second = cells(page)
    assert [c["source"] for c in second] == [c["source"] for c in first]
    assert [c["id"] for c in second[2:]] == [c["id"] for c in first[2:]]
