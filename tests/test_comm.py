"""The side panel's kernel protocol (comm target ``dataagent``) in a real ipykernel.

The test plays the JupyterLab panel: it opens the comm with jupyter_client's shell
channel and reads the kernel's comm messages from IOPub, as the browser would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kernel_helpers import Kernel
from llm_server import LLMServer, Reply, code_answer

pytestmark = pytest.mark.kernel

Msg = dict[str, Any]


class Frontend:
    """A kernel plus everything it published on IOPub, collected by a reader thread."""

    def __init__(self, env: dict[str, str], extra_args: list[str] | None = None) -> None:
        self.kernel = Kernel(
            env=env, extra_args=["--DataAgent.warm_child=False", *(extra_args or [])]
        )
        self.kc = self.kernel.kc
        self.messages: list[Msg] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except Exception:
                continue
            with self._cond:
                self.messages.append(msg)
                self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[Msg], bool], *, timeout: float = 30, start: int = 0
    ) -> Msg:
        """The first IOPub message (from index ``start``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages[start:]:
                    if predicate(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [
                        (m["msg_type"], m["content"].get("data", {}).get("type"))
                        for m in self.messages[start:]
                    ][-20:]
                    raise TimeoutError(f"no matching message in {timeout} s; last: {kinds}")
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def execute(
        self, code: str, *, metadata: dict[str, Any] | None = None, timeout: float = 60
    ) -> Msg:
        """Run code like a notebook cell; the execute_reply content."""
        msg = self.kc.session.msg(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            metadata=metadata or {},
        )
        self.kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        self.wait_for(
            lambda m: (
                m["parent_header"].get("msg_id") == msg_id
                and m["msg_type"] == "status"
                and m["content"]["execution_state"] == "idle"
            ),
            timeout=timeout,
        )
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        return reply["content"]

    def eval(self, expression: str) -> str:
        """The repr of ``expression`` in the kernel (a silent user_expressions request)."""
        value = self.execute_expressions({"x": expression})["user_expressions"]["x"]
        assert value["status"] == "ok", value
        return value["data"]["text/plain"]

    def execute_expressions(self, expressions: dict[str, str]) -> Msg:
        msg = self.kc.session.msg(
            "execute_request",
            {
                "code": "",
                "silent": True,
                "store_history": False,
                "user_expressions": expressions,
                "allow_stdin": False,
            },
        )
        self.kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        reply = self.kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=30)
        return reply["content"]

    # --- comms -----------------------------------------------------------------------
    def open(self, target: str = "dataagent", data: Msg | None = None) -> Comm:
        comm = Comm(self, uuid.uuid4().hex)
        comm.start = self.mark()
        self._send("comm_open", {"comm_id": comm.id, "target_name": target, "data": data or {}})
        return comm

    def _send(self, msg_type: str, content: Msg) -> None:
        self.kc.shell_channel.send(self.kc.session.msg(msg_type, content))

    def close(self) -> None:
        self._stop.set()
        self._reader.join(timeout=2)
        self.kernel.shutdown()


class Comm:
    """The panel's end of one ``dataagent`` comm."""

    def __init__(self, frontend: Frontend, comm_id: str) -> None:
        self.frontend = frontend
        self.id = comm_id
        self.start = 0

    def send(self, data: Msg) -> None:
        self.frontend._send("comm_msg", {"comm_id": self.id, "data": data})

    def close(self) -> None:
        self.frontend._send("comm_close", {"comm_id": self.id, "data": {}})

    def _mine(self, m: Msg) -> bool:
        return m["content"].get("comm_id") == self.id

    def reply(self, kind: str, *, timeout: float = 30) -> Msg:
        """The next comm message of ``kind`` (hello, frames, status, error…)."""
        msg = self.frontend.wait_for(
            lambda m: (
                m["msg_type"] == "comm_msg"
                and self._mine(m)
                and m["content"]["data"].get("type") == kind
            ),
            timeout=timeout,
            start=self.start,
        )
        self.start = self.frontend.messages.index(msg) + 1
        return msg["content"]["data"]

    def closed(self, *, timeout: float = 30) -> Msg:
        return self.frontend.wait_for(
            lambda m: m["msg_type"] == "comm_close" and self._mine(m), timeout=timeout
        )

    def events(self, request_id: str, *, timeout: float = 60) -> list[Msg]:
        """Every event of a request, up to and including its Done or Failed."""
        seen: list[Msg] = []
        index = 0

        def final(m: Msg) -> bool:
            if not (m["msg_type"] == "comm_msg" and self._mine(m)):
                return False
            data = m["content"]["data"]
            return (
                data.get("type") == "event"
                and data.get("id") == request_id
                and data["event"]["type"] in ("Done", "Failed")
            )

        self.frontend.wait_for(final, timeout=timeout)
        for m in self.frontend.messages[index:]:
            if m["msg_type"] == "comm_msg" and self._mine(m):
                data = m["content"]["data"]
                if data.get("type") == "event" and data.get("id") == request_id:
                    seen.append(data["event"])
                    if data["event"]["type"] in ("Done", "Failed"):
                        break
        return seen

    def first_event(self, request_id: str, kind: str, *, timeout: float = 30) -> Msg:
        msg = self.frontend.wait_for(
            lambda m: (
                m["msg_type"] == "comm_msg"
                and self._mine(m)
                and m["content"]["data"].get("id") == request_id
                and m["content"]["data"].get("event", {}).get("type") == kind
            ),
            timeout=timeout,
        )
        return msg["content"]["data"]["event"]


def ask(comm: Comm, question: str, **fields: Any) -> str:
    request_id = fields.pop("id", None) or uuid.uuid4().hex
    comm.send(
        {
            "type": "ask",
            "id": request_id,
            "question": question,
            "frames": fields.pop("frames", None),
            "mode": fields.pop("mode", "insert"),
            **fields,
        }
    )
    return request_id


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fe(server: LLMServer) -> Iterator[Frontend]:
    frontend = Frontend({"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": server.api_key or ""})
    reply = frontend.execute(
        "import pandas as pd\n"
        "sales = pd.DataFrame({'region': ['N', 'S', 'N'], 'revenue': [1.0, 2.5, 4.0]})"
    )
    assert reply["status"] == "ok", reply
    yield frontend
    frontend.close()


@pytest.fixture(scope="module")
def loaded(fe: Frontend) -> Frontend:
    reply = fe.execute("%load_ext dataagent_jupyter")
    assert reply["status"] == "ok", reply
    return fe


@pytest.fixture
def comm(loaded: Frontend) -> Iterator[Comm]:
    c = loaded.open(data={"type": "hello"})
    c.reply("hello")
    yield c
    c.close()


# --- tests ---------------------------------------------------------------------------


def test_kernel_without_the_extension_closes_the_comm(fe: Frontend) -> None:
    # this is how the panel learns that it must run %load_ext first
    if "dataagent_jupyter" in fe.eval("sorted(get_ipython().extension_manager.loaded)"):
        pytest.skip("the extension is already loaded in this kernel")
    comm = fe.open(data={"type": "hello"})
    comm.closed(timeout=10)


def test_hello_answers_with_status_frames_and_history(loaded: Frontend, server: LLMServer) -> None:
    comm = loaded.open(data={"type": "hello"})  # hello rides on the comm_open
    hello = comm.reply("hello")
    assert hello["version"] == loaded.eval("__import__('dataagent_jupyter').__version__").strip("'")
    assert hello["protocol"] == 1
    status = hello["status"]
    assert status["model"] == "gpt-4o-mini"
    assert status["endpoint"] == f"127.0.0.1:{server.port}"
    assert status["key_set"] is True
    assert "key" not in {k for k, v in status.items() if v == server.api_key}
    assert server.api_key not in str(hello)
    sales = next(f for f in hello["frames"] if f["name"] == "sales")
    assert sales == {
        "name": "sales",
        "kind": "DataFrame",
        "shape": [3, 2],
        "columns": ["region", "revenue"],
        "engine": "pandas",
    }
    assert isinstance(hello["history"], list)
    comm.close()


def test_list_frames_follows_the_namespace(loaded: Frontend, comm: Comm) -> None:
    loaded.execute("costs = pd.Series([1, 2, 3, 4], name='cost')")
    comm.send({"type": "list_frames"})
    frames = {f["name"]: f for f in comm.reply("frames")["frames"]}
    assert frames["costs"]["shape"] == [4]
    assert frames["sales"]["shape"] == [3, 2]
    loaded.execute("del costs")
    comm.send({"type": "list_frames"})
    assert "costs" not in {f["name"] for f in comm.reply("frames")["frames"]}


def test_status_request(comm: Comm) -> None:
    comm.send({"type": "status"})
    status = comm.reply("status")
    assert {"version", "model", "endpoint", "key_set", "privacy", "mode", "sandbox"} <= set(status)
    assert status["mode"] == "insert"


def test_ask_streams_events_ending_with_done(comm: Comm, server: LLMServer) -> None:
    answer = code_answer(
        "result = sales.groupby('region')['revenue'].sum()", "Sum the revenue per region."
    )
    server.script(Reply(text=answer, chunk_size=5))
    request_id = ask(comm, "revenue per region?", frames=["sales"])
    events = comm.events(request_id)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "Status"
    assert "Delta" in kinds and "CodeProposed" in kinds
    assert kinds[-1] == "Done"
    assert "".join(e["text"] for e in events if e["type"] == "Delta") == answer
    proposed = next(e for e in events if e["type"] == "CodeProposed")
    assert proposed["code"].strip() == "result = sales.groupby('region')['revenue'].sum()"
    assert proposed["explanation"] == "Sum the revenue per region."
    done = events[-1]
    assert done["mode"] == "insert"
    assert done["usage"]["completion_tokens"] > 0
    # only the frame asked for was described to the model
    assert "sales" in server.chat_requests()[-1].text


def test_history_is_shared_with_a_reopened_panel(
    loaded: Frontend, comm: Comm, server: LLMServer
) -> None:
    server.script(code_answer("result = len(sales)", "Count the rows."))
    events = comm.events(ask(comm, "how many sales rows?"))
    assert events[-1]["type"] == "Done"
    again = loaded.open(data={"type": "hello"})
    history = again.reply("hello")["history"]
    assert history[-1]["question"] == "how many sales rows?"
    assert history[-1]["code"].strip() == "result = len(sales)"
    again.close()


def test_kernel_answers_while_a_question_streams(
    loaded: Frontend, comm: Comm, server: LLMServer
) -> None:
    server.script(Reply(text=code_answer("result = 1", "Slowly."), chunk_size=2, chunk_delay=0.1))
    request_id = ask(comm, "take your time")
    comm.first_event(request_id, "Delta")
    # the question runs on a background thread: frames and cells are answered meanwhile
    comm.send({"type": "list_frames"})
    assert comm.reply("frames", timeout=5)["frames"]
    assert loaded.execute("x_during_ask = 41 + 1", timeout=5)["status"] == "ok"
    done_so_far = any(
        m["msg_type"] == "comm_msg"
        and m["content"]["data"].get("id") == request_id
        and m["content"]["data"]["event"]["type"] == "Done"
        for m in list(loaded.messages)
    )
    assert not done_so_far, "the answer should still be streaming"
    assert comm.events(request_id)[-1]["type"] == "Done"


def test_cancel_stops_a_slow_answer(comm: Comm, server: LLMServer) -> None:
    server.script(Reply(text=code_answer("result = 1", "x" * 400), chunk_size=2, chunk_delay=0.1))
    request_id = ask(comm, "a long story")
    comm.first_event(request_id, "Delta")
    started = time.monotonic()
    comm.send({"type": "cancel", "id": request_id})
    events = comm.events(request_id, timeout=15)
    assert time.monotonic() - started < 5
    final = events[-1]
    assert final["type"] == "Failed"
    assert final["error"]["kind"] == "Cancelled"
    assert not any(e["type"] == "Done" for e in events)
    # the kernel is free for the next question
    server.script(code_answer("result = 2", "Next."))
    assert comm.events(ask(comm, "next"))[-1]["type"] == "Done"


def test_one_question_at_a_time(comm: Comm, server: LLMServer) -> None:
    server.script(Reply(text=code_answer("result = 1", "Slow."), chunk_size=2, chunk_delay=0.05))
    first = ask(comm, "first")
    comm.first_event(first, "Status")
    second = ask(comm, "second")
    refused = comm.events(second, timeout=10)
    assert [e["type"] for e in refused] == ["Failed"]
    assert "another question" in refused[0]["error"]["message"]
    assert comm.events(first)[-1]["type"] == "Done"


def test_closing_the_comm_stops_its_question(loaded: Frontend, server: LLMServer) -> None:
    comm = loaded.open(data={"type": "hello"})
    comm.reply("hello")
    server.script(Reply(text=code_answer("result = 1", "y" * 400), chunk_size=2, chunk_delay=0.1))
    request_id = ask(comm, "long")
    comm.first_event(request_id, "Delta")
    comm.close()
    # the next panel can ask at once: the closed comm's question was cancelled
    other = loaded.open(data={"type": "hello"})
    other.reply("hello")
    server.script(code_answer("result = 3", "Now."))
    deadline = time.monotonic() + 10
    while True:
        events = other.events(ask(other, "now"))
        if events[-1]["type"] == "Done" or time.monotonic() > deadline:
            break
        time.sleep(0.3)  # the cancelled question may still be unwinding
    assert events[-1]["type"] == "Done"
    other.close()


def test_errors_are_messages_not_tracebacks(
    comm: Comm, loaded: Frontend, server: LLMServer
) -> None:
    comm.send({"type": "no_such_thing"})
    error = comm.reply("error")
    assert error["request"] == "no_such_thing"
    assert error["error"]["kind"] == "UsageError"
    comm.send({"type": "ask", "question": "no id"})
    assert "id" in comm.reply("error")["error"]["message"]
    comm.send({"type": "ask", "id": "bad-frames", "question": "q", "frames": "sales"})
    assert comm.reply("error")["id"] == "bad-frames"
    # a frame that does not exist ends the question with a clear Failed event
    events = comm.events(ask(comm, "q", frames=["nope"]))
    assert events[-1]["type"] == "Failed"
    assert events[-1]["error"]["kind"] == "FrameError"
    assert "nope" in events[-1]["error"]["message"]


def test_reset_forgets_the_conversation(loaded: Frontend, comm: Comm, server: LLMServer) -> None:
    server.script(code_answer("result = 5", "Five."))
    comm.events(ask(comm, "five?"))
    comm.send({"type": "reset"})
    assert comm.reply("reset") == {"type": "reset", "ok": True}
    again = loaded.open(data={"type": "hello"})
    assert again.reply("hello")["history"] == []
    again.close()


def _events_or_cancel(comm: Comm, request_id: str, timeout: float) -> list[Msg]:
    """The request's events; on timeout it is cancelled so later tests find the kernel free."""
    try:
        return comm.events(request_id, timeout=timeout)
    except TimeoutError:
        comm.send({"type": "cancel", "id": request_id})
        comm.events(request_id, timeout=30)
        statuses = [
            m["content"]["data"]["event"]
            for m in comm.frontend.messages
            if m["msg_type"] == "comm_msg"
            and m["content"]["data"].get("id") == request_id
            and m["content"]["data"]["event"]["type"] == "Status"
        ]
        raise AssertionError(
            f"no answer within {timeout} s; last status: {statuses[-1] if statuses else None}"
        ) from None


def test_run_mode_streams_outputs(comm: Comm, server: LLMServer) -> None:
    server.script(
        code_answer("result = sales['revenue'].sum()\nprint('total', result)", "Total revenue.")
    )
    events = _events_or_cancel(comm, ask(comm, "total revenue?", mode="run"), 90)
    final = events[-1]
    assert final["type"] == "Done", final
    assert final["outcome"] == "ran"
    outputs = [e for e in events if e["type"] == "Output"]
    assert any("7.5" in str(o["data"].get("text/plain", "")) for o in outputs)


def test_run_existing_code_in_the_sandbox(comm: Comm) -> None:
    request_id = uuid.uuid4().hex
    comm.send(
        {"type": "run", "id": request_id, "code": "result = len(sales) * 2", "frames": ["sales"]}
    )
    events = _events_or_cancel(comm, request_id, 90)
    assert events[-1]["type"] == "Done", events[-1]
    assert any("6" in str(e["data"].get("text/plain", "")) for e in events if e["type"] == "Output")


# --- kernel → front end: insert a cell ---------------------------------------------------


def _frontend_opens(fe: Frontend, start: int) -> Msg:
    return fe.wait_for(
        lambda m: (
            m["msg_type"] == "comm_open" and m["content"]["target_name"] == "dataagent.frontend"
        ),
        start=start,
    )


def test_request_insert_is_acknowledged(loaded: Frontend) -> None:
    start = loaded.mark()
    reply = loaded.execute(
        "from dataagent_jupyter import frontend as _c\n"
        "acks = []\n"
        "_c.request_insert('df2 = sales.copy()', cell_id='cell-7', on_ack=acks.append)"
    )
    assert reply["status"] == "ok", reply
    opened = _frontend_opens(loaded, start)
    assert opened["content"]["data"] == {
        "type": "insert_cell",
        "code": "df2 = sales.copy()",
        "cell_id": "cell-7",
        "replace": False,
    }
    comm_id = opened["content"]["comm_id"]
    # JupyterLab inserts the cell, answers and the kernel closes the comm
    loaded._send(
        "comm_msg",
        {"comm_id": comm_id, "data": {"type": "inserted", "ok": True, "cell_id": "new-1"}},
    )
    loaded.wait_for(
        lambda m: m["msg_type"] == "comm_close" and m["content"]["comm_id"] == comm_id, start=start
    )
    assert loaded.eval("acks") == "[True]"


def test_request_insert_without_a_frontend_target(loaded: Frontend) -> None:
    start = loaded.mark()
    loaded.execute(
        "acks2 = []\n_c.request_insert('x = 1', cell_id=None, replace=True, on_ack=acks2.append)"
    )
    opened = _frontend_opens(loaded, start)
    assert opened["content"]["data"]["replace"] is True
    # a front end that does not know the target closes the comm at once
    loaded._send("comm_close", {"comm_id": opened["content"]["comm_id"], "data": {}})
    deadline = time.monotonic() + 10
    while loaded.eval("acks2") != "[False]" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert loaded.eval("acks2") == "[False]"


def test_current_cell_id_comes_from_jupyterlab_metadata(loaded: Frontend) -> None:
    reply = loaded.execute(
        "from dataagent_jupyter.frontend import current_cell_id\nseen_cell = current_cell_id()",
        metadata={"cellId": "abc-123"},
    )
    assert reply["status"] == "ok"
    assert loaded.eval("seen_cell") == "'abc-123'"
    loaded.execute("seen_cell = current_cell_id()")
    assert loaded.eval("seen_cell") == "None"


# --- a kernel of its own -----------------------------------------------------------------


def test_missing_key_is_reported_not_raised(server: LLMServer) -> None:
    fe = Frontend({"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": ""})
    try:
        assert (
            fe.execute(
                "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\n%load_ext dataagent_jupyter"
            )["status"]
            == "ok"
        )
        comm = fe.open(data={"type": "hello"})
        assert comm.reply("hello")["status"]["key_set"] is False
        events = comm.events(ask(comm, "anything?"))
        assert events[-1]["type"] == "Failed"
        assert events[-1]["error"]["kind"] == "MissingAPIKey"
        assert "OPENAI_API_KEY" in events[-1]["error"]["hint"]
    finally:
        fe.close()


def test_unload_removes_the_target_and_closes_comms(server: LLMServer) -> None:
    fe = Frontend({"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": server.api_key or ""})
    try:
        assert fe.execute("%load_ext dataagent_jupyter")["status"] == "ok"
        comm = fe.open(data={"type": "hello"})
        comm.reply("hello")
        assert fe.execute("%unload_ext dataagent_jupyter")["status"] == "ok"
        comm.closed(timeout=10)
        assert fe.eval("'dataagent' in get_ipython().kernel.comm_manager.targets") == "False"
        later = fe.open(data={"type": "hello"})
        later.closed(timeout=10)
        # and loading again brings it back (what the panel's silent %load_ext does)
        assert fe.execute("%load_ext dataagent_jupyter")["status"] == "ok"
        again = fe.open(data={"type": "hello"})
        assert again.reply("hello")["type"] == "hello"
    finally:
        fe.close()


def test_stop_ends_a_long_run_in_the_sandbox(comm: Comm) -> None:
    request_id = uuid.uuid4().hex
    comm.send(
        {"type": "run", "id": request_id, "code": "import time\ntime.sleep(60)", "frames": None}
    )
    comm.first_event(request_id, "Status", timeout=60)
    time.sleep(0.5)
    started = time.monotonic()
    comm.send({"type": "cancel", "id": request_id})
    events = comm.events(request_id, timeout=30)
    assert events[-1]["type"] == "Failed"
    assert events[-1]["error"]["kind"] == "Cancelled"
    assert time.monotonic() - started < 6


def test_fix_request_streams_a_fix_of_the_last_failing_cell(
    loaded: Frontend, comm: Comm, server: LLMServer
) -> None:
    loaded.execute("total = sales['revenu'].sum()")  # a typo: KeyError
    server.script(code_answer("total = sales['revenue'].sum()", "The column is 'revenue'."))
    request_id = uuid.uuid4().hex
    comm.send({"type": "fix", "id": request_id})
    events = comm.events(request_id)
    assert events[-1]["type"] == "Done"
    proposed = next(e for e in events if e["type"] == "CodeProposed")
    assert proposed["code"].strip() == "total = sales['revenue'].sum()"
    asked = server.chat_requests()[-1].messages[-1]["content"]
    assert "total = sales['revenu'].sum()" in asked and "KeyError" in asked
    # after a cell that worked there is nothing to fix, and the panel is told so
    loaded.execute("ok = 1")
    comm.send({"type": "fix", "id": uuid.uuid4().hex})
    error = comm.reply("error")
    assert error["request"] == "fix"
    assert "ran without an error" in error["error"]["message"]
