"""Run mode end to end: %%ask --run in a real kernel, a real sandbox child, the fix loop."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator

import pytest
from kernel_helpers import Kernel, extension_kernel, hold_threads
from llm_server import LLMServer, Reply, code_answer

pytestmark = pytest.mark.kernel

CHART = """import matplotlib.pyplot as plt
totals = sales.groupby("region")["revenue"].sum()
print("regions:", len(totals))
fig, ax = plt.subplots()
totals.plot.bar(ax=ax)
ax.set_title("Revenue by region")
result = totals.to_frame()
result"""


@pytest.fixture(scope="module")
def kernel(server: LLMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    setup = (
        "%load_ext dataagent\n"
        "import pandas as pd\n"
        "sales = pd.DataFrame({'region': pd.Categorical(['N', 'S', 'N', 'E']),\n"
        "                      'revenue': [10.0, 20.0, 30.0, 5.5],\n"
        "                      'units': pd.array([1, None, 3, 4], dtype='Int64'),\n"
        "                      'when': pd.date_range('2024-01-01', periods=4, tz='UTC')})\n"
        "original = sales.copy(deep=True)"
    )
    with extension_kernel(
        server,
        setup,
        env={"AWS_SECRET_ACCESS_KEY": "aws-secret-for-the-test"},
        cwd=str(tmp_path_factory.mktemp("notebook")),
    ) as k:
        yield k


def test_run_shows_text_table_chart_and_result(kernel: Kernel, server: LLMServer) -> None:
    server.script(code_answer(CHART, "Sum revenue per region and plot it."))
    ex = kernel.execute("%%ask sales --run\ntotal revenue by region as a bar chart")
    assert ex.ok, ex.error
    assert "regions: 3" in ex.stdout
    pngs = ex.data("image/png")
    assert pngs and base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    tables = [h for h in ex.data("text/html") if "<table" in h]
    assert len(tables) == 1 and "revenue" in tables[0]  # `result` shown once, not twice
    statuses = [x for x in ex.data("text/plain") if x.startswith(("⏳", "✓"))]
    assert any("Running" in s for s in statuses)
    assert statuses[-1].startswith("✓ Done in")
    assert "charts saved" in statuses[-1] and ".png" in statuses[-1]
    # the code that ran is shown in the cell; nothing is proposed as a new cell
    assert any("Revenue by region" in h for h in ex.data("text/html"))
    assert ex.next_input is None
    # the user's namespace is untouched without --into
    assert kernel.eval("'result' in globals() or 'totals' in globals()") == "False"


def test_into_brings_the_result_back_with_dtypes(kernel: Kernel, server: LLMServer) -> None:
    server.script(code_answer("result = sales[sales['revenue'] > 6].copy()\nresult"))
    ex = kernel.execute("%%ask sales --run --into big\nrows with revenue above 6")
    assert ex.ok, ex.error
    assert kernel.eval("big.dtypes.to_dict() == sales.dtypes.to_dict()") == "True"
    assert kernel.eval("str(big['region'].dtype), str(big['units'].dtype)") == (
        "('category', 'Int64')"
    )
    assert kernel.eval("big.equals(sales[sales['revenue'] > 6])") == "True"
    assert kernel.eval("type(big).__name__") == "'DataFrame'"
    assert kernel.eval("len(big)") == "3"


def test_child_code_never_mutates_the_users_frame(kernel: Kernel, server: LLMServer) -> None:
    server.script(
        code_answer(
            "sales.drop(columns=['units'], inplace=True)\n"
            "sales['revenue'] = 0\nresult = sales.shape\nresult"
        )
    )
    assert kernel.execute("%%ask sales --run\ndrop units").ok
    assert kernel.eval("sales.equals(original)") == "True"


def test_secrets_do_not_reach_the_child(kernel: Kernel, server: LLMServer) -> None:
    server.script(
        code_answer(
            "import os\nresult = sorted(k for k in os.environ if 'KEY' in k or 'SECRET' in k)\n"
            "print('VALUES', [v for v in os.environ.values()\n"
            "                 if 'sk-test' in v or 'aws-secret' in v])"
            "\nresult"
        )
    )
    ex = kernel.execute("%%ask sales --run\nwhich secrets can you see?")
    assert ex.ok, ex.error
    assert "VALUES []" in ex.stdout
    assert server.api_key not in ex.text and "aws-secret-for-the-test" not in ex.text


def test_fix_loop_shows_both_attempts_and_the_right_answer(
    kernel: Kernel, server: LLMServer
) -> None:
    server.script(
        code_answer("result = sales['revenu'].sum()\nresult", "Sum it."),
        code_answer("result = sales['revenue'].sum()\nresult", "Fixed the name."),
    )
    ex = kernel.execute("%%ask sales --run\ntotal revenue?")
    assert ex.ok, ex.error
    fix_request = server.chat_requests()[-1].messages
    assert "KeyError" in fix_request[-1]["content"] and "revenu" in fix_request[-1]["content"]
    assert any("Attempt 1 failed" in m and "KeyError" in m for m in ex.data("text/html"))
    assert any("Attempt 2" in m and "Fixed the name." in m for m in ex.data("text/html"))
    assert any("65.5" in x for x in ex.data("text/plain"))
    assert "2 attempts" in [x for x in ex.data("text/plain") if x.startswith("✓")][-1]


def test_all_attempts_failing_keeps_the_code_for_review(kernel: Kernel, server: LLMServer) -> None:
    kernel.execute("%config DataAgent.max_fix_attempts = 1")
    bad = code_answer("result = 1 / 0")
    server.script(bad, bad)
    ex = kernel.execute("%%ask sales --run\ndivide")
    kernel.execute("%config DataAgent.max_fix_attempts = 2")
    assert not ex.ok
    assert ex.error["ename"] == "ExecutionFailed"
    assert "still fails after 2 attempts: ZeroDivisionError" in "\n".join(ex.error["traceback"])
    assert ex.next_input is not None and "result = 1 / 0" in ex.next_input
    assert ex.next_input.startswith("# dataagent (failed, review it): divide")


def test_insert_check_proposes_the_version_that_worked(kernel: Kernel, server: LLMServer) -> None:
    server.script(
        code_answer("result = sales.revenue.summ()"),
        code_answer("result = sales.revenue.sum()\nresult"),
    )
    ex = kernel.execute("%%ask sales --insert --check\ntotal?")
    assert ex.ok, ex.error
    assert ex.next_input is not None
    assert "sales.revenue.sum()" in ex.next_input and "summ" not in ex.next_input


def test_follow_up_starts_in_a_clean_child(kernel: Kernel, server: LLMServer) -> None:
    server.script(
        code_answer(
            "per_region = sales.groupby('region', observed=True).size()\n"
            "result = per_region\nresult"
        ),
        code_answer("result = int(per_region.max())\nresult"),
        code_answer("result = int(sales.groupby('region', observed=True).size().max())\nresult"),
    )
    assert kernel.execute("%%ask sales --run\nrows per region").ok
    ex = kernel.execute("%%ask sales --run\nthe largest of those")
    assert ex.ok, ex.error
    # the earlier answer's variable is gone: the model is told, and computes it again
    fix_request = server.chat_requests()[-1].text
    assert "NameError" in fix_request and "per_region" in fix_request
    assert "fresh kernel" in server.chat_requests()[0].text
    assert "2" in [x for x in ex.data("text/plain") if not x.startswith(("⏳", "✓"))][-1]


def test_changed_frame_is_sent_again(kernel: Kernel, server: LLMServer) -> None:
    server.script(
        code_answer("result = len(sales)\nresult"), code_answer("result = len(sales)\nresult")
    )
    kernel.execute("%%ask sales --run --no-cache\nhow many rows")
    kernel.execute("sales = pd.concat([sales, sales])")
    ex = kernel.execute("%%ask sales --run --no-cache\nhow many rows now")
    assert ex.ok, ex.error
    assert "8" in [x for x in ex.data("text/plain") if not x.startswith(("⏳", "✓"))]


def test_a_run_that_times_out_is_stopped(kernel: Kernel, server: LLMServer) -> None:
    kernel.execute("%config DataAgent.exec_timeout = 3")
    server.script(code_answer("while True:\n    pass"))
    ex = kernel.execute("%%ask sales --run\nloop forever", timeout=90)
    kernel.execute("%config DataAgent.exec_timeout = 120")
    assert not ex.ok
    assert ex.error["ename"] == "ExecutionTimeout"
    assert kernel.eval("1 + 1") == "2"
    server.script(Reply(text=code_answer("result = 'alive'\nresult")))
    assert "'alive'" in kernel.execute("%%ask sales --run\nstill there?").text


def wait_idle(kernel: Kernel) -> str:
    """The status text once the (warm) child has finished starting."""
    import time

    deadline = time.monotonic() + 60
    while True:
        text = kernel.execute("%dataagent status").text
        if "Analysis kernel:** idle" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def test_status_reports_the_child_and_restart_replaces_it(kernel: Kernel) -> None:
    text = wait_idle(kernel)
    assert "Analysis kernel:** idle" in text
    assert "Limits:" in text and "Protections:" in text
    assert "landlock" in text.lower()
    pid = text.split("(pid ")[1].split(",")[0]
    assert kernel.execute("%dataagent restart").ok
    after = wait_idle(kernel)
    assert "Analysis kernel:** idle" in after
    assert f"(pid {pid}," not in after


def test_schema_privacy_holds_in_the_fix_loop_and_follow_ups(
    kernel: Kernel, server: LLMServer
) -> None:
    server.script(
        code_answer("raise ValueError('bad region ' + str(sales['region'].iloc[1]) + 'ZQX')"),
        code_answer("result = str(sales['region'].iloc[1]) + 'ZQX'\nresult"),
        code_answer("result = 1"),
    )
    ex = kernel.execute("%%ask sales --run --privacy schema\nfind the odd region")
    assert ex.ok, ex.error
    fix_request = server.chat_requests()[-1].text
    assert "ValueError" in fix_request and "messages are withheld" in fix_request
    assert "SZQX" not in fix_request and "bad region S" not in fix_request
    kernel.execute("%%ask sales --run --privacy schema\nfollow up")
    follow_up = server.chat_requests()[-1].text
    assert "SZQX" not in follow_up  # the earlier result's value is not sent back
    assert "ran ok" in follow_up


CHAINED = """def parse(value):
    return int(value + 'ZQX')
