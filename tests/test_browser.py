"""The Data Agent side panel in a real JupyterLab, driven in headless Chromium.

Everything is real except the LLM: a scripted OpenAI-compatible server in this process,
reached by the notebook kernels through OPENAI_BASE_URL. On failure a screenshot, the
browser console and the server log are saved in test-artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    ARTIFACTS,
    CELLS,
    CHROMIUM,
    CHROMIUM_ARGS,
    LABEXTENSION,
    LabServer,
    ask,
    cell_sources,
    docs_screenshot,
    open_notebook,
    open_panel,
    run_in_last_cell,
    wait_kernel_idle,
)
from llm_server import LLMServer, Reply, code_answer, tool_call

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

if not CHROMIUM.exists():
    pytest.skip(
        "/usr/bin/chromium is missing (apt-get install -y chromium)", allow_module_level=True
    )

expect: Any
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    pytest.skip("python playwright is not installed", allow_module_level=True)

SALES = (
    "import pandas as pd\n"
    "sales = pd.DataFrame({'region': ['N', 'S', 'N'], 'revenue': [1.0, 2.5, 4.0]})"
)


@pytest.fixture(scope="module")
def llm() -> Iterator[LLMServer]:
    with LLMServer() as server:
        yield server


@pytest.fixture(scope="module")
def lab(llm: LLMServer) -> Iterator[LabServer]:
    if not (LABEXTENSION / "package.json").exists():
        pytest.fail("the labextension is not built: run `jlpm build` in js/ (or pip install -e .)")
    base = Path(tempfile.mkdtemp(prefix="dataagent-lab-"))
    server = LabServer(base, {"OPENAI_BASE_URL": llm.url, "OPENAI_API_KEY": llm.api_key or ""})
    try:
        yield server
    finally:
        server.delete_sessions()
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, lab: LabServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30000)
    pg = context.new_page()
    console: list[str] = []
    pg.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    pg.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    failed_before = request.session.testsfailed
    yield pg
    # DATAAGENT_SCREENSHOTS=1 keeps them for passing tests too (to look at the panel)
    if request.session.testsfailed > failed_before or os.environ.get("DATAAGENT_SCREENSHOTS"):
        ARTIFACTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        try:
            pg.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception as exc:  # the page may be gone
            console.append(f"(no screenshot: {exc})")
        (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console))
        (ARTIFACTS / f"{name}.jupyter-lab.log").write_text(lab.log())
    context.close()
    lab.delete_sessions()


def notebook_with_sales(page: Any, lab: LabServer, name: str) -> Any:
    """Open a new notebook, define ``sales`` by typing a cell, open the panel."""
    lab.new_notebook(name)
    open_notebook(page, lab, name)
    run_in_last_cell(page, SALES)
    return open_panel(page)


# --- tests ---------------------------------------------------------------------------


def test_ask_streams_an_answer_and_inserts_the_code(
    page: Any, lab: LabServer, llm: LLMServer
) -> None:
    panel = notebook_with_sales(page, lab, "insert.ipynb")
    # the sidebar tab, the palette entry, the header, the frames of this notebook's kernel
    expect(page.locator(".jp-SideBar [title='Data Agent']")).to_be_visible()
    page.keyboard.press("Control+Shift+C")
    page.keyboard.insert_text("Data Agent")
    expect(page.locator(".lm-CommandPalette-item", has_text="Open Data Agent")).to_be_visible()
    page.keyboard.press("Escape")
    expect(panel.locator(".jp-DataAgent-notebook")).to_contain_text("insert.ipynb")
    expect(panel.locator(".jp-DataAgent-notebook")).to_contain_text("Python 3")
    frame = panel.locator(".jp-DataAgent-frame[data-frame='sales']")
    expect(frame).to_contain_text("3 × 2")
    expect(panel.locator(".jp-DataAgent-statusText")).to_contain_text(
        f"gpt-4o-mini · 127.0.0.1:{llm.port}"
    )
    expect(panel.locator(".jp-DataAgent-keyWarning")).to_be_hidden()

    code = "result = sales.groupby('region')['revenue'].sum()\nresult"
    llm.script(
        Reply(
            text=code_answer(code, "Group by **region** and sum the revenue."),
            chunk_size=3,
            chunk_delay=0.04,
        )
    )
    frame.locator("input").check()
    ask(panel, "What is the revenue per region?")
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn.locator(".jp-DataAgent-question")).to_have_text("What is the revenue per region?")
    # streaming: the status line names the phase and ticks, Stop is offered
    expect(panel.locator(".jp-DataAgent-phase")).to_contain_text("Asking the model")
    expect(panel.locator(".jp-DataAgent-stop")).to_be_visible()
    expect(turn.locator(".jp-DataAgent-markdown")).to_contain_text("Group by")
    # the Markdown is rendered (bold), the code offered with its actions
    expect(turn.locator(".jp-DataAgent-markdown strong")).to_have_text("region")
    block = turn.locator(".jp-DataAgent-codeBlock")
    expect(block).to_contain_text("groupby('region')")
    expect(turn.locator(".jp-DataAgent-footer")).to_contain_text("gpt-4o-mini")
    expect(panel.locator(".jp-DataAgent-stop")).to_be_hidden()
    # only the ticked frame was described to the model
    assert "sales" in llm.chat_requests()[-1].text

    block.locator("[data-action='insert']").click()
    page.wait_for_function(
        "code => jupyterapp.shell.currentWidget.content.model.sharedModel.cells"
        ".some(c => c.getSource().trim() === code)",
        arg=code,
    )
    # Shift+Enter left the new empty cell active: the code goes right below it
    assert [s.strip() for s in cell_sources(page)] == [SALES, "", code]
    docs_screenshot(page, "panel-insert")

    # "Replace cell" rewrites the active cell (the empty one, once selected)
    page.locator(CELLS).nth(1).locator(".jp-InputPrompt").click()
    block.locator("[data-action='replace']").click()
    page.wait_for_function(
        "code => jupyterapp.shell.currentWidget.content.model.sharedModel.cells[1]"
        ".getSource().trim() === code",
        arg=code,
    )
    assert len(cell_sources(page)) == 3


def test_run_mode_shows_the_result_and_a_chart(page: Any, lab: LabServer, llm: LLMServer) -> None:
    panel = notebook_with_sales(page, lab, "run.ipynb")
    expect(panel.locator(".jp-DataAgent-frame[data-frame='sales']")).to_be_visible()
    code = (
        "import matplotlib.pyplot as plt\n"
        "totals = sales.groupby('region')['revenue'].sum()\n"
        "totals.plot.bar()\n"
        "plt.show()\n"
        "result = totals.to_frame()"
    )
    llm.script(code_answer(code, "Totals per region, with a bar chart."))
    ask(panel, "Revenue per region, as a chart?", mode="run")
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn).to_have_attribute("data-state", "done", timeout=90000)
    outputs = turn.locator(".jp-DataAgent-outputs")
    expect(outputs.locator("img")).to_have_count(1)
    expect(outputs.locator("table")).to_contain_text("5.0")
    expect(turn.locator(".jp-DataAgent-error")).to_be_hidden()
    docs_screenshot(page, "panel-run")

    # "Run in sandbox" on the code block runs it again as a turn of its own
    turn.locator("[data-action='run']").click()
    rerun = panel.locator(".jp-DataAgent-turn[data-kind='run']").last
    expect(rerun).to_have_attribute("data-state", "done", timeout=90000)
    expect(rerun.locator(".jp-DataAgent-outputs table")).to_contain_text("5.0")


def test_run_magic_shows_the_code_its_outputs_and_a_chart(
    page: Any, lab: LabServer, llm: LLMServer
) -> None:
    lab.new_notebook("magic.ipynb")
    open_notebook(page, lab, "magic.ipynb")
    run_in_last_cell(page, "%load_ext dataagent\n" + SALES)
    code = (
        "import matplotlib.pyplot as plt\n"
        "result = sales.groupby('region')['revenue'].sum()\n"
        "fig, ax = plt.subplots(figsize=(4, 2.5))\n"
        "result.plot.bar(ax=ax, title='Revenue by region')\n"
        "result"
    )
    llm.script(code_answer(code, "Sum the revenue per region and draw it as bars."))
    run_in_last_cell(page, "%%ask sales --run\nrevenue per region, as a bar chart")
    output = page.locator(CELLS).nth(1).locator(".jp-OutputArea")
    # the status line, the code that ran, the chart and the result, in the asking cell
    expect(output).to_contain_text("Done in", timeout=90000)
    expect(output).to_contain_text("groupby('region')")
    expect(output.locator("img")).to_have_count(1)
    expect(output).to_contain_text("5.0")
    # run mode proposes no cell: only the two typed cells and the empty one after them
    assert [s.strip() for s in cell_sources(page)][:2] == [
        "%load_ext dataagent\n" + SALES,
        "%%ask sales --run\nrevenue per region, as a bar chart",
    ]
    docs_screenshot(page, "magic-run")


def test_stop_during_a_slow_answer(page: Any, lab: LabServer, llm: LLMServer) -> None:
    panel = notebook_with_sales(page, lab, "stop.ipynb")
    expect(panel.locator(".jp-DataAgent-frame[data-frame='sales']")).to_be_visible()
    llm.script(
        Reply(text=code_answer("result = 1", "Let me think. " * 40), chunk_size=2, chunk_delay=0.2)
    )
    ask(panel, "Take your time")
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn.locator(".jp-DataAgent-markdown")).to_contain_text("Let me think")
    expect(panel.locator(".jp-DataAgent-phase")).to_contain_text(re.compile(r"\d+ s"))
    panel.locator(".jp-DataAgent-stop").click()
    expect(turn).to_have_attribute("data-state", "failed", timeout=10000)
    expect(turn.locator(".jp-DataAgent-error")).to_contain_text("Cancelled")
    expect(panel.locator(".jp-DataAgent-stop")).to_be_hidden()
    # the panel is usable again at once
    llm.script(code_answer("result = len(sales)", "Count the rows."))
    ask(panel, "How many rows?")
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn).to_have_attribute("data-state", "done")
    expect(turn.locator(".jp-DataAgent-markdown")).to_have_text("Count the rows.")
    expect(turn.locator(".jp-DataAgent-codeBlock")).to_contain_text("result = len(sales)")


def test_missing_key_says_how_to_fix_it(page: Any, lab: LabServer, llm: LLMServer) -> None:
    panel = notebook_with_sales(page, lab, "nokey.ipynb")
    expect(panel.locator(".jp-DataAgent-keyWarning")).to_be_hidden()
    # the key disappears from the kernel's environment; the status refreshes after the cell
    page.locator(CELLS).last.locator(".cm-content").click()
    run_in_last_cell(page, "import os\ndel os.environ['OPENAI_API_KEY']")
    warning = panel.locator(".jp-DataAgent-keyWarning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("OPENAI_API_KEY")
    expect(warning).to_contain_text("%config DataAgent.api_key")
    requests_before = len(llm.chat_requests())
    ask(panel, "Anything?")
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn).to_have_attribute("data-state", "failed")
    expect(turn.locator(".jp-DataAgent-error")).to_contain_text("No API key")
    assert len(llm.chat_requests()) == requests_before


def test_history_survives_a_reload_and_the_kernel_restart_recovers(
    page: Any, lab: LabServer, llm: LLMServer
) -> None:
    panel = notebook_with_sales(page, lab, "history.ipynb")
    llm.script(code_answer("result = sales['revenue'].max()", "The largest revenue."))
    ask(panel, "Largest revenue?")
    expect(panel.locator(".jp-DataAgent-turn").last).to_have_attribute("data-state", "done")

    page.reload()
    page.locator(CELLS).first.wait_for(state="visible", timeout=60000)
    wait_kernel_idle(page)
    panel = page.locator("#dataagent-panel")
    if not panel.is_visible():  # the layout restorer usually reopens it
        panel = open_panel(page)
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn.locator(".jp-DataAgent-question")).to_have_text("Largest revenue?")
    expect(turn.locator(".jp-DataAgent-codeBlock")).to_contain_text("max()")

    # restart: the panel says so, reconnects (loading the extension again) and lists
    # the frames of the new kernel once they exist
    page.evaluate("() => jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
    wait_kernel_idle(page)
    expect(panel.locator(".jp-DataAgent-frame[data-frame='sales']")).to_have_count(0)
    run_in_last_cell(page, SALES.replace("sales", "sales2"))
    expect(panel.locator(".jp-DataAgent-frame[data-frame='sales2']")).to_contain_text("3 × 2")
    expect(panel.locator(".jp-DataAgent-notice")).to_be_hidden()


def test_busy_kernel_makes_the_panel_wait(page: Any, lab: LabServer) -> None:
    lab.new_notebook("busy.ipynb")
    open_notebook(page, lab, "busy.ipynb")
    page.locator(CELLS).last.locator(".cm-content").click()
    # busy until the test says so: a fixed sleep races the panel's start on a loaded machine
    go = lab.root / "busy.go"
    page.keyboard.insert_text(
        "import os, time, pandas as pd\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.05)\n"
        "late = pd.DataFrame({'a': [1]})"
    )
    page.keyboard.press("Shift+Enter")
    panel = open_panel(page)
    expect(panel.locator(".jp-DataAgent-notice")).to_contain_text("Kernel busy")
    go.write_text("")
    expect(panel.locator(".jp-DataAgent-frame[data-frame='late']")).to_be_visible(timeout=30000)
    expect(panel.locator(".jp-DataAgent-notice")).to_be_hidden()


@pytest.mark.engines
def test_panel_lists_an_engine_frame_with_its_engine(page: Any, lab: LabServer) -> None:
    pytest.importorskip("polars")
    lab.new_notebook("engines.ipynb")
    open_notebook(page, lab, "engines.ipynb")
    run_in_last_cell(
        page, "import polars as pl\nevents = pl.LazyFrame({'a': [1, 2], 'b': ['x', 'y']})"
    )
    panel = open_panel(page)
    frame = panel.locator(".jp-DataAgent-frame[data-frame='events']")
    expect(frame).to_contain_text("? × 2")  # a LazyFrame is not counted
    expect(frame.locator(".jp-DataAgent-frameEngine")).to_have_text("polars")
    expect(frame).to_have_attribute("title", re.compile("polars LazyFrame"))


def test_kernel_can_insert_a_cell_without_the_panel(page: Any, lab: LabServer) -> None:
    # the path of the chat widget's "Insert cell" button: a comm from the kernel
    lab.new_notebook("widget.ipynb")
    open_notebook(page, lab, "widget.ipynb")
    run_in_last_cell(
        page,
        "from dataagent_jupyter import frontend\n"
        "acks = []\n"
        "frontend.request_insert('inserted_by_kernel = 1', cell_id=frontend.current_cell_id(), "
        "on_ack=acks.append)",
    )
    page.wait_for_function(
        "() => jupyterapp.shell.currentWidget.content.model.sharedModel.cells"
        ".some(c => c.getSource() === 'inserted_by_kernel = 1')"
    )
    sources = cell_sources(page)
    assert sources.index("inserted_by_kernel = 1") == 1  # right below the asking cell
    assert not page.locator("#dataagent-panel").is_visible()
    page.locator(CELLS).last.locator(".cm-content").click()
    run_in_last_cell(page, "print(acks)")
    expect(page.locator(".jp-OutputArea-output").last).to_contain_text("[True]")


def test_questions_asked_with_the_magic_appear_in_the_panel(
    page: Any, lab: LabServer, llm: LLMServer
) -> None:
    panel = notebook_with_sales(page, lab, "shared.ipynb")
    expect(panel.locator(".jp-DataAgent-frame[data-frame='sales']")).to_be_visible()
    llm.script(code_answer("result = sales['revenue'].mean()", "Average it."))
    run_in_last_cell(page, "%load_ext dataagent\n%ask what is the mean revenue?")
    # one history per notebook: the magic's turn shows up in the panel after the cell ran
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn.locator(".jp-DataAgent-question")).to_have_text(
        "what is the mean revenue?", timeout=20_000
    )
    expect(turn.locator(".jp-DataAgent-codeBlock")).to_contain_text("sales['revenue'].mean()")


def test_fix_with_data_agent_proposes_a_corrected_cell(
    page: Any, lab: LabServer, llm: LLMServer
) -> None:
    panel = notebook_with_sales(page, lab, "fix.ipynb")
    fix = panel.locator(".jp-DataAgent-fix")
    # connected first: a failing cell aborts the requests queued behind it (the panel's too)
    expect(panel.locator(".jp-DataAgent-frame[data-frame='sales']")).to_be_visible()
    expect(fix).to_be_hidden()
    run_in_last_cell(page, "total = sales['revenu'].sum()")  # a typo: KeyError
    expect(fix).to_contain_text("The last cell raised KeyError.")
    fixed = "total = sales['revenue'].sum()"
    llm.script(code_answer(fixed, "The column is spelt 'revenue'."))
    fix.get_by_role("button", name="Fix with Data Agent").click()
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn.locator(".jp-DataAgent-question")).to_have_text(
        "fix the KeyError in the last failing cell"
    )
    expect(turn.locator(".jp-DataAgent-markdown")).to_contain_text("spelt 'revenue'")
    block = turn.locator(".jp-DataAgent-codeBlock")
    expect(block).to_contain_text(fixed)
    expect(turn.locator(".jp-DataAgent-footer")).to_contain_text("gpt-4o-mini")
    expect(fix).to_be_hidden()
    sent = llm.chat_requests()[-1].text
    assert "total = sales['revenu'].sum()" in sent and "KeyError" in sent

    # the inserted cell records where it came from
    block.locator("[data-action='insert']").click()
    record = page.wait_for_function(
        """code => {
            const cell = jupyterapp.shell.currentWidget.content.model.sharedModel.cells
                .find(c => c.getSource().trim() === code);
            return cell && cell.getMetadata('dataagent');
        }""",
        arg=fixed,
    ).json_value()
    assert record["question"] == "fix the KeyError in the last failing cell"
    assert record["model"] == "gpt-4o-mini"
    assert record["turn_id"] and record["asked_at"].endswith("+00:00")


def test_agent_run_from_the_panel_inserts_its_cells(
    page: Any, lab: LabServer, llm: LLMServer
) -> None:
    panel = notebook_with_sales(page, lab, "agent.ipynb")
    first = "by_region = sales.groupby('region')['revenue'].sum()\nresult = by_region"
    share = "result = by_region / by_region.sum()\nresult"
    llm.script(
        Reply(
            text="Plan: totals per region, then each one's share.",
            tool_calls=[tool_call("run_python", code=first)],
        ),
        Reply(tool_calls=[tool_call("run_python", code="result = by_regionn")]),
        Reply(tool_calls=[tool_call("run_python", code=share)]),
        Reply(text="Region **N** brings 71% of the revenue."),
    )
    ask(panel, "Where does the revenue come from?", mode="agent")
    turn = panel.locator(".jp-DataAgent-turn").last
    expect(turn.locator(".jp-DataAgent-step")).to_have_count(3)
    expect(turn.locator(".jp-DataAgent-step[data-outcome='failed']")).to_contain_text("NameError")
    expect(turn.locator(".jp-DataAgent-markdown strong")).to_have_text("N")
    expect(turn.locator(".jp-DataAgent-footer")).to_contain_text("3 step(s)")
    page.wait_for_function(
        "() => jupyterapp.shell.currentWidget.content.model.sharedModel.cells.length === 5"
    )
    kinds = page.evaluate(
        "() => jupyterapp.shell.currentWidget.content.model.sharedModel.cells.map(c => c.cell_type)"
    )
    sources = [s.strip() for s in cell_sources(page)]
    # below the active (empty) cell: the question and summary, then the steps that worked
    assert kinds == ["code", "code", "markdown", "code", "code"]
    assert sources[:2] == [SALES, ""]
    assert "Where does the revenue come from?" in sources[2]
    assert "Region **N** brings 71% of the revenue." in sources[2]
    assert sources[3:] == [first, share]
    # nothing ran in the notebook's kernel: the new cells have no outputs
    outputs = page.evaluate(
        "() => jupyterapp.shell.currentWidget.content.model.sharedModel.cells"
        ".slice(3).map(c => (c.outputs || []).length)"
    )
    assert outputs == [0, 0]
    # each proposed cell records the run it came from
    records = page.evaluate(
        "() => jupyterapp.shell.currentWidget.content.model.sharedModel.cells"
        ".slice(2).map(c => c.getMetadata('dataagent') || null)"
    )
    assert all(r and r["question"] == "Where does the revenue come from?" for r in records)
    assert len({r["turn_id"] for r in records}) == 1 and records[0]["turn_id"]
