"""The chat widget, driven through its real ipywidgets model against the scripted LLM server.

Two layers: fast tests in this process (IPython's test shell; ipywidgets work without a
front end), and tests in a real kernel started with jupyter_client, where the test plays
the user (sets the text, clicks the buttons) by executing code and reads the widget's
state back as the user would see it (see ``widget_helpers``).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import ipywidgets
import pandas as pd
import pytest
from kernel_helpers import Kernel
from llm_server import LLMServer, Reply, code_answer
from markup_payloads import markdown_payload, problems
from widget_helpers import (
    KernelChat,
    all_text,
    conversation,
    wait_until,
    walk,
    widget_kernel,
)

from dataagent_jupyter.widget import FALLBACK_INSERT, ChatWidget, close_all, fenced
from dataagent_jupyter.widget import insert as widget_module

LONG_EXPLANATION = (
    "To answer this I group the sales by region, add up the revenue of each one, and "
    "sort the totals from the largest to the smallest so the leader comes first."
)
CODE = "result = sales.groupby('region')['revenue'].sum().sort_values(ascending=False)"


# --- in-process ----------------------------------------------------------------------------


@pytest.fixture
def chat(ip) -> Iterator[ChatWidget]:
    """A chat widget on the test shell's extension, with a ``sales`` frame defined."""
    ip.user_ns["sales"] = pd.DataFrame(
        {"region": ["North", "South", "North"], "revenue": [10.0, 20.0, 30.0]}
    )
    ip.run_cell("pass")
    widget = ChatWidget(ip._dataagent_extension.session, ip)
    yield widget
    widget.stop()
    wait_until(lambda: not widget.busy, timeout=10, what="the widget to go idle")
    widget.close()


def _wait_idle(widget: ChatWidget) -> dict[str, Any]:
    wait_until(lambda: not widget.busy, timeout=20, what="the answer to end")
    return conversation(widget)


def test_answer_renders_markdown_with_code_and_actions(chat: ChatWidget, llm_env) -> None:
    llm_env.script(code_answer(CODE, LONG_EXPLANATION))
    chat.input.value = "  which region sells most?  "
    chat.send_button.click()
    assert chat.input.value == ""  # sent: the box is ready for the next question
    state = _wait_idle(chat)
    user, answer = state["messages"]
    assert user["classes"] == ["dataagent-chat-user"]
    assert user["text"] == "which region sells most?"
    assert answer["classes"] == ["dataagent-chat-answer"]
    assert LONG_EXPLANATION in answer["text"]
    assert f"```python\n{CODE}\n```" in answer["text"]  # the front end highlights it
    assert "[Insert cell]\n[Run]\n[Copy]" in answer["text"]
    assert state["status"].startswith("✓ Answered in ")
    assert "gpt-4o-mini" in state["status"]
    assert not state["send_disabled"] and state["stop_disabled"]
    request = llm_env.chat_requests()[0]
    assert request.messages[-1]["content"].rstrip().endswith("Question: which region sells most?")


def test_model_text_reaches_the_widget_only_as_cleaned_html(chat: ChatWidget, llm_env) -> None:
    llm_env.script(code_answer(CODE, markdown_payload("widget")))
    chat.ask("who leads?")
    _wait_idle(chat)
    bundles = [
        out["data"]
        for part in walk(chat.messages)
        if isinstance(part, ipywidgets.Output)
        for out in part.outputs
        if "data" in out
    ]
    assert bundles and not [b for b in bundles if "text/markdown" in b]
    answer = next(b["text/html"] for b in bundles if "Bold" in b.get("text/html", ""))
    assert problems(answer) == []
    assert "<strong>Bold</strong>" in answer and 'href="https://pandas.pydata.org/docs/"' in answer
    assert "sort_values" in answer  # the code, highlighted in the same HTML