try:
    parse(str(sales['region'].iloc[1]))
except ValueError as err:
    raise RuntimeError(
        'could not use the region\\nrow 1 holds ' + str(sales['region'].iloc[1]) + 'ZQX'
    ) from err"""


def test_schema_fix_loop_sends_types_and_lines_never_messages(
    kernel: Kernel, server: LLMServer
) -> None:
    # A chained exception whose messages (one over two lines) both quote a cell value.
    server.script(code_answer(CHAINED), code_answer("result = 1"))
    ex = kernel.execute("%%ask sales --run --privacy schema\nparse the region")
    assert ex.ok, ex.error
    request = server.chat_requests()[-1]
    fix_request = request.text
    assert "SZQX" not in fix_request and "holds S" not in fix_request
    assert "invalid literal" not in fix_request  # no message at all, not even the first
    assert "ValueError" in fix_request and "RuntimeError" in fix_request
    assert "direct cause" in fix_request
    assert "line 2 of the code: return int(value + 'ZQX')" in fix_request
    assert "line 6 of the code: raise RuntimeError(" in fix_request
    # in sample mode the messages are what the model needs, and they are sent
    server.script(code_answer(CHAINED), code_answer("result = 1"))
    ex = kernel.execute("%%ask sales --run\nparse the region")
    assert ex.ok, ex.error
    assert "SZQX" in server.chat_requests()[-1].text


def test_run_starts_while_another_process_holds_300_threads(
    kernel: Kernel, server: LLMServer
) -> None:
    # RLIMIT_NPROC counts every task of the user: an ordinary user with a browser open
    # (hundreds of threads) could not start the child at all.
    holder = hold_threads(320)
    try:
        assert kernel.execute("%dataagent restart").ok
        server.script(code_answer("print('child started')"))
        ex = kernel.execute("%%ask sales --run\nanything")
        assert ex.ok, ex.error
        assert "child started" in ex.stdout
        assert "process limit" in wait_idle(kernel)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_a_frame_that_cannot_be_copied_is_named(kernel: Kernel, server: LLMServer) -> None:
    kernel.execute("import threading\nodd = pd.DataFrame({'lock': [threading.Lock()]})")
    server.script(code_answer("result = len(odd)"))
    ex = kernel.execute("%%ask odd --run\nhow many?")
    assert not ex.ok
    assert ex.error["ename"] == "FrameError"
    message = "\n".join(ex.error["traceback"])
    assert "'odd' holds a value that cannot be copied" in message
    assert "Traceback" not in message


def test_result_is_shown_even_when_the_code_does_not_end_with_it(
    kernel: Kernel, server: LLMServer
) -> None:
    server.script(code_answer("result = sales[['revenue']].describe()"))
    ex = kernel.execute("%%ask sales --run\nsummary of revenue")
    assert ex.ok, ex.error
    tables = [h for h in ex.data("text/html") if "<table" in h]
    assert len(tables) == 1 and "mean" in tables[0]


def test_a_question_asked_before_a_fresh_child_is_up_waits_and_says_so(
    server: LLMServer, tmp_path
) -> None:
    import pandas as pd

    from dataagent_jupyter.config import DataAgent
    from dataagent_jupyter.events import Done, Output, Status
    from dataagent_jupyter.options import AskOptions
    from dataagent_jupyter.session import Session

    server.script(code_answer("print('one')"), code_answer("print('two')"))
    config = DataAgent(
        base_url=server.url,
        api_key=server.api_key,
        output_dir=str(tmp_path),
        data_dir=str(tmp_path),
        cache=False,
    )
    session = Session(config, {"df": pd.DataFrame({"a": [1]})}, notebook="waiting")
    try:
        options = AskOptions(frames=("df",), mode="run", use_cache=False)
        first = list(session.ask("one?", options))
        # asked at once: the child of the first answer is gone, the next one still starting
        second = list(session.ask("two?", options))
    finally:
        session.close()
    for events, said in ((first, "one\n"), (second, "two\n")):
        assert isinstance(events[-1], Done), events[-1]
        printed = [e for e in events if isinstance(e, Output) and e.name == "stdout"]
        assert [e.data["text/plain"] for e in printed] == [said]
        waits = [e for e in events if isinstance(e, Status) and "waiting for a fresh" in e.message]
        assert waits, [e for e in events if isinstance(e, Status)]


def test_control_sequences_from_the_child_never_reach_the_notebook(
    kernel: Kernel, server: LLMServer
) -> None:
    server.script(
        code_answer(
            "print('\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\x1b]0;owned\\x07\\x1b[2Jtotal '\n"
            "      '\\x1b[1mbold\\x1b[0m')"
        )
    )
    ex = kernel.execute("%%ask sales --run\nprint the total")
    assert ex.ok, ex.error
    shown = ex.text  # streams, displays and any error, as the notebook shows them
    assert "total \x1b[1mbold\x1b[0m" in shown
    assert "\x1b]" not in shown and "\x1b[2J" not in shown


def test_control_sequences_from_the_child_never_reach_terminal_ipython(
    server: LLMServer, tmp_path
) -> None:
    import os

    server.script(
        code_answer(
            "print('\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\x1b]2;owned\\x07\\x1b[2Jterminal ok')"
        )
    )
    script = (
        "import pandas as pd\n"
        "get_ipython().run_line_magic('load_ext', 'dataagent')\n"
        "sales = pd.DataFrame({'a': [1, 2]})\n"
        "get_ipython().run_cell_magic('ask', 'sales --run', 'print it')\n"
    )
    env = dict(
        os.environ,
        OPENAI_BASE_URL=server.url,
        OPENAI_API_KEY=server.api_key or "",
    )
    done = subprocess.run(
        [sys.executable, "-m", "IPython", "--simple-prompt", "--colors=nocolor", "-c", script],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    out = done.stdout.decode(errors="replace")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert "terminal ok" in out
    assert "\x1b]" not in out and "\x1b[2J" not in out
