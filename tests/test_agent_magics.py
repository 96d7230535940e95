"""%%ask --agent through IPython's shell: the steps in the cell, the analysis proposed below."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.utils.capture import capture_output
from llm_server import LLMServer, Reply, tool_call

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


def test_mode_agent_in_config_and_each_step_needs_buttons(ip, llm_env: LLMServer, sales) -> None:
    ip.run_line_magic("config", "DataAgent.mode = 'agent'")
    llm_env.script("Nothing to compute: the frame has three rows.")
    ip.run_cell_magic("ask", "sales", "how many rows?")
    assert llm_env.chat_requests()[0].body["tools"][0]["function"]["name"] == "run_python"
    ip.run_line_magic("config", "DataAgent.agent_approval = 'each-step'")
    with pytest.raises(errors.UsageError, match="approving each step needs buttons"):
        ip.run_cell_magic("ask", "sales", "how many rows?")
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
