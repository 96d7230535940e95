"""%%ask / %ask / %dataagent through IPython's shell, against the scripted LLM server."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import pandas as pd
import pytest
from IPython.core.error import UsageError as IPythonUsageError
from llm_server import LLMServer, Reply, code_answer

from dataagent_jupyter import errors


@pytest.fixture
def sales(ip) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "region": ["North", "South", "North", "East"],
            "revenue": [10.0, 20.0, 30.0, 5.5],
            "quarter": ["Q1", "Q1", "Q2", "Q2"],
        }
    )
    ip.user_ns["sales"] = df
    ip.run_cell("pass")  # a cell ran: the frame tracker sees the new frame
    return df


def ask(ip, line: str, body: str) -> None:
    ip.run_cell_magic("ask", line, body)


def test_ask_proposes_code_below_with_the_question(ip, llm_env: LLMServer, sales) -> None:
    llm_env.script(
        code_answer(
            "result = sales.groupby('region')['revenue'].sum()\nresult", "Sum revenue per region."
        )
    )
    ask(ip, "sales", "total revenue by region?")
    assert ip.rl_next_input == (
        "# dataagent: total revenue by region?\n"
        "result = sales.groupby('region')['revenue'].sum()\nresult\n"
    )
    # nothing ran: no result variable appeared in the user's namespace
    assert "result" not in ip.user_ns
    request = llm_env.chat_requests()[0]
    assert request.body["stream"] is True
    assert request.body["model"] == "gpt-4o-mini"
    system, user = request.messages[0]["content"], request.messages[-1]["content"]
    assert "sales" in system and "`result`" in system and "pandas" in system
    assert "### sales (DataFrame, 4 rows × 3 columns)" in user
    assert user.rstrip().endswith("Question: total revenue by region?")


def test_line_magic_finds_frames_itself(ip, llm_env: LLMServer, sales) -> None:
    ip.user_ns["costs"] = pd.DataFrame({"x": [1]})
    ip.run_cell("pass")
    llm_env.script(code_answer("result = len(sales)"))
    ip.run_line_magic("ask", "how many rows don't have a price?")
    user = llm_env.chat_requests()[0].messages[-1]["content"]
    # most recently defined first
    assert user.index("### costs") < user.index("### sales")
    assert "Question: how many rows don't have a price?" in user
    assert ip.rl_next_input.startswith("# dataagent: how many rows don't have a price?")


def test_line_magic_options(ip, llm_env: LLMServer, sales) -> None:
    llm_env.script(code_answer("result = 1"))
    ip.run_line_magic("ask", "--model test-model --privacy schema what is in sales?")
    request = llm_env.chat_requests()[0]
    assert request.body["model"] == "test-model"
    assert "North" not in request.text
    with pytest.raises(errors.UsageError, match="unknown option --bogus"):
        ip.run_line_magic("ask", "--bogus what?")


def test_follow_up_sends_the_previous_turn(ip, llm_env: LLMServer, sales) -> None:
    llm_env.script(code_answer("result = sales['revenue'].sum()"), code_answer("result = 2"))
    ask(ip, "sales", "total revenue?")
    ask(ip, "sales", "and per quarter?")
    second = llm_env.chat_requests()[1].messages
    roles = [m["role"] for m in second]
    assert roles == ["system", "user", "assistant", "user"]
    assert second[1]["content"] == "total revenue?"
    assert "result = sales['revenue'].sum()" in second[2]["content"]
    ip.run_line_magic("dataagent", "reset")
    llm_env.script(code_answer("result = 3"))
    ask(ip, "sales", "fresh start?")
    assert [m["role"] for m in llm_env.chat_requests()[2].messages] == ["system", "user"]


def test_history_is_trimmed_to_max_history_turns(ip, llm_env: LLMServer, sales) -> None:
    ip.run_line_magic("config", "DataAgent.max_history_turns = 2")
    for i in range(4):
        llm_env.script(code_answer(f"result = {i}"))
        ask(ip, "sales", f"question {i}?")
    last = llm_env.chat_requests()[-1].messages
    assert [m["content"] for m in last if m["role"] == "user"][:-1] == [
        "question 1?",
        "question 2?",
    ]


def test_schema_privacy_request_holds_no_cell_value(ip, llm_env: LLMServer) -> None:
    ip.user_ns["people"] = pd.DataFrame(
        {
            "name": ["Qwxzt Vrmnpl", "Jjkkh Ppoiu"],
            "salary": [91234.5, 87654.25],
            "city": pd.Categorical(["Xanaduville", "Ophirton"]),
        }
    )
    ip.run_line_magic("config", "DataAgent.privacy = 'schema'")
    llm_env.script(code_answer("result = people['salary'].mean()"))
    ask(ip, "people", "average salary?")
    sent = json.dumps(llm_env.chat_requests()[0].body)
    for value in ("Qwxzt", "Vrmnpl", "Jjkkh", "Ppoiu", "91234", "87654", "Xanaduville", "Ophirton"):
        assert value not in sent
    assert "salary" in sent and "name" in sent


def test_series_can_be_asked_about(ip, llm_env: LLMServer, sales) -> None:
    ip.user_ns["rev"] = sales["revenue"]
    llm_env.script(code_answer("result = rev.max()"))
    ask(ip, "rev", "max?")
    assert "### rev (Series, 4 rows)" in llm_env.chat_requests()[0].text


@pytest.mark.parametrize(
    ("line", "body", "error", "text"),
    [
        ("sales", "   \n ", errors.UsageError, "the question is empty"),
        ("nosuch", "q?", errors.FrameError, "there is no variable named 'nosuch'"),
        ("n", "q?", errors.FrameError, "'n' is a int, not a DataFrame or Series"),
        ("sales --into 1bad --run", "q?", errors.UsageError, "--into needs a valid variable name"),
        ("sales --into out", "q?", errors.UsageError, "--into brings back the result of a run"),
    ],
)
def test_usage_errors_name_the_problem(ip, llm_env, sales, line, body, error, text) -> None:
    ip.user_ns["n"] = 3
    with pytest.raises(error, match=text):
        ask(ip, line, body)
    assert llm_env.chat_requests() == []


def test_errors_render_without_an_internal_traceback(ip, llm_env: LLMServer, sales) -> None:
    llm_env.script(Reply(status=401, error_message="bad key"))
    out = io.StringIO()
    with redirect_stdout(out):
        result = ip.run_cell("%%ask sales\nq?")
    assert isinstance(result.error_in_exec, errors.AuthenticationFailed)
    rendered = result.error_in_exec._render_traceback_()
    assert "refused the API key (401)" in rendered[0]
    assert "OPENAI_API_KEY" in rendered[1]
    assert len(rendered) == 2  # no frames from inside the extension


def test_no_code_asks_once_more_then_fails_showing_what_the_model_said(
    ip, llm_env: LLMServer, sales
) -> None:
    llm_env.script("I think the North region did best.", code_answer("result = 1"))
    ask(ip, "sales", "who did best?")
    retry = llm_env.chat_requests()[1].messages
    assert retry[-2] == {"role": "assistant", "content": "I think the North region did best."}
    assert "no ```python code block" in retry[-1]["content"]
    llm_env.script("Sorry, no idea.", "```python\nthis is not python(\n```")
    with pytest.raises(errors.NoCodeInAnswer) as err:
        ask(ip, "sales", "who did worst?")
    assert "does not parse" in err.value.message
    assert "this is not python(" in (err.value.hint or "")


def test_config_lists_options_and_never_shows_the_key(ip, llm_env: LLMServer) -> None:
    ip.run_line_magic("config", "DataAgent.api_key = 'sk-very-secret-value-123'")
    out = io.StringIO()
    with redirect_stdout(out):
        ip.run_line_magic("config", "DataAgent")
        ip.run_line_magic("config", "DataAgent.api_key")
    text = out.getvalue()
    for option in (
        "model",
        "base_url",
        "api_key",
        "mode",
        "privacy",
        "sample_rows",
        "max_prompt_tokens",
        "timeout",
        "max_history_turns",
    ):
        assert f"DataAgent.{option}" in text
    assert "sk-very-secret-value-123" not in text
    assert "<secret: set>" in text


def test_config_rejects_bad_values(ip, caplog) -> None:
    ip.run_line_magic("config", "DataAgent.mode = 'explode'")
    ip.run_line_magic("config", "DataAgent.memory_limit = 'lots'")
    assert "expected any of ['insert', 'run', 'agent']" in caplog.text
    assert "not a size: 'lots'" in caplog.text
    config = ip._dataagent_extension.config
    assert (config.mode, config.memory_limit) == ("insert", "50%")


def test_model_option_and_config_reach_the_endpoint(ip, llm_env: LLMServer, sales) -> None:
    ip.run_line_magic("config", "DataAgent.model = 'test-model'")
    llm_env.script(code_answer("result = 1"))
    ask(ip, "sales", "q?")
    assert llm_env.chat_requests()[0].body["model"] == "test-model"


def test_status_shows_endpoint_and_whether_a_key_is_set(ip, llm_env: LLMServer) -> None:
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        ip.run_line_magic("dataagent", "status")
    text = "\n".join(str(o.data) for o in cap.outputs)
    assert f"127.0.0.1:{llm_env.port}" in text
    assert "| API key | set |" in text
    assert llm_env.api_key not in text
    assert "| privacy | sample |" in text


def test_help_and_unknown_command(ip) -> None:
    with pytest.raises(errors.UsageError, match="unknown command 'fly'"):
        ip.run_line_magic("dataagent", "fly")
    doc = ip.find_cell_magic("ask").__doc__
    for flag in ("--run", "--insert", "--into", "--model", "--privacy", "--no-cache"):
        assert flag in doc


def test_unload_removes_every_magic_and_hook(ip) -> None:
    hooks_before = len(ip.events.callbacks["post_run_cell"])
    ip.run_line_magic("unload_ext", "dataagent_jupyter")
    assert ip.find_cell_magic("ask") is None
    assert ip.find_line_magic("ask") is None
    assert ip.find_line_magic("dataagent") is None
    assert all(type(c).__name__ != "DataAgent" for c in ip.configurables)
    assert len(ip.events.callbacks["post_run_cell"]) == hooks_before - 1
    assert not hasattr(ip, "_dataagent_extension")
    assert all(
        getattr(t, "__name__", "") != "ask_line_transform"
        for t in ip.input_transformer_manager.line_transforms
    )
    # loading under the other name works and is the same extension
    ip.run_line_magic("load_ext", "dataagent")
    assert ip.find_cell_magic("ask") is not None
    ip.extension_manager.loaded.discard("dataagent")
    ip.run_line_magic("load_ext", "dataagent_jupyter")  # both names: still one instance
    assert sum(type(c).__name__ == "DataAgent" for c in ip.configurables) == 1


def test_second_identical_question_is_answered_from_the_cache(ip, llm_env, sales) -> None:
    llm_env.script(code_answer("result = 1"), code_answer("result = 2"))
    ask(ip, "sales", "cached?")
    ip.run_line_magic("dataagent", "reset")  # same messages again: no history in the prompt
    ask(ip, "sales", "cached?")
    assert len(llm_env.chat_requests()) == 1
    assert ip.rl_next_input.endswith("result = 1\n")
    ip.run_line_magic("dataagent", "reset")
    ask(ip, "sales --no-cache", "cached?")
    assert len(llm_env.chat_requests()) == 2
    sales.loc[0, "revenue"] = 999.0  # a changed frame changes the prompt: a miss
    ip.run_line_magic("dataagent", "reset")
    llm_env.script(code_answer("result = 3"))
    ask(ip, "sales", "cached?")
    assert len(llm_env.chat_requests()) == 3


def test_history_export_and_stats_commands(ip, llm_env, sales, tmp_path) -> None:
    import nbformat
    from IPython.utils.capture import capture_output

    llm_env.script(code_answer("result = sales['revenue'].sum()", "Add it up."))
    ask(ip, "sales", "total revenue?")
    with capture_output() as cap:
        ip.run_line_magic("dataagent", "history 5")
        ip.run_line_magic("dataagent", "stats")
    html = "\n".join(o.data.get("text/html", "") for o in cap.outputs)
    assert "total revenue?" in html
    usage = llm_env.chat_requests()
    assert len(usage) == 1
    path = tmp_path / "conversation.ipynb"
    with capture_output():
        ip.run_line_magic("dataagent", f"export {path}")
    nb = nbformat.read(path, as_version=4)
    assert any(
        "result = sales['revenue'].sum()" in c.source for c in nb.cells if c.cell_type == "code"
    )
    assert any("total revenue?" in c.source for c in nb.cells if c.cell_type == "markdown")
    with pytest.raises(errors.UsageError, match="N must be a whole number"):
        ip.run_line_magic("dataagent", "history lots")


def test_conversation_continues_after_a_restart(llm_env, tmp_path) -> None:
    from dataagent_jupyter.config import DataAgent
    from dataagent_jupyter.options import AskOptions
    from dataagent_jupyter.session import Session

    frames = {"df": pd.DataFrame({"a": [1, 2]})}
    config = DataAgent(base_url=llm_env.url, api_key=llm_env.api_key, data_dir=str(tmp_path))
    first = Session(config, frames, notebook="nb.ipynb")
    llm_env.script(code_answer("result = df['a'].sum()"), code_answer("result = 2"))
    list(first.ask("sum of a?", AskOptions(frames=("df",))))
    first.close()  # the kernel goes away
    second = Session(config, frames, notebook="nb.ipynb")
    list(second.ask("and the mean?", AskOptions(frames=("df",))))
    messages = llm_env.chat_requests()[1].messages
    assert messages[1] == {"role": "user", "content": "sum of a?"}
    assert "result = df['a'].sum()" in messages[2]["content"]
    assert second.transcript()[0]["question"] == "sum of a?"
    other = Session(config, frames, notebook="other.ipynb")  # another notebook: fresh
    assert other.transcript() == []


def test_load_command_binds_a_frame_from_a_quoted_path(ip, llm_env, tmp_path) -> None:
    from IPython.utils.capture import capture_output

    path = tmp_path / "my sales.csv"
    path.write_text("region;revenue\nNorth;1,5\nSouth;2\n", encoding="cp1252")
    with capture_output() as cap:
        ip.run_line_magic("dataagent", f'load "{path}"')
    assert list(ip.user_ns["my_sales"].columns) == ["region", "revenue"]
    assert "my_sales" in cap.outputs[0].data["text/html"]
    with capture_output():
        ip.run_line_magic("dataagent", f'load "{path}" --name my_sales')
    assert "my_sales_2" in ip.user_ns  # never overwritten silently
    with pytest.raises(errors.LoadError, match="nope.csv"):
        ip.run_line_magic("dataagent", f"load {tmp_path / 'nope.csv'}")
    llm_env.script(code_answer("result = len(my_sales)"))
    ip.run_line_magic("ask", "how many rows?")
    assert "### my_sales_2" in llm_env.chat_requests()[0].text


def test_load_function_returns_the_frame_and_binds_it(ip, tmp_path) -> None:
    from IPython.utils.capture import capture_output

    import dataagent_jupyter

    path = tmp_path / "q1 sales.tsv"
    path.write_text("a\tb\n1\t2\n3\t4\n")
    ip.user_ns["q1_sales"] = "taken"
    with capture_output() as cap:
        frame = dataagent_jupyter.load(str(path))
    assert frame.shape == (2, 2)
    assert ip.user_ns["q1_sales"] == "taken"  # never overwritten
    assert ip.user_ns["q1_sales_2"] is frame
    assert "q1_sales_2" in cap.outputs[0].data["text/html"]


def test_stats_match_what_the_endpoint_reported(ip, llm_env, sales) -> None:
    from IPython.utils.capture import capture_output

    llm_env.script(
        Reply(text=code_answer("result = 1"), prompt_tokens=321, completion_tokens=45),
        Reply(text=code_answer("result = 2"), prompt_tokens=400, completion_tokens=5),
    )
    ask(ip, "sales", "first?")
    ask(ip, "sales", "second?")
    ip.run_line_magic("dataagent", "reset")
    ask(ip, "sales", "first?")  # answered from the cache: no tokens billed
    stats = ip._dataagent_extension.session.metrics.snapshot()
    assert stats.questions == 3
    assert stats.cache_hits == 1
    assert (stats.tokens_in, stats.tokens_out) == (721, 50)
    with capture_output() as cap:
        ip.run_line_magic("dataagent", "stats")
    assert "721" in cap.outputs[0].data["text/html"]


def test_chat_loads_the_extension_so_unload_ext_undoes_it(llm_env) -> None:
    from IPython.testing.globalipapp import get_ipython

    import dataagent_jupyter

    shell = get_ipython()
    widget = dataagent_jupyter.chat()
    try:
        assert shell.find_cell_magic("ask") is not None
    finally:
        widget.close()
    shell.run_line_magic("unload_ext", "dataagent_jupyter")
    assert shell.find_cell_magic("ask") is None


def test_record_then_replay_without_endpoint_or_key(
    ip, llm_env, sales, tmp_path, monkeypatch
) -> None:
    from IPython.utils.capture import capture_output

    transcript = tmp_path / "analysis.jsonl"
    ip.run_line_magic("config", f"DataAgent.record = {str(transcript)!r}")
    llm_env.script(code_answer("result = sales['revenue'].max()", "Take the max."))
    ask(ip, "sales", "largest revenue?")
    recorded = ip.rl_next_input
    ip.run_line_magic("config", "DataAgent.record = None")
    assert llm_env.api_key not in transcript.read_text()
    llm_env.stop()
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # nothing listens
    ip.run_line_magic("dataagent", "reset")
    with capture_output():
        ip.run_line_magic("dataagent", f"replay {transcript}")
    with capture_output() as cap:
        ask(ip, "sales", "largest revenue?")
    assert ip.rl_next_input == recorded
    statuses = [o.data["text/plain"] for o in cap.outputs if "text/plain" in o.data]
    assert any("replayed from the transcript" in s for s in statuses)
    with pytest.raises(errors.ReplayMiss, match="never asked"):
        ask(ip, "sales", "never asked?")


def test_every_command_is_in_the_help_with_its_options(ip) -> None:
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        ip.run_line_magic("dataagent", "help")
    # the Markdown source is the plain text; it is shown as cleaned HTML
    text = "\n".join(o.data["text/plain"] for o in cap.outputs)
    for usage in (
        "%dataagent status",
        "%dataagent chat",
        "%dataagent load PATH [--name NAME] [--sheet SHEET]",
        "%dataagent history [N]",
        "%dataagent export PATH",
        "%dataagent replay PATH",
        "%dataagent insert",
    ):
        assert f"`{usage}`" in text
    assert "%dataagent load PATH" in ip.find_line_magic("dataagent").__doc__
    with pytest.raises(IPythonUsageError, match="unrecognized arguments: --sheets"):
        ip.run_line_magic("dataagent", "load data.csv --sheets 2")
    with pytest.raises(errors.UsageError, match="Commands: status, chat, load"):
        ip.run_line_magic("dataagent", "fly")


def test_line_form_takes_the_cell_forms_options(ip, llm_env: LLMServer, sales) -> None:
    llm_env.script(code_answer("result = 1"))
    ip.run_line_magic("ask", "--no-cache --model test-model what's the total?")
    request = llm_env.chat_requests()[0]
    assert request.body["model"] == "test-model"
    assert "Question: what's the total?" in request.messages[-1]["content"]
    with pytest.raises(errors.UsageError, match="invalid choice: 'everything'"):
        ip.run_line_magic("ask", "--privacy everything what?")
    with pytest.raises(errors.UsageError, match="--model needs a value"):
        ip.run_line_magic("ask", "--model")