def test_shares_the_session_with_the_magics(ip, chat: ChatWidget, llm_env) -> None:
    llm_env.script(code_answer("result = sales['revenue'].sum()"), code_answer("result = 2"))
    ip.run_cell_magic("ask", "sales", "total revenue?")
    # a chat opened afterwards shows the earlier turn and sends it as history
    later = ChatWidget(ip._dataagent_extension.session, ip)
    try:
        text = all_text(conversation(later))
        assert "Earlier in this session (1)" in text
        assert "total revenue?" in text and "result = sales['revenue'].sum()" in text
        later.ask("and the mean?")
        _wait_idle(later)
        roles = [m["role"] for m in llm_env.chat_requests()[1].messages]
        assert roles == ["system", "user", "assistant", "user"]
    finally:
        later.close()


def test_frame_picker_follows_the_namespace(ip, chat: ChatWidget) -> None:
    assert conversation(chat)["frames"] == [["sales  (DataFrame, 3 × 2)", "sales"]]
    chat.frames.value = ("sales",)
    ip.run_cell("import pandas as pd\ncosts = pd.DataFrame({'x': range(1200)})\ns = costs['x']")
    state = conversation(chat)
    assert [name for _, name in state["frames"]] == ["s", "costs", "sales"]
    assert ["costs  (DataFrame, 1,200 × 1)", "costs"] in state["frames"]
    assert ["s  (Series, 1,200)", "s"] in state["frames"]
    assert state["selected"] == ["sales"]  # the user's choice survives a refresh
    ip.run_cell("del sales")
    state = conversation(chat)
    assert "sales" not in [name for _, name in state["frames"]]
    assert state["selected"] == []


def test_selected_frames_limit_the_question(ip, chat: ChatWidget, llm_env) -> None:
    ip.run_cell("import pandas as pd\ncosts = pd.DataFrame({'item': ['a'], 'cost': [1.5]})")
    chat.frames.value = ("costs",)
    llm_env.script(code_answer("result = costs['cost'].sum()"))
    chat.ask("total cost?")
    _wait_idle(chat)
    sent = llm_env.chat_requests()[0].messages[-1]["content"]
    assert "### costs" in sent and "### sales" not in sent


def test_mode_switch_starts_at_the_configured_mode(ip) -> None:
    ext = ip._dataagent_extension
    ext.config.mode = "run"
    try:
        widget = ChatWidget(ext.session, ip)
        assert widget.mode.value == "run"
        widget.close()
    finally:
        ext.config.mode = "insert"


def test_endpoint_error_is_a_clear_message(chat: ChatWidget, llm_env) -> None:
    llm_env.script(Reply(status=401, error_message="Incorrect API key provided."))
    chat.ask("anything?")
    state = _wait_idle(chat)
    answer = state["messages"][-1]
    assert "Authentication refused" in answer["text"]
    assert "Traceback" not in answer["text"]
    assert "text/html" in answer["mimes"]
    assert state["status"].startswith("✗ Authentication refused after")
    assert "[Insert cell]" not in answer["text"]


def test_empty_question_asks_nothing(chat: ChatWidget, llm_env) -> None:
    chat.input.value = "   \n "
    chat.send_button.click()
    state = conversation(chat)
    assert state["messages"] == []
    assert "Type a question first" in state["status"]
    assert llm_env.chat_requests() == []


def test_one_answer_at_a_time(chat: ChatWidget, llm_env) -> None:
    llm_env.script(Reply(text=code_answer(CODE, LONG_EXPLANATION), chunk_delay=0.05))
    assert chat.ask("first?")
    assert conversation(chat)["send_disabled"]
    assert not chat.ask("second?")
    assert "still being written" in conversation(chat)["status"]
    state = _wait_idle(chat)
    assert [m["text"] for m in state["messages"] if "user" in m["classes"][0]] == ["first?"]
    assert len(llm_env.chat_requests()) == 1


