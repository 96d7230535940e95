"""%%ask --agent through IPython's shell: the steps in the cell, the analysis proposed below."""

from __future__ import annotations

import ast
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from IPython.utils.capture import capture_output
from kernel_helpers import Execution, Kernel
from llm_server import LLMServer, Reply, tool_call
from widget_helpers import wait_until, widget_kernel

from dataagent_jupyter import errors

pytestmark = pytest.mark.kernel


@pytest.fixture
def sales(ip) -> pd.DataFrame:
    df = pd.DataFrame({"region": ["North", "South", "North"], "margin": [0.3, 0.1, 0.2]})
    ip.user_ns["sales"] = df
    ip.run_cell("pass")
    return df


def test_agent_magic_shows_the_steps_and_proposes_percent_cells(
    ip, llm_env: LLMServer, sales
) -> None:
    good = "result = sales.groupby('region')['margin'].mean()"
    llm_env.script(
        Reply(text="Plan: averages.", tool_calls=[tool_call("run_python", code=good)]),
        Reply(tool_calls=[tool_call("run_python", code="result = sales['nope']")]),
        "South has the **lowest** margin (0.1).",
    )
    with capture_output() as cap:
        ip.run_cell_magic("ask", "sales --agent --into by_region", "where are margins low?")
    shown = "\n".join(str(o.data.get("text/plain", "")) for o in cap.outputs)
    assert "Step 1\n" + good in shown
    assert "Step 2 failed: KeyError" in shown.replace("`", "")
    assert "attempt" not in shown
    assert "Analysis in 2 step(s) proposed below" in shown
    cell = ip.rl_next_input
    assert cell.startswith("# %% [markdown]\n# **Question**\n#\n# > where are margins low?")
    assert "# South has the **lowest** margin (0.1)." in cell
    assert cell.endswith(f"# %%\n{good}\n")
    assert "sales['nope']" not in cell  # the failed step is left out
    assert ip.user_ns["by_region"].to_dict() == {"North": 0.25, "South": 0.1}
    stats = ip._dataagent_extension.session.metrics.snapshot()
    assert (stats.agent_runs, stats.agent_steps) == (1, 2)


def test_mode_agent_in_config_and_each_step_needs_widgets(ip, llm_env: LLMServer, sales) -> None:
    ip.run_line_magic("config", "DataAgent.mode = 'agent'")
    llm_env.script("Nothing to compute: the frame has three rows.")
    ip.run_cell_magic("ask", "sales", "how many rows?")
    assert llm_env.chat_requests()[0].body["tools"][0]["function"]["name"] == "run_python"
    # a terminal IPython (this test shell has no kernel) cannot show the buttons
    ip.run_line_magic("config", "DataAgent.agent_approval = 'each-step'")
    with pytest.raises(errors.UsageError) as caught:
        ip.run_cell_magic("ask", "sales", "how many rows?")
    assert "Run / Skip / Stop" in caught.value.message
    assert "shows no widgets" in caught.value.message
    assert "agent_approval = 'none'" in (caught.value.hint or "")
    assert "side panel" in (caught.value.hint or "")
    assert len(llm_env.chat_requests()) == 1


# --- the chat widget ------------------------------------------------------------------------


def test_widget_agent_choice_steps_with_approval_and_cells(
    ip, llm_env: LLMServer, sales, monkeypatch: pytest.MonkeyPatch
) -> None:
    from widget_helpers import click, conversation, wait_until

    from dataagent_jupyter.widget import ChatWidget
    from dataagent_jupyter.widget import insert as insert_module

    monkeypatch.setattr(insert_module, "INSERT_ACK_TIMEOUT", 0.2)
    ip.run_line_magic("config", "DataAgent.agent_approval = 'each-step'")
    chat = ChatWidget(ip._dataagent_extension.session, ip)
    try:
        assert [value for _, value in chat.mode.options] == ["insert", "run", "agent"]
        chat.mode.value = "agent"
        llm_env.script(
            Reply(tool_calls=[tool_call("run_python", code="print('first', 'ran')\nresult = 1")]),
            Reply(tool_calls=[tool_call("run_python", code="print('second', 'ran')\nresult = 2")]),
            "Both **done**.",
        )
        assert chat.ask("look around")
        for step in (1, 2):
            wait_until(
                lambda n=step: (
                    conversation(chat)["messages"][-1]["text"].count("[Run]\n[Skip]\n[Stop]") == n
                ),
                timeout=20,
                what=f"step {step} to ask for approval",
            )
            click(chat, "Run" if step == 1 else "Skip")
        wait_until(lambda: not chat.busy, timeout=20, what="the run to end")
        answer = conversation(chat)["messages"][-1]["text"]
        assert "Step 1 worked" in answer and "first ran" in answer
        assert "Step 2 was skipped" in answer and "second ran" not in answer
        assert answer.count("Both **done**.") == 1 and "Attempt" not in answer
        assert conversation(chat)["status"].startswith("✓ Analysed in 2 step(s)")
        click(chat, "Insert cell")
        wait_until(
            lambda: "%dataagent insert" in conversation(chat)["messages"][-1]["text"],
            timeout=5,
            what="the insert fallback",
        )
        ip.run_line_magic("dataagent", "insert")
        assert ip.rl_next_input.startswith("# %% [markdown]\n# **Question**")
        assert ip.rl_next_input.endswith("# %%\nprint('first', 'ran')\nresult = 1\n")
    finally:
        chat.stop()
        wait_until(lambda: not chat.busy, timeout=10, what="the widget to go idle")
        chat.close()


