"""``%dataagent fix`` in a real kernel: the user's own failing cell is sent and fixed."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kernel_helpers import Kernel
from llm_server import LLMServer, code_answer

pytestmark = pytest.mark.kernel

SETUP = (
    "import pandas as pd\n"
    "sales = pd.DataFrame({'region': ['Qwxzt', 'Vrmnpl', 'Qwxzt'],\n"
    "                      'revenue': ['91234.5', '87654.25', 'n/a']})\n"
    "other = pd.DataFrame({'x': [1]})\n"
    "%load_ext dataagent"
)
MISSPELT = "totals = sales.groupby('regoin')['revenue'].count()\ntotals"
FIXED = "totals = sales.groupby('region')['revenue'].count()\ntotals"


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with LLMServer() as srv:
        yield srv


@pytest.fixture
def kernel(server: LLMServer, tmp_path) -> Iterator[Kernel]:
    k = Kernel(
        env={
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": server.api_key or "",
            "JUPYTER_DATA_DIR": str(tmp_path),
        },
        extra_args=["--DataAgent.warm_child=False"],
    )
    assert k.execute(SETUP).ok
    yield k
    k.shutdown()


def test_fix_sends_the_failing_cell_and_proposes_the_corrected_one(
    kernel: Kernel, server: LLMServer
) -> None:
    failed = kernel.execute(MISSPELT)
    assert failed.error and failed.error["ename"] == "KeyError"
    server.script(code_answer(FIXED, "The column is spelt 'region', not 'regoin'."))
    ex = kernel.execute("%dataagent fix")
    assert ex.ok, ex.error
    [request] = server.chat_requests()
    asked = request.messages[-1]["content"]
    assert MISSPELT in asked
    assert "KeyError" in asked and "line 1 of the cell" in asked
    assert "Traceback" in asked  # privacy='sample': the traceback itself is sent
    # the frames the cell names are described, not every frame in the notebook
    assert "### sales" in asked and "### other" not in asked
    assert ex.next_input == f"# dataagent: fix the KeyError in the last failing cell\n{FIXED}\n"
    assert "The column is spelt 'region'" in ex.text


def test_schema_privacy_sends_types_and_line_numbers_only(
    kernel: Kernel, server: LLMServer
) -> None:
    assert kernel.execute("%config DataAgent.privacy = 'schema'").ok
    # the error message quotes a cell value: "could not convert string to float: 'n/a'"
    failed = kernel.execute("x = 1\nsales['revenue'].astype(float)")
    assert failed.error and "n/a" in failed.error["evalue"]
    server.script(code_answer("x = 1\npd.to_numeric(sales['revenue'], errors='coerce')"))
    assert kernel.execute("%dataagent fix").ok
    sent = json.dumps(server.chat_requests()[0].body)
    for value in ("n/a", "Qwxzt", "Vrmnpl", "91234", "87654", "Traceback"):
        assert value not in sent
    asked = server.chat_requests()[0].messages[-1]["content"]
    assert "ValueError" in asked and "line 2 of the cell" in asked
    assert "sales['revenue'].astype(float)" in asked  # the user's code is not a value


def test_fix_after_a_cell_that_worked_says_so(kernel: Kernel, server: LLMServer) -> None:
    assert kernel.execute("y = 2").ok
    ex = kernel.execute("%dataagent fix")
    assert ex.ok
    assert "The last cell ran without an error: there is nothing to fix." in ex.text
    assert server.chat_requests() == []
    # a fix that is run in the sandbox goes through the run path like %%ask --run
    assert not kernel.execute("1/0").ok
    server.script(code_answer("result = 1 / 1\nresult", "Division by zero."))
    ran = kernel.execute("%dataagent fix --run", timeout=120)
    assert ran.ok, ran.error
    assert ran.next_input is None
    assert any(x.startswith("✓ Done") for x in ran.data("text/plain"))