def test_insert_without_front_end_falls_back_to_the_magic(
    ip, chat: ChatWidget, llm_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # no kernel, no front end: nobody acknowledges, so the fallback is shown
    monkeypatch.setattr(widget_module, "INSERT_ACK_TIMEOUT", 0.2)
    llm_env.script(code_answer(CODE))
    chat.ask("who leads?")
    _wait_idle(chat)
    _click(chat, "Insert cell")
    wait_until(
        lambda: FALLBACK_INSERT in all_text(conversation(chat)), timeout=5, what="the fallback"
    )
    ip.run_line_magic("dataagent", "insert")
    assert ip.rl_next_input == f"# dataagent: who leads?\n{CODE}\n"


def test_copy_shows_the_code_ready_to_copy(chat: ChatWidget, llm_env) -> None:
    code = "x = '<b>&'\nresult = x"
    llm_env.script(code_answer(code))
    chat.ask("copy me")
    _wait_idle(chat)
    _click(chat, "Copy")
    boxes = [w for w in _walk(chat.messages) if "dataagent-chat-copybox" in w._dom_classes]
    assert len(boxes) == 1
    value = boxes[0].value
    assert "Ctrl+C" in value and "⌘C" in value
    assert 'readonly rows="2"' in value and 'onclick="this.select()"' in value
    assert "x = &#x27;&lt;b&gt;&amp;&#x27;\nresult = x</textarea>" in value
    _click(chat, "Copy")  # a second click hides it again
    assert not [w for w in _walk(chat.messages) if "dataagent-chat-copybox" in w._dom_classes]


def test_upload_loads_a_frame_and_lists_it(ip, chat: ChatWidget) -> None:
    data = b"city;temp\nOslo;3,5\nRome;18,25\n"
    chat.upload.value = (_upload("weather today.csv", data),)
    state = wait_until(
        lambda: (s := conversation(chat)) and "2 rows × 2 columns" in all_text(s) and s,
        timeout=10,
        what="the upload summary",
    )
    frame = ip.user_ns["weather_today"]
    assert frame.shape == (2, 2)
    assert ["weather_today  (DataFrame, 2 × 2)", "weather_today"] in state["frames"]
    message = state["messages"][-1]
    assert "Loading `weather today.csv`" in message["text"]
    assert "weather_today" in message["text"] and "2 rows × 2 columns" in message["text"]
    assert chat.upload.value == ()  # ready for the next file


def test_bad_upload_is_a_clear_message(chat: ChatWidget) -> None:
    chat.upload.value = (_upload("empty.csv", b""),)
    state = wait_until(
        lambda: (s := conversation(chat)) and "Cannot load file" in all_text(s) and s,
        timeout=10,
        what="the load error",
    )
    assert "empty.csv" in state["messages"][-1]["text"]
    # content that is not bytes at all: the callback fails, the user reads why
    chat.upload.value = ({**_upload("odd.csv", b""), "content": "not bytes"},)
    state = conversation(chat)
    assert "the chat widget failed: TypeError" in state["messages"][-1]["text"]
    assert "Traceback" not in all_text(state)


def test_new_conversation_forgets_history(ip, chat: ChatWidget, llm_env) -> None:
    llm_env.script(code_answer("result = 1"))
    chat.ask("one?")
    _wait_idle(chat)
    assert ip._dataagent_extension.session.turns
    chat.new_button.click()
    assert conversation(chat)["messages"] == []
    assert ip._dataagent_extension.session.turns == []


def test_close_removes_the_hook_and_the_widgets(ip) -> None:
    ext = ip._dataagent_extension
    hooks = list(ip.events.callbacks["post_run_cell"])
    widget = ChatWidget(ext.session, ip)
    parts = list(_walk(widget))
    assert len(ip.events.callbacks["post_run_cell"]) == len(hooks) + 1
    widget.close()
    assert ip.events.callbacks["post_run_cell"] == hooks
    assert all(part.comm is None for part in parts)
    ip.run_cell("pass")  # no hook left to fail
    others = [ChatWidget(ext.session, ip), ChatWidget(ext.session, ip)]
    close_all(ext.session)
    assert ip.events.callbacks["post_run_cell"] == hooks
    assert all(o.comm is None for o in others)


def test_fence_survives_backticks_in_code() -> None:
    code = 's = """```python\nx\n```"""'
    block = fenced(code)
    assert block.startswith("````python\n") and block.endswith("\n````")
    assert fenced("x = 1") == "```python\nx = 1\n```"


def _upload(name: str, content: bytes) -> dict[str, Any]:
    """A FileUpload value entry, as ipywidgets deserialises one from the browser."""
    return {
        "name": name,
        "type": "text/csv",
        "size": len(content),
        "content": memoryview(content),
        "last_modified": datetime.datetime.now(datetime.timezone.utc),
    }


def _walk(widget: Any) -> Iterator[Any]:
    from widget_helpers import walk

    return walk(widget)


def _click(widget: ChatWidget, description: str) -> None:
    from widget_helpers import click

    click(widget, description)


# --- in a real kernel ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel(server: LLMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel for the module (a start costs about a second), extension loaded."""
    setup = (
        "import pandas as pd\n"
        "sales = pd.DataFrame({'region': ['North', 'South', 'North'],"
        " 'revenue': [10.0, 20.0, 30.0]})"
    )
    with widget_kernel(server, str(tmp_path_factory.mktemp("kernel-data")), setup) as k:
        yield k


@pytest.fixture
def kchat(kernel: Kernel, server: LLMServer) -> Iterator[KernelChat]:
    """A fresh chat widget ``w`` in the kernel, on a fresh conversation."""
    server._script.clear()
    server.requests.clear()
    driver = KernelChat(kernel)
    driver.run(
        "import dataagent_jupyter\n"
        "get_ipython()._dataagent_extension.session.reset()\n"
        "w = dataagent_jupyter.chat()"
    )
    yield driver
    try:
        driver.run("w.stop()")
        driver.wait_idle(timeout=30)
    finally:
        driver.run("w.close()")
    assert driver.problems == [], "a traceback reached the kernel's output"


@pytest.mark.kernel
def test_kernel_answer_streams_in(kchat: KernelChat, server: LLMServer) -> None:
    answer = code_answer(CODE, LONG_EXPLANATION)
    server.script(Reply(text=answer, chunk_delay=0.15, chunk_size=10))
    kchat.ask("which region sells most?")
    seen: list[str] = []
    statuses: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = kchat.state()
        statuses.append(state["status"])
        if len(state["messages"]) == 2:
            seen.append(state["messages"][1]["text"])
        if not state["busy"]:
            break
        time.sleep(0.1)
    partial = [t for t in seen if t and answer.startswith(t) and len(t) < len(answer.strip())]
    assert len(set(partial)) >= 3, seen  # the user watched it being written
    assert any(s.startswith("Asking gpt-4o-mini at 127.0.0.1") for s in statuses), statuses
    final = kchat.state()
    assert f"```python\n{CODE}\n```" in final["messages"][1]["text"]
    assert "[Insert cell]" in final["messages"][1]["text"]
    assert final["status"].startswith("✓ Answered in")


@pytest.mark.kernel
def test_kernel_stop_cancels_a_slow_answer(kchat: KernelChat, server: LLMServer) -> None:
    slow = code_answer(CODE, LONG_EXPLANATION * 4)
    server.script(Reply(text=slow, chunk_delay=0.3, chunk_size=8))  # about 40 s in all
    kchat.ask("take your time")
    kchat.wait_text("To answer", timeout=15)
    assert not kchat.state()["stop_disabled"]
    stopped_at = time.monotonic()
    kchat.run("w.stop_button.click()")
    state = kchat.wait_idle(timeout=10)
    assert time.monotonic() - stopped_at < 5
    answer = state["messages"][-1]["text"]
    assert "■ Stopped after" in answer
    assert "Traceback" not in answer and "[Insert cell]" not in answer
    assert state["status"].startswith("Stopped after")
    # the widget is free again: the next question is answered
    server.script(code_answer("result = 1"))
    kchat.ask("quick one")
    assert kchat.wait_idle()["status"].startswith("✓ Answered")


@pytest.mark.kernel
def test_kernel_error_is_a_message_not_a_traceback(kchat: KernelChat, server: LLMServer) -> None:
    server.script(Reply(status=401, error_message="Incorrect API key provided."))
    kchat.ask("anything?")
    state = kchat.wait_idle()
    text = state["messages"][-1]["text"]
    assert "Authentication refused" in text
    assert "Traceback" not in text
    assert state["status"].startswith("✗ Authentication refused")


@pytest.mark.kernel
def test_kernel_insert_falls_back_to_the_magic(kchat: KernelChat, server: LLMServer) -> None:
    server.script(code_answer(CODE))
    kchat.ask("who leads?")
    kchat.wait_idle()
    kchat.click("Insert cell")
    # no front end is listening: after the acknowledgement timeout the fallback appears
    assert "Inserting a new cell" in all_text(kchat.state())
    kchat.wait_text(FALLBACK_INSERT, timeout=10)
    ex = kchat.run("%dataagent insert")
    assert ex.ok
    assert ex.next_input == f"# dataagent: who leads?\n{CODE}\n"


@pytest.mark.kernel
def test_kernel_insert_goes_below_the_widget_cell(kernel: Kernel, server: LLMServer) -> None:
    """The test plays JupyterLab: the cell id arrives with the execute request, and the
    insert request is answered on the ``dataagent.frontend`` comm."""
    server._script.clear()
    driver = KernelChat(kernel, var="w2")
    _execute_with_metadata(
        kernel,
        "import dataagent_jupyter\nw2 = dataagent_jupyter.chat()",
        {"cellId": "cell-1234"},
    )
    try:
        assert driver.eval("w2.cell_id") == "cell-1234"
        server.script(code_answer(CODE))
        driver.ask("who leads?")
        driver.wait_idle()
        kc = kernel.kc
        kc.execute("_click(w2, 'Insert cell')")
        opened = _wait_comm_open(kernel, "dataagent.frontend")
        provenance = opened["data"].pop("provenance")
        assert opened["data"] == {
            "type": "insert_cell",
            "code": f"# dataagent: who leads?\n{CODE}\n",
            "cell_id": "cell-1234",
            "replace": False,
        }
        # the new cell will record where it came from
        assert provenance["question"] == "who leads?"
        assert provenance["model"] == "gpt-4o-mini"
        assert provenance["turn_id"] and provenance["asked_at"].endswith("+00:00")
        reply = kc.session.msg(
            "comm_msg", {"comm_id": opened["comm_id"], "data": {"type": "inserted", "ok": True}}
        )
        kc.shell_channel.send(reply)
        state = driver.wait_text("✓ Inserted a new cell below the chat.", timeout=10)
        assert FALLBACK_INSERT not in all_text(state)
    finally:
        driver.run("w2.close()")
    assert driver.problems == []


@pytest.mark.kernel
def test_kernel_upload_csv(kchat: KernelChat) -> None:
    kchat.run(
        "import datetime\n"
        "data = 'day,sold\\nmon,3\\ntue,5\\nwed,\\n'.encode('cp1252')\n"
        "w.upload.value = ({'name': 'week sales.csv', 'type': 'text/csv', 'size': len(data),"
        " 'content': memoryview(data),"
        " 'last_modified': datetime.datetime.now(datetime.timezone.utc)},)"
    )
    state = kchat.wait_text("3 rows × 2 columns", timeout=15)
    assert ["week_sales  (DataFrame, 3 × 2)", "week_sales"] in state["frames"]
    assert kchat.eval("week_sales.shape") == (3, 2)
    assert kchat.eval("list(week_sales.columns)") == ["day", "sold"]
    assert "nulls" in state["messages"][-1]["text"]


@pytest.mark.kernel
def test_kernel_frame_picker_refreshes_after_a_cell(kchat: KernelChat, server: LLMServer) -> None:
    before = [name for _, name in kchat.state()["frames"]]
    assert "sales" in before and "orders" not in before
    kchat.run("orders = pd.DataFrame({'id': range(5), 'amount': [1.0] * 5})")
    state = kchat.state()
    assert state["frames"][0] == ["orders  (DataFrame, 5 × 2)", "orders"]
    # a selected frame is the only one described to the model
    kchat.run("w.frames.value = ('orders',)")
    server.script(code_answer("result = orders['amount'].sum()"))
    kchat.ask("total amount?")
    kchat.wait_idle()
    sent = server.chat_requests()[-1].messages[-1]["content"]
    assert "### orders" in sent and "### sales" not in sent
    kchat.run("del orders")
    assert "orders" not in [name for _, name in kchat.state()["frames"]]


@pytest.mark.kernel
def test_kernel_close_removes_the_hook(kernel: Kernel) -> None:
    driver = KernelChat(kernel, var="w3")
    count = "len(get_ipython().events.callbacks['post_run_cell'])"
    before = driver.eval(count)
    driver.run("import dataagent_jupyter\nw3 = dataagent_jupyter.chat()")
    assert driver.eval(count) == before + 1
    driver.run("w3.close()")
    assert driver.eval(count) == before
    assert driver.eval("w3.comm is None and w3.messages.comm is None")


@pytest.mark.kernel
def test_kernel_run_mode_shows_outputs_and_charts(kchat: KernelChat, server: LLMServer) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "totals = sales.groupby('region')['revenue'].sum()\n"
        "print('regions:', len(totals))\n"
        "totals.plot.bar()\nplt.show()\n"
        "result = totals.to_frame()"
    )
    server.script(code_answer(code, "Totals per region, with a chart."))
    kchat.run("w.mode.value = 'run'")
    kchat.ask("totals per region, as a chart")
    state = kchat.wait_idle(timeout=120)
    answer = state["messages"][-1]
    assert state["status"].startswith("✓ Ran the code") or state["status"].startswith(
        "✓ Answered"
    ), state["status"]
    assert "regions: 2" in answer["text"]
    assert "image/png" in answer["mimes"]
    assert "text/html" in answer["mimes"]  # the result table
    # "Run" on the answer runs its code again, outputs in a new message below
    kchat.click("Run")
    state = kchat.wait_idle(timeout=120)
    rerun = state["messages"][-1]
    assert rerun["classes"] == ["dataagent-chat-run"]
    assert "regions: 2" in rerun["text"] and "image/png" in rerun["mimes"]
    assert state["status"].startswith("✓ Ran the code")


