"""Every endpoint failure ends in one clear message, through the real openai client."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from llm_server import LLMServer, Reply, code_answer

from dataagent_jupyter import errors
from dataagent_jupyter.config import DataAgent
from dataagent_jupyter.events import Delta, Done, Failed
from dataagent_jupyter.llm import ChatRequest, OpenAIChat
from dataagent_jupyter.options import AskOptions
from dataagent_jupyter.session import Session


def chat(
    server: LLMServer,
    *,
    key: str | None = "default",
    timeout: float = 10,
    retries: int = 0,
    base_url: str | None = None,
) -> OpenAIChat:
    return OpenAIChat(
        api_key=server.api_key if key == "default" else key,
        base_url=base_url or server.url,
        timeout=timeout,
        max_retries=retries,
    )


def request(model: str = "gpt-4o-mini") -> ChatRequest:
    return ChatRequest(model=model, messages=({"role": "user", "content": "hi"},))


def test_streams_text_and_usage(llm: LLMServer) -> None:
    llm.script(Reply(text="one two three four five", prompt_tokens=11, completion_tokens=5))
    pieces: list[str] = []
    response = chat(llm).complete(request(), on_delta=pieces.append)
    assert "".join(pieces) == response.text == "one two three four five"
    assert len(pieces) > 1  # it really streamed
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (11, 5)
    assert llm.chat_requests()[0].body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (Reply(status=401), errors.AuthenticationFailed, "refused the API key (401)"),
        (Reply(status=403), errors.AuthenticationFailed, "refused the API key (403)"),
        (Reply(status=429, retry_after=0), errors.RateLimited, "rate-limiting"),
        (Reply(status=500, error_message="boom"), errors.LLMError, "answered 500: boom"),
        (Reply(malformed=True), errors.BadResponse, None),
        (Reply(text="x" * 200, cut_after=3), errors.BadResponse, "cut off"),
    ],
)
def test_endpoint_faults(llm: LLMServer, reply: Reply, error: type, text: str | None) -> None:
    llm.script(reply)
    with pytest.raises(error) as err:
        chat(llm).complete(request(), on_delta=lambda t: None)
    if text:
        assert text in err.value.message


def test_rate_limit_retries_honour_retry_after_then_succeed(llm: LLMServer) -> None:
    llm.script(Reply(status=429, retry_after=0), Reply(text="fine"))
    response = chat(llm, retries=2).complete(request(), on_delta=lambda t: None)
    assert response.text == "fine"
    assert len(llm.chat_requests()) == 2


def test_rate_limited_after_retries_says_so(llm: LLMServer) -> None:
    llm.script(*[Reply(status=429, retry_after=0)] * 3)
    with pytest.raises(errors.RateLimited, match="still was after retrying"):
        chat(llm, retries=2).complete(request(), on_delta=lambda t: None)
    assert len(llm.chat_requests()) == 3


def test_unknown_model(llm: LLMServer) -> None:
    with pytest.raises(errors.ModelNotFound, match="does not know the model 'gpt-9'") as err:
        chat(llm).complete(request("gpt-9"), on_delta=lambda t: None)
    assert "DataAgent.model" in (err.value.hint or "")


def test_timeout(llm: LLMServer) -> None:
    llm.script(Reply(text="late", delay=3))
    with pytest.raises(errors.LLMTimeout, match="did not answer within 0.5 s"):
        chat(llm, timeout=0.5).complete(request(), on_delta=lambda t: None)


def test_unreachable_endpoint() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = OpenAIChat(
        api_key="k", base_url=f"http://127.0.0.1:{port}/v1", timeout=2, max_retries=0
    )
    with pytest.raises(errors.EndpointUnreachable, match=f"127.0.0.1:{port}") as err:
        client.complete(request(), on_delta=lambda t: None)
    assert "OPENAI_BASE_URL" in (err.value.hint or "")


def test_wrong_path_is_not_reported_as_unknown_model(llm: LLMServer) -> None:
    client = chat(llm, base_url=llm.url.removesuffix("/v1"))
    with pytest.raises(errors.EndpointUnreachable, match="no chat-completions route") as err:
        client.complete(request(), on_delta=lambda t: None)
    assert "/v1" in (err.value.hint or "")


def test_missing_key_explains_both_ways_out(llm: LLMServer) -> None:
    with pytest.raises(errors.MissingAPIKey) as err:
        chat(llm, key=None).complete(request(), on_delta=lambda t: None)
    assert "OPENAI_API_KEY" in err.value.hint and "OPENAI_BASE_URL" in err.value.hint


def test_cancel_stops_a_slow_stream_at_once(llm: LLMServer) -> None:
    llm.script(Reply(text="word " * 200, chunk_size=5, chunk_delay=0.2))
    cancel = threading.Event()
    seen: list[str] = []

    def on_delta(text: str) -> None:
        seen.append(text)
        cancel.set()

    started = time.monotonic()
    with pytest.raises(errors.Cancelled):
        chat(llm).complete(request(), on_delta=on_delta, cancel=cancel)
    assert len(seen) == 1
    assert time.monotonic() - started < 5  # not the 40 s the whole answer would take


def test_session_turns_failures_into_failed_events(llm: LLMServer) -> None:
    import pandas as pd

    config = DataAgent(base_url=llm.url, api_key=llm.api_key, max_retries=0)
    session = Session(config, {"df": pd.DataFrame({"a": [1, 2]})})
    llm.script(Reply(status=500, error_message="overloaded"))
    events = list(session.ask("q?", AskOptions(frames=("df",))))
    assert isinstance(events[-1], Failed)
    assert "overloaded" in events[-1].error.message
    llm.script(code_answer("result = df['a'].sum()"))
    events = list(session.ask("sum?", AskOptions(frames=("df",))))
    assert isinstance(events[-1], Done) and events[-1].outcome == "inserted"
    assert "".join(e.text for e in events if isinstance(e, Delta)).startswith("Here is")
    assert events[-1].usage.completion_tokens > 0
