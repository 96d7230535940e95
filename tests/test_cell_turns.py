"""Turns belong to cells: re-running a notebook asks nothing new, in one kernel or after a
restart. Driven through a real ipykernel with the cell ids JupyterLab sends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_helpers import Execution, Kernel
from llm_server import LLMServer, Reply, Request, code_answer

pytestmark = pytest.mark.kernel

SETUP = (
    "import pandas as pd\n"
    "sales = pd.DataFrame({'region': ['N', 'S', 'N'], 'revenue': [1.0, 2.5, 4.0]})\n"
    "%load_ext dataagent"
)


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer(default=lambda request: _answer_for(request)) as srv:
        yield srv


def _answer_for(request: Request) -> Reply:
    """Each question gets its own answer, so a stale context would show."""
    question = request.messages[-1]["content"].rsplit("Question: ", 1)[-1]
    return Reply(text=code_answer(f"result = {len(question)}", f"Answering {question}"))


class Notebook:
    """A notebook's kernel: start, restart, run cells by id."""

    def __init__(self, server: LLMServer, data: Path) -> None:
        self.env = {
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": server.api_key or "",
            "JUPYTER_DATA_DIR": str(data),
            "JPY_SESSION_NAME": str(data / "analysis.ipynb"),
        }
        self.kernel: Kernel | None = None
        self.restart()

    def restart(self) -> None:
        if self.kernel is not None:
            self.kernel.shutdown()
        self.kernel = Kernel(env=self.env, extra_args=["--DataAgent.warm_child=False"])
        assert self.kernel.execute(SETUP).ok

    def run(self, cell_id: str, source: str) -> Execution:
        assert self.kernel is not None
        ex = self.kernel.execute(source, cell_id=cell_id)
        assert ex.ok, ex.error
        return ex


@pytest.fixture
def notebook(server: LLMServer, tmp_path: Path) -> Iterator[Notebook]:
    nb = Notebook(server, tmp_path)
    yield nb
    if nb.kernel is not None:
        nb.kernel.shutdown()


CELLS = [("cell-a", "%%ask sales\nrevenue per region?"), ("cell-b", "%%ask sales\nand the mean?")]


def run_all(nb: Notebook) -> list[Execution]:
    return [nb.run(cell_id, source) for cell_id, source in CELLS]


def status(ex: Execution) -> str:
    return [x for x in ex.data("text/plain") if x.startswith("✓")][-1]


def test_run_all_again_and_after_a_restart_makes_no_requests(
    notebook: Notebook, server: LLMServer
) -> None:
    first = run_all(notebook)
    assert len(server.chat_requests()) == 2
    # the second cell's context is the first cell's turn
    second_request = server.chat_requests()[1].messages
    assert next(m["content"] for m in second_request if m["role"] == "user") == (
        "revenue per region?"
    )

    again = run_all(notebook)
    assert len(server.chat_requests()) == 2  # same kernel: all from the cache
    assert [e.next_input for e in again] == [e.next_input for e in first]
    assert all("from cache" in status(e) for e in again)
    assert not any("from cache" in status(e) for e in first)

    notebook.restart()
    after_restart = run_all(notebook)
    assert len(server.chat_requests()) == 2  # the conversation came back from the history
    assert [e.next_input for e in after_restart] == [e.next_input for e in first]


def test_editing_a_question_asks_only_for_that_cell_and_keeps_its_context(
    notebook: Notebook, server: LLMServer
) -> None:
    run_all(notebook)
    notebook.run("cell-b", "%%ask sales\nand the median?")
    assert len(server.chat_requests()) == 3
    users = [m["content"] for m in server.chat_requests()[2].messages if m["role"] == "user"]
    # context: the turn before this cell's (not this cell's own earlier version)
    assert users[0] == "revenue per region?"
    assert len(users) == 2 and users[1].endswith("Question: and the median?")

    # the first cell asked afresh has no context: it stands first in the conversation
    notebook.run("cell-a", "%%ask sales --no-cache\nrevenue per region?")
    assert len(server.chat_requests()) == 4
    assert [m["role"] for m in server.chat_requests()[3].messages] == ["system", "user"]


def test_questions_without_a_cell_id_append_and_see_the_cell_turns(
    notebook: Notebook, server: LLMServer
) -> None:
    run_all(notebook)
    assert notebook.kernel is not None
    for _ in range(2):  # e.g. a runner that sends no cell id: each run is a new turn
        assert notebook.kernel.execute("%ask and the max?").ok
    requests = server.chat_requests()
    assert len(requests) == 4  # appended: the second one's context holds the first
    users = [m["content"] for m in requests[3].messages if m["role"] == "user"]
    assert users[:3] == ["revenue per region?", "and the mean?", "and the max?"]


def test_history_shows_the_cell_and_proposals_carry_provenance(
    notebook: Notebook, server: LLMServer
) -> None:
    [first, _] = run_all(notebook)
    [proposal] = [c for c in first.comm_opens if c["target_name"] == "dataagent.frontend"]
    data = proposal["data"]
    assert data["type"] == "proposal" and data["cell_id"] == "cell-a"
    assert data["code"] == first.next_input
    record = data["metadata"]["dataagent"]
    assert record["question"] == "revenue per region?"
    assert record["model"] == "gpt-4o-mini"
    assert record["turn_id"] and record["asked_at"].endswith("+00:00")
    assert notebook.kernel is not None
    shown = notebook.kernel.execute("%dataagent history").text
    assert "cell-a" in shown and "cell-b" in shown