@pytest.mark.kernel
def test_kernel_stop_interrupts_a_run(kchat: KernelChat, server: LLMServer) -> None:
    server.script(code_answer("import time\nprint('started', flush=True)\ntime.sleep(60)"))
    kchat.ask("wait a minute")
    kchat.wait_idle()
    kchat.click("Run")
    kchat.wait_text("started", timeout=120)
    stopped_at = time.monotonic()
    kchat.run("w.stop()")
    state = kchat.wait_idle(timeout=30)
    assert time.monotonic() - stopped_at < 15
    assert "■ Stopped after" in state["messages"][-1]["text"]


def _execute_with_metadata(kernel: Kernel, code: str, metadata: dict[str, Any]) -> None:
    """An execute request carrying request metadata, as JupyterLab sends ``cellId``."""
    kc = kernel.kc
    content = {
        "code": code,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    msg = kc.session.msg("execute_request", content, metadata=metadata)
    kc.shell_channel.send(msg)
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
        reply = kc.get_shell_msg(timeout=30)
    assert reply["content"]["status"] == "ok", reply["content"]


def _wait_comm_open(kernel: Kernel, target: str, timeout: float = 15) -> dict[str, Any]:
    """Read iopub until the kernel opens a comm to ``target``; its content."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=1)
        except Exception:
            continue
        if msg["msg_type"] == "comm_open" and msg["content"].get("target_name") == target:
            return msg["content"]
    raise AssertionError(f"the kernel opened no comm to {target!r}")
