"""The magics in a real ipykernel, driven through jupyter_client like a notebook would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kernel_helpers import Kernel
from llm_server import LLMServer, Reply, code_answer

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def kernel(server: LLMServer) -> Iterator[Kernel]:
    k = Kernel(
        env={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": server.api_key or ""},
        extra_args=["--DataAgent.warm_child=False"],
    )
    k.execute(
        "import pandas as pd\n"
        "sales = pd.DataFrame({'region': ['N', 'S', 'N'], 'revenue': [1.0, 2.5, 4.0]})"
    )
    yield k
    k.shutdown()


def test_load_ext_and_ask_proposes_a_cell(kernel: Kernel, server: LLMServer) -> None:
    assert kernel.execute("%load_ext dataagent").ok
    server.script(
        Reply(
            text=code_answer(
                "result = sales.groupby('region')['revenue'].sum()\nresult",
                "Sum the revenue per region.",
            ),
            chunk_size=4,
            chunk_delay=0.01,
        )
    )
    ex = kernel.execute("%%ask sales\nrevenue per region?")
    assert ex.ok, ex.error
    assert ex.next_input == (
        "# dataagent: revenue per region?\n"
        "result = sales.groupby('region')['revenue'].sum()\nresult\n"
    )
    # the payload asks to insert below, not to replace the asking cell
    payload = next(p for p in ex.payloads if p["source"] == "set_next_input")
    assert payload["replace"] is False
    statuses = [x for x in ex.data("text/plain") if x.startswith(("⏳", "✓"))]
    assert any("Asking gpt-4o-mini" in s for s in statuses)
    assert statuses[-1].startswith("✓ Code proposed in a new cell below in")
    # the explanation streamed: several updates of the answer display, growing; shown as
    # cleaned HTML, never as text/markdown (JupyterLab would trust raw HTML in it)
    answers = [x for x in ex.data("text/html") if "Sum" in x]
    assert answers[-1].startswith("<p>Sum the revenue per region.</p>")
    assert len(answers) >= 3 and ex.data("text/markdown") == []
    # nothing was executed in the user's kernel
    assert kernel.eval("'result' in globals()") == "False"


def test_errors_show_a_message_not_a_traceback(kernel: Kernel, server: LLMServer) -> None:
    kernel.execute("%load_ext dataagent")
    server.script(Reply(status=401))
    ex = kernel.execute("%%ask sales\nq?")
    assert not ex.ok
    assert ex.error is not None
    assert ex.error["ename"] == "AuthenticationFailed"
    joined = "\n".join(ex.error["traceback"])
    assert "refused the API key (401)" in joined
    assert "File " not in joined and "Traceback" not in joined
    assert server.api_key not in ex.text
    # the kernel is alive and usable afterwards
    assert kernel.eval("1 + 1") == "2"


def test_help_lists_the_options(kernel: Kernel) -> None:
    kernel.execute("%load_ext dataagent")
    ex = kernel.execute("%%ask?\n")
    text = "".join(p.get("data", {}).get("text/plain", "") for p in ex.payloads) + ex.text
    for flag in ("--run", "--insert", "--into", "--model", "--privacy", "--no-cache"):
        assert flag in text


def test_unload_in_a_kernel_leaves_no_magic(kernel: Kernel) -> None:
    kernel.execute("%load_ext dataagent_jupyter")
    assert kernel.execute("%unload_ext dataagent_jupyter").ok
    ex = kernel.execute("%%ask sales\nq?")
    assert "Cell magic `%%ask` not found" in ex.stderr
    kernel.execute("%load_ext dataagent_jupyter")


def test_the_conversation_continues_after_a_kernel_restart(
    server: LLMServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path_factory.mktemp("jupyter-data")
    k = Kernel(
        env={
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": server.api_key or "",
            "JUPYTER_DATA_DIR": str(data),
            "JPY_SESSION_NAME": "analysis.ipynb",
        },
        extra_args=["--DataAgent.warm_child=False"],
    )
    try:
        setup = "%load_ext dataagent\nimport pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})"
        assert k.execute(setup).ok
        server.script(code_answer("result = df['a'].sum()"), code_answer("result = 1.5"))
        assert k.execute("%%ask df\nsum of a?").ok
        k.km.restart_kernel(now=True)
        k.kc.wait_for_ready(timeout=60)
        assert k.eval("'df' in globals()") == "False"  # a really fresh kernel
        assert k.execute(setup).ok
        assert k.execute("%%ask df\nand the mean?").ok
        follow_up = server.chat_requests()[-1].messages
        assert follow_up[1] == {"role": "user", "content": "sum of a?"}
        assert "result = df['a'].sum()" in follow_up[2]["content"]
    finally:
        k.shutdown()


def test_a_line_question_ending_in_a_question_mark_is_asked(
    kernel: Kernel, server: LLMServer
) -> None:
    kernel.execute("%load_ext dataagent")
    server.script(code_answer("result = sales['revenue'].isna().sum()\nresult"))
    ex = kernel.execute("%ask how many rows have no revenue?")
    assert ex.ok, ex.error
    assert "not found" not in ex.text
    assert ex.next_input is not None
    assert ex.next_input.startswith("# dataagent: how many rows have no revenue?")
    # %ask? is still the magic's help
    help_text = kernel.execute("%ask?")
    shown = "".join(p.get("data", {}).get("text/plain", "") for p in help_text.payloads)
    assert "--run" in shown
