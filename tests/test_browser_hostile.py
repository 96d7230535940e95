"""Hostile model text and child output in a real JupyterLab: shown, never run.

One page load covers the three front ends (the ``%%ask`` cell, the chat widget, the side
panel) and the five sources of issue 9: (a) the model's explanation, (b) the child's
``display(HTML(...))``, (c) its SVG, (d) its ``display(Markdown(...))``, (e) a column name
and a cell value of the frame. Every payload, if it ran, would add its tag to
``window.__dataagent_pwned`` and write ``pwned-<tag>.txt`` through the contents API; the
test finds neither, and finds the DataFrame table and the chart of the same answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    CELLS,
    CHROMIUM,
    LabServer,
    ask,
    chromium_page,
    lab_for,
    open_notebook,
    open_panel,
    wait_kernel_idle,
)
from llm_server import LLMServer, Reply, Request, code_answer
from markup_payloads import cell_payload, html_payload, markdown_payload, svg_payload
from playwright.sync_api import expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is not installed (apt-get install -y chromium)",
    ),
]

SETUP = (
    "%load_ext dataagent\n"
    "import pandas as pd\n"
    f"df = pd.DataFrame({{{cell_payload('column')!r}: [{cell_payload('value')!r}, 'plain'], "
    "'n': [1, 2]})"
)


def run_code(where: str) -> str:
    """What the model proposes in run mode: every kind of hostile child output at once."""
    return (
        "from IPython.display import HTML, SVG, Markdown, Javascript, display\n"
        "import matplotlib.pyplot as plt\n"
        f"display(HTML({html_payload(f'{where}-html')!r}))\n"
        f"display(SVG({svg_payload(f'{where}-svg')!r}))\n"
        f"display(Markdown({markdown_payload(f'{where}-markdown')!r}))\n"
        f"display(Javascript({'window.__dataagent_pwned = [' + repr(where) + ']'!r}))\n"
        "plt.bar(['a', 'b'], df['n'])\n"
        "plt.show()\n"
        "result = df"
    )


def answer(request: Request) -> Reply:
    """The model's answer, chosen by the front end named in the question."""
    question = request.messages[-1]["content"].rstrip().rsplit("\n", 1)[-1]
    where = question.split()[-1]  # "... in the cell-run" -> "cell-run"
    explanation = markdown_payload(f"{where}-explanation")
    if where.endswith("run"):
        return Reply(text=code_answer(run_code(where), explanation))
    return Reply(text=code_answer("result = df['n'].sum()", explanation))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[LabServer, LLMServer]]:
    cells = [
        SETUP,
        "%%ask df\nexplain n in the cell-insert",
        "%%ask df --run\nshow everything in the cell-run",
        "import dataagent_jupyter\nchat = dataagent_jupyter.chat()\nchat",
    ]
    with LLMServer(default=answer) as llm, lab_for(tmp_path, llm, "hostile.ipynb", cells) as server:
        yield server, llm


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[Any]:
    with chromium_page(request) as pg:
        yield pg


def chat_ask(page: Any, question: str, mode: str) -> Any:
    """Ask in the chat widget, in ``mode``; the answer's locator once it is done."""
    page.locator(".dataagent-chat-mode button", has_text=mode).click()
    page.fill(".dataagent-chat-input textarea", question)
    page.click(".dataagent-chat-send")
    done = "Ran the code" if mode == "run" else "Answered"
    page.locator(".dataagent-chat-status", has_text=done).wait_for()
    return page.locator(".dataagent-chat-answer").last


def panel_ask(panel: Any, question: str, mode: str) -> Any:
    """Ask in the side panel, in ``mode``; the turn's locator once it is done."""
    ask(panel, question, mode=mode)
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn.locator(".jp-DataAgent-question")).to_have_text(question)
    expect(turn).to_have_attribute("data-state", "done", timeout=90_000)
    return turn


def nothing_ran(page: Any, server: LabServer) -> None:
    """No payload left a trace: no flag on ``window``, no file written through the API."""
    time.sleep(1.5)  # late handlers (load, toggle, animation begin) get their moment
    assert page.evaluate("() => window.__dataagent_pwned") is None
    names = [item["name"] for item in server.api("GET", "/api/contents")["content"]]
    assert not [n for n in names if n.startswith("pwned")], names


def test_hostile_payloads_are_shown_not_run(lab: tuple[LabServer, LLMServer], page: Any) -> None:
    server, llm = lab
    open_notebook(page, server, "hostile.ipynb")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(".dataagent-chat-input textarea", timeout=120_000)
    wait_kernel_idle(page, timeout=120_000)

    # the %%ask cells: (a) in insert mode, (a)-(e) in run mode
    cells = page.locator(CELLS)

    def cell(source: str) -> Any:
        return cells.filter(has=page.locator(".jp-InputArea", has_text=source))

    run_cell = cell("show everything in the cell-run")
    run_cell.locator(".jp-OutputArea-output table:has(td)").first.wait_for()
    run_cell.locator(".jp-OutputArea-output img[src^='data:image/png']").wait_for()
    insert_cell = cell("explain n in the cell-insert")
    insert_cell.locator(".jp-OutputArea-output strong", has_text="Bold").first.wait_for()
    nothing_ran(page, server)
    # shown as data: the hostile column name as text, the SVG as an image, a note for JS
    assert run_cell.locator(".jp-OutputArea-output th", has_text="<img src=").count() >= 1
    run_cell.locator(".jp-OutputArea-output img[src^='data:image/svg+xml']").wait_for()
    assert "application/javascript" in run_cell.inner_text()

    # the chat widget: the same, asked in both modes
    chat_ask(page, "explain n in the widget-insert", "insert")
    widget_run = chat_ask(page, "show everything in the widget-run", "run")
    widget_run.locator(".dataagent-chat-results table:has(td)").first.wait_for()
    widget_run.locator(".dataagent-chat-results img[src^='data:image/png']").wait_for()
    nothing_ran(page, server)
    assert widget_run.locator("th", has_text="<img src=").count() >= 1
    widget_run.locator(".dataagent-chat-results img[src^='data:image/svg+xml']").wait_for()

    # the side panel
    panel = open_panel(page)
    panel_ask(panel, "explain n in the panel-insert", "insert")
    panel_run = panel_ask(panel, "show everything in the panel-run", "run")
    panel_run.locator(".jp-DataAgent-outputs table:has(td)").first.wait_for()
    panel_run.locator(".jp-DataAgent-outputs img").first.wait_for()
    assert panel_run.locator("th", has_text="<img src=").count() >= 1
    nothing_ran(page, server)
    assert len(llm.chat_requests()) >= 6  # every front end asked, in both modes
