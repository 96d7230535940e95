"""Tool calling through the real openai client: streamed calls, refusal, cache and replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llm_server import LLMServer, Reply, tool_call

from dataagent_jupyter import errors
from dataagent_jupyter.llm import MAX_TOOL_CALLS, ChatRequest, OpenAIChat
from dataagent_jupyter.store import (
    CachingBackend,
    RecordingBackend,
    ReplayBackend,
    ResponseCache,
    TranscriptRecorder,
    TranscriptReplayer,
)

RUN_PYTHON = {
    "type": "function",
    "function": {
        "name": "run_python",
        "description": "run code",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        },
    },
}


def chat(server: LLMServer) -> OpenAIChat:
    return OpenAIChat(api_key=server.api_key, base_url=server.url, timeout=10, max_retries=0)


def request(*, tools: bool = True) -> ChatRequest:
    return ChatRequest(
        model="gpt-4o-mini",
        messages=({"role": "user", "content": "what is in sales?"},),
        tools=(RUN_PYTHON,) if tools else (),
    )


def test_streamed_tool_calls_are_assembled(llm: LLMServer) -> None:
    code = "result = sales.groupby('region')['amount'].sum()\nresult"
    llm.script(
        Reply(
            text="Let me look.",
            tool_calls=[tool_call("run_python", "c1", code=code), tool_call("list_frames", "c2")],
            chunk_size=7,
        )
    )
    seen: list[str] = []
    response = chat(llm).complete(request(), on_delta=seen.append)
    assert response.text == "Let me look." == "".join(seen)
    assert response.finish_reason == "tool_calls"
    assert [(c.id, c.name) for c in response.tool_calls] == [
        ("c1", "run_python"),
        ("c2", "list_frames"),
    ]
    assert json.loads(response.tool_calls[0].arguments) == {"code": code}
    sent = llm.chat_requests()[0].body
    assert sent["tools"] == [RUN_PYTHON] and sent["stream"] is True


def test_request_without_tools_sends_no_tools_key(llm: LLMServer) -> None:
    llm.script("plain")
    chat(llm).complete(request(tools=False), on_delta=lambda t: None)
    assert "tools" not in llm.chat_requests()[0].body
    # and its cache key is the one it always had (no 'tools' in the canonical form)
    assert "tools" not in request(tools=False).to_json()


def test_endpoint_refusing_tools_is_named_and_keeps_the_script() -> None:
    with LLMServer(reject_tools=True) as llm:
        llm.script("the plain answer")
        with pytest.raises(errors.ToolsUnsupported, match="does not accept tool calling") as err:
            chat(llm).complete(request(), on_delta=lambda t: None)
        assert "plain messages" in (err.value.hint or "")
        response = chat(llm).complete(request(tools=False), on_delta=lambda t: None)
        assert response.text == "the plain answer"


def test_other_400s_with_tools_are_not_mistaken_for_refusal(llm: LLMServer) -> None:
    llm.script(Reply(status=400, error_message="context length exceeded"))
    with pytest.raises(errors.LLMError) as err:
        chat(llm).complete(request(), on_delta=lambda t: None)
    assert not isinstance(err.value, errors.ToolsUnsupported)


def test_too_many_tool_calls_is_a_bad_response(llm: LLMServer) -> None:
    calls = [tool_call("list_frames", f"c{i}") for i in range(MAX_TOOL_CALLS + 1)]
    llm.script(Reply(tool_calls=calls))
    with pytest.raises(errors.BadResponse, match="more than"):
        chat(llm).complete(request(), on_delta=lambda t: None)


def test_tool_call_answers_are_cached_recorded_and_replayed(llm: LLMServer, tmp_path: Path) -> None:
    llm.script(Reply(tool_calls=[tool_call("run_python", "c1", code="result = 1")]))
    cache = ResponseCache(tmp_path / "cache.db")
    recorder = TranscriptRecorder(tmp_path / "t.jsonl")
    backend = RecordingBackend(CachingBackend(chat(llm), cache), recorder)
    first = backend.complete(request(), on_delta=lambda t: None)
    again = backend.complete(request(), on_delta=lambda t: None)  # from the cache
    assert len(llm.chat_requests()) == 1
    assert again.source == "cache" and again.tool_calls == first.tool_calls
    replayed = ReplayBackend(TranscriptReplayer(tmp_path / "t.jsonl")).complete(
        request(), on_delta=lambda t: None
    )
    assert replayed.tool_calls == first.tool_calls
    assert json.loads(replayed.tool_calls[0].arguments) == {"code": "result = 1"}


def test_a_hand_edited_transcript_with_a_bad_tool_call_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    line = {
        "request": request().to_json(),
        "response": {"text": "", "tool_calls": [{"function": "not an object"}]},
    }
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(errors.StoreError, match="line 1"):
        TranscriptReplayer(path)
