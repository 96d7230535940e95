"""The chat widget in a real JupyterLab, in headless Chromium, against the scripted LLM server.

What a user does: open a notebook, show the chat, type a question, press Send, read the
answer, press "Insert cell" and find the code in a new cell below the chat. Where the
project's labextension is not installed the insert ends in the documented fallback
(``%dataagent insert`` in any cell), and that path is followed instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    CHROMIUM,
    KERNEL_QUIET_JS,
    LabServer,
    chromium_page,
    docs_screenshot,
    lab_for,
)
from llm_server import LLMServer, Reply, code_answer
from playwright.sync_api import expect

from dataagent_jupyter.widget import FALLBACK_INSERT

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is not installed (apt-get install -y chromium)",
    ),
]

CODE = "result = sales.groupby('region')['revenue'].sum().sort_values(ascending=False)"
EXPLANATION = "Group by region and add up the revenue."

# what the notebook holds before the test runs it
SETUP = (
    "import pandas as pd\n"
    "sales = pd.DataFrame({'region': ['North', 'South', 'North'], 'revenue': [10.0, 20.0, 30.0]})"
)
SHOW = "import dataagent_jupyter\ndataagent_jupyter.chat()"

# small JS helpers evaluated in the page (JupyterLab is exposed as window.jupyterapp)
CELLS_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  return panel.content.model.sharedModel.cells.map(c => c.getSource());
}"""
HAS_LABEXTENSION_JS = """() => {
  const config = JSON.parse(document.getElementById('jupyter-config-data').textContent);
  const name = 'dataagent-jupyter';
  return (config.federated_extensions || []).some(e => e.name === name)
    && !(config.disabledExtensions || []).includes(name);
}"""


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LabServer, LLMServer]]:
    """JupyterLab with a notebook ready to show the chat, and the LLM server it talks to.

    Parametrized indirectly with "without-labextension" it serves the same page with the
    project's labextension turned off: a front end that cannot insert cells for a button.
    """
    variant = getattr(request, "param", "")
    without = variant == "without-labextension"
    with (
        LLMServer(default=Reply(text=code_answer(CODE, EXPLANATION), chunk_delay=0.02)) as llm,
        lab_for(
            tmp_path,
            llm,
            "chat.ipynb",
            [SETUP, SHOW],
            disabled_labextensions=("dataagent-jupyter",) if without else (),
            app="notebook" if variant == "notebook7" else "lab",
        ) as server,
    ):
        yield server, llm


@pytest.fixture
def page(request: pytest.FixtureRequest) -> Iterator[Any]:
    with chromium_page(request) as pg:
        yield pg


def open_chat(server: LabServer, page: Any) -> None:
    """Open the notebook, wait for its kernel, run every cell: the chat shows."""
    where = "lab/tree" if server.app == "lab" else "notebooks"
    page.goto(f"{server.url}/{where}/chat.ipynb")
    page.wait_for_selector(".jp-Notebook .jp-Cell")
    page.wait_for_function(KERNEL_QUIET_JS)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(".dataagent-chat-input textarea")


def ask(page: Any, question: str) -> Any:
    """Type ``question``, press Send, wait for the answer; the answer's locator."""
    page.fill(".dataagent-chat-input textarea", question)
    page.click(".dataagent-chat-send")
    page.locator(".dataagent-chat-status", has_text="Answered").wait_for()
    return page.locator(".dataagent-chat-answer").last


@pytest.mark.parametrize("lab", ["with-labextension", "notebook7"], indirect=True)
def test_chat_answers_and_inserts_a_cell(lab: tuple[LabServer, LLMServer], page: Any) -> None:
    server, llm = lab
    open_chat(server, page)
    # the widget renders, with the live frame listed
    frames = page.locator(".dataagent-chat-frames select option")
    frames.first.wait_for()
    # ipywidgets shows spaces in option labels as no-break spaces
    assert [t.replace("\xa0", " ") for t in frames.all_inner_texts()] == [
        "sales  (DataFrame, 3 × 2)"
    ]
    # a question gets an answer, with highlighted code and the actions
    answer = ask(page, "which region sells most?")
    # Markdown renders asynchronously: expect() waits for it
    expect(page.locator(".dataagent-chat-user")).to_have_text("which region sells most?")
    expect(answer).to_contain_text(EXPLANATION)
    code = answer.locator("pre", has_text="sort_values")
    expect(code).to_have_text(CODE)
    expect(code.locator("span").first).to_be_visible()  # the front end highlighted it
    sent = llm.chat_requests()[-1].messages[-1]["content"]
    assert "### sales" in sent and sent.rstrip().endswith("which region sells most?")
    expect(page.locator(".dataagent-chat-input textarea")).to_have_value("")

    assert page.evaluate(CELLS_JS) == [SETUP, SHOW]
    assert page.evaluate(HAS_LABEXTENSION_JS), "the labextension is not loaded"
    page.click(".dataagent-chat-insert")
    expected = f"# dataagent: which region sells most?\n{CODE}\n"
    # the labextension inserts the cell right below the chat's cell
    answer.get_by_text("Inserted a new cell below the chat").wait_for()
    assert page.evaluate(CELLS_JS) == [SETUP, SHOW, expected]
    if server.app == "lab":
        docs_screenshot(page, "chat-widget")


@pytest.mark.parametrize("lab", ["without-labextension"], indirect=True)
def test_insert_fallback_without_the_labextension(
    lab: tuple[LabServer, LLMServer], page: Any
) -> None:
    server, _llm = lab
    open_chat(server, page)
    assert not page.evaluate(HAS_LABEXTENSION_JS)
    answer = ask(page, "which region sells most?")
    page.click(".dataagent-chat-insert")
    # JupyterLab closes a comm to an unknown target: the fallback shows at once
    answer.get_by_text(FALLBACK_INSERT.split(";")[0]).wait_for()
    # ... and does what it says: the magic in a new cell puts the code in the cell below
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:insert-cell-below')")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:enter-edit-mode')")
    page.keyboard.insert_text("%dataagent insert")
    page.keyboard.press("Control+Enter")  # run it, without adding a cell after it
    page.wait_for_function(f"() => ({CELLS_JS})().length === 4")
    expected = f"# dataagent: which region sells most?\n{CODE}\n"
    assert page.evaluate(CELLS_JS) == [SETUP, SHOW, "%dataagent insert", expected]


def test_copy_box_selects_the_code(lab: tuple[LabServer, LLMServer], page: Any) -> None:
    server, _llm = lab
    open_chat(server, page)
    ask(page, "copy it")
    page.click(".dataagent-chat-copy-button")
    box = page.locator("textarea.dataagent-chat-copy")
    expect(box).to_have_value(CODE)
    assert box.get_attribute("readonly") is not None
    box.click()
    selected = page.evaluate(
        "() => { const t = document.querySelector('textarea.dataagent-chat-copy');"
        " return t.value.substring(t.selectionStart, t.selectionEnd); }"
    )
    assert selected == CODE


def test_enter_sends_and_shift_enter_adds_a_line(
    lab: tuple[LabServer, LLMServer], page: Any
) -> None:
    server, llm = lab
    open_chat(server, page)
    page.click(".dataagent-chat-input textarea")
    page.keyboard.insert_text("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.insert_text("second line")
    assert page.locator(".dataagent-chat-input textarea").input_value() == "first line\nsecond line"
    assert llm.chat_requests() == []
    page.keyboard.press("Enter")
    expect(page.locator(".dataagent-chat-user")).to_have_text(
        "first line\nsecond line", timeout=5_000
    )