# --- in a real kernel: the proposal for the labextension, approval through the widget -----


@pytest.fixture(scope="module")
def kernel(server: LLMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel for the module, extension loaded, no response cache (scripts differ)."""
    setup = (
        "import pandas as pd\n"
        "sales = pd.DataFrame({'region': ['North', 'South', 'North'],"
        " 'margin': [0.3, 0.1, 0.2]})\n"
        "from ipywidgets.widgets.widget import _instances"
    )
    with widget_kernel(server, str(tmp_path_factory.mktemp("kernel-data")), setup) as k:
        yield k


@pytest.fixture
def fresh(kernel: Kernel, server: LLMServer) -> Iterator[Kernel]:
    """A fresh conversation, approval as each test sets it, back to 'none' after."""
    server._script.clear()
    server.requests.clear()
    assert kernel.execute("get_ipython()._dataagent_extension.session.reset()").ok
    yield kernel
    kernel.execute("%config DataAgent.agent_approval = 'none'")


GOOD = "result = sales.groupby('region')['margin'].mean()"


@pytest.mark.kernel
def test_kernel_agent_cells_are_proposed_to_the_labextension_with_the_fallback(
    fresh: Kernel, server: LLMServer
) -> None:
    server.script(
        Reply(tool_calls=[tool_call("run_python", code=GOOD)]),
        Reply(tool_calls=[tool_call("run_python", code="result = sales['nope']")]),
        "South has the **lowest** margin.",
    )
    ex = fresh.execute("%%ask sales --agent\nwhere are margins low?", cell_id="cell-ask")
    assert ex.ok, ex.error
    # set_next_input: the one-cell form, for front ends without the labextension
    assert ex.next_input is not None and ex.next_input.startswith("# %% [markdown]")
    assert ex.next_input.endswith(f"# %%\n{GOOD}\n")
    [proposal] = [c["data"] for c in ex.comm_opens if c["target_name"] == "dataagent.frontend"]
    assert proposal["type"] == "proposal" and proposal["cell_id"] == "cell-ask"
    assert proposal["code"] == ex.next_input  # what the labextension finds and replaces
    markdown, code = proposal["cells"]  # the failed step is left out
    assert markdown["cell_type"] == "markdown"
    assert "> where are margins low?" in markdown["source"]
    assert "South has the **lowest** margin." in markdown["source"]
    assert code == {"cell_type": "code", "source": GOOD + "\n"}
    record = proposal["metadata"]["dataagent"]
    assert record["question"] == "where are margins low?" and record["turn_id"]


def _agent_cell(kernel: Kernel, ex: Execution) -> str:
    """Bind the widget the cell displayed to a name in the kernel, as a front end finds it."""
    [view] = ex.data("application/vnd.jupyter.widget-view+json")
    assert kernel.execute(f"agent = _instances[{view['model_id']!r}]").ok
    return "agent"


def _text(kernel: Kernel) -> str:
    ex = kernel.execute("", user_expressions={"t": "widget_text(agent)"})
    value = ex.reply["content"]["user_expressions"]["t"]
    assert value["status"] == "ok", value
    return str(ast.literal_eval(value["data"]["text/plain"]))


def _click(kernel: Kernel, css: str, *, wait: bool = True) -> None:
    """Click the last enabled button with CSS class ``css`` under the agent widget."""
    code = (
        f"[b for b in walk(agent) if {css!r} in getattr(b, '_dom_classes', ())"
        " and not b.disabled][-1].click()"
    )
    if wait:
        assert kernel.execute(code).ok
    else:
        kernel.kc.execute(code)  # iopub left unread: the test reads it next


def _wait_text(kernel: Kernel, check: Any, what: str, timeout: float = 30) -> str:
    def seen() -> str | None:
        text = _text(kernel)
        return text if check(text) else None

    return wait_until(seen, timeout=timeout, what=what)


def _wait_comm_open(kernel: Kernel, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=1)
        except Exception:
            continue
        if msg["msg_type"] == "comm_open" and msg["content"]["target_name"] == (
            "dataagent.frontend"
        ):
            return msg["content"]
    raise AssertionError("the kernel asked for no cells")


@pytest.mark.kernel
def test_kernel_each_step_run_skip_stop_from_the_asking_cell(
    fresh: Kernel, server: LLMServer
) -> None:
    steps = [f"print('step', {n}, 'ran')\nresult = {n}" for n in (1, 2, 3)]
    server.script(*(Reply(tool_calls=[tool_call("run_python", code=code)]) for code in steps))
    assert fresh.execute("%config DataAgent.agent_approval = 'each-step'").ok
    started = time.monotonic()
    ex = fresh.execute("%%ask sales --agent\nlook around", cell_id="cell-agent")
    assert ex.ok, ex.error
    assert time.monotonic() - started < 10  # the cell ends; the run goes on in the widget
    assert ex.next_input is None
    _agent_cell(fresh, ex)
    approval = "[Run]\n[Skip]\n[Stop]"

    _wait_text(fresh, lambda t: t.count(approval) == 1, "step 1 to ask for approval")
    assert "step 1 ran" not in _text(fresh)  # nothing runs before Run is clicked
    _click(fresh, "dataagent-chat-step-run")
    text = _wait_text(fresh, lambda t: "Step 1 worked" in t, "step 1 to run")
    assert "step 1 ran" in text

    _wait_text(fresh, lambda t: t.count(approval) == 2, "step 2 to ask for approval")
    _click(fresh, "dataagent-chat-step-skip")
    text = _wait_text(fresh, lambda t: t.count(approval) == 3, "step 3 to ask for approval")
    assert "Step 2 was skipped" in text and "step 2 ran" not in text
    told = server.chat_requests()[2].messages[-1]
    assert told["role"] == "tool" and "skipped step 2" in told["content"]

    _click(fresh, "dataagent-chat-step-stop", wait=False)
    opened = _wait_comm_open(fresh)  # the analysis, asked of the labextension
    data = opened["data"]
    assert data["type"] == "insert_cell" and data["cell_id"] == "cell-agent"
    assert data["proposal"] is True  # it replaces this cell's previous proposal
    assert [c["cell_type"] for c in data["cells"]] == ["markdown", "code"]
    assert data["cells"][1]["source"] == steps[0] + "\n"  # skipped and stopped: left out
    assert data["provenance"]["question"] == "look around"
    reply = fresh.kc.session.msg(
        "comm_msg", {"comm_id": opened["comm_id"], "data": {"type": "inserted", "ok": True}}
    )
    fresh.kc.shell_channel.send(reply)
    text = _wait_text(fresh, lambda t: "✓ Inserted 2 cells below this cell." in t, "the insert")
    assert "step 3 ran" not in text and "stopped by the user" in text
    assert len(server.chat_requests()) == 3  # Stop asks nothing more
    state = fresh.execute(
        "", user_expressions={"s": "agent.status.value", "d": "agent.stop_button.disabled"}
    ).reply["content"]["user_expressions"]
    assert "Analysed in 2 step(s) (stopped by the user)" in state["s"]["data"]["text/plain"]
    assert state["d"]["data"]["text/plain"] == "True"


@pytest.mark.kernel
def test_kernel_each_step_without_a_labextension_keeps_the_cells_for_the_magic(
    fresh: Kernel, server: LLMServer
) -> None:
    server.script(
        Reply(tool_calls=[tool_call("run_python", code=GOOD)]),
        "North leads.",
    )
    assert fresh.execute("%config DataAgent.agent_approval = 'each-step'").ok
    ex = fresh.execute("%%ask sales --agent --into by_region\nwho leads?", cell_id="cell-x")
    assert ex.ok, ex.error
    _agent_cell(fresh, ex)
    _wait_text(fresh, lambda t: "[Run]" in t, "step 1 to ask for approval")
    _click(fresh, "dataagent-chat-step-run")
    # no front end answers the insert request: after the timeout, the magic is offered
    text = _wait_text(fresh, lambda t: "%dataagent insert" in t, "the insert fallback")
    assert "North leads." in text and "Step 1 worked" in text
    assert fresh.eval("by_region.round(2).to_dict()") == "{'North': 0.25, 'South': 0.1}"
    ex = fresh.execute("%dataagent insert")
    assert ex.next_input is not None and ex.next_input.endswith(f"# %%\n{GOOD}\n")
    assert "# North leads." in ex.next_input
