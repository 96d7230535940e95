"""Response cache, record/replay and usage figures, with the real openai client talking to
the scripted test server over HTTP."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_server import LLMServer, Reply, code_answer

from dataagent_jupyter import errors
from dataagent_jupyter.events import Usage
from dataagent_jupyter.llm import ChatRequest, ChatResponse, OpenAIChat
from dataagent_jupyter.store import (
    CachingBackend,
    History,
    Metrics,
    RecordingBackend,
    ReplayBackend,
    ResponseCache,
    TranscriptRecorder,
    TranscriptReplayer,
    Turn,
)

SALES = "Frame `sales`: 1,000 rows; columns region (str), revenue (float)"


def ask(question: str, *, frames: str = SALES, model: str = "gpt-4o-mini") -> ChatRequest:
    """A request shaped like the engine's: system rules, frame description, the question."""
    return ChatRequest(
        model=model,
        messages=(
            {"role": "system", "content": "You write pandas code. Put the answer in `result`."},
            {"role": "user", "content": f"Data available:\n\n{frames}\n\nQuestion: {question}"},
        ),
    )


def endpoint(llm: LLMServer) -> OpenAIChat:
    return OpenAIChat(api_key=llm.api_key, base_url=llm.url, timeout=10, max_retries=0)


def complete(backend, request: ChatRequest) -> tuple[ChatResponse, list[str]]:
    pieces: list[str] = []
    return backend.complete(request, on_delta=pieces.append), pieces


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[ResponseCache]:
    with History.open(tmp_path) as history:
        yield ResponseCache(history.database, max_entries=100)


# --- cache -------------------------------------------------------------------------------


def test_second_identical_question_makes_no_request(
    llm: LLMServer, cache: ResponseCache, tmp_path: Path
) -> None:
    answer = code_answer("result = sales.groupby('region').revenue.sum()", "Sum per region.")
    llm.script(answer, code_answer("result = sales.revenue.max()"))
    metrics = Metrics()
    backend = CachingBackend(endpoint(llm), cache, enabled=True, metrics=metrics)

    first, _ = complete(backend, ask("revenue per region?"))
    assert len(llm.chat_requests()) == 1 and first.source == "endpoint"

    second, pieces = complete(backend, ask("revenue per region?"))
    assert len(llm.chat_requests()) == 1  # the llm's log proves it: no request
    assert second.source == "cache" and second.text == first.text == answer
    assert second.usage == first.usage
    assert len(pieces) > 1 and "".join(pieces) == answer  # rendered like a stream
    assert metrics.snapshot().cache_hits == 1

    # The frame changed (one more row): its description, so the prompt, differs.
    changed, _ = complete(
        backend, ask("revenue per region?", frames=SALES.replace("1,000", "1,001"))
    )
    assert len(llm.chat_requests()) == 2 and changed.source == "endpoint"

    # A new kernel on the same database still has the answer.
    with History.open(tmp_path) as history:
        reopened = CachingBackend(endpoint(llm), ResponseCache(history.database))
        again, _ = complete(reopened, ask("revenue per region?"))
    assert again.source == "cache" and len(llm.chat_requests()) == 2


def test_same_model_on_two_endpoints_does_not_share_answers(tmp_path: Path) -> None:
    # A local server and a hosted one may both call their model "gpt-4o-mini".
    with LLMServer() as local, LLMServer() as hosted, History.open(tmp_path) as history:
        local.script("answer from the local server")
        hosted.script("answer from the hosted server")
        at_local = CachingBackend(
            endpoint(local), ResponseCache(history.database, endpoint=local.url)
        )
        at_hosted = CachingBackend(
            endpoint(hosted), ResponseCache(history.database, endpoint=hosted.url + "/")
        )
        first, _ = complete(at_local, ask("revenue per region?"))
        second, _ = complete(at_hosted, ask("revenue per region?"))
        assert first.text == "answer from the local server"
        assert second.text == "answer from the hosted server" and second.source == "endpoint"
        again, _ = complete(at_local, ask("revenue per region?"))
        assert again.source == "cache" and again.text == "answer from the local server"
        assert len(local.chat_requests()) == 1 and len(hosted.chat_requests()) == 1


def test_cache_switches(llm: LLMServer, cache: ResponseCache) -> None:
    llm.script("one", "two", "three", "four")
    enabled = {"on": False}
    backend = CachingBackend(endpoint(llm), cache, enabled=lambda: enabled["on"])
    complete(backend, ask("q"))
    assert len(cache) == 0  # DataAgent.cache = False: nothing read, nothing stored
    enabled["on"] = True
    refresh = CachingBackend(endpoint(llm), cache, refresh=True)  # --no-cache
    fresh, _ = complete(refresh, ask("q"))
    assert fresh.text == "two" and len(cache) == 1
    fresh, _ = complete(refresh, ask("q"))
    assert fresh.text == "three" and len(llm.chat_requests()) == 3
    hit, _ = complete(backend, ask("q"))  # the refreshed answer is the one kept
    assert hit.text == "three" and hit.source == "cache" and len(llm.chat_requests()) == 3


def test_failed_answers_are_not_cached(llm: LLMServer, cache: ResponseCache) -> None:
    backend = CachingBackend(endpoint(llm), cache)
    llm.script(Reply(status=500, error_message="overloaded"), Reply(text="abc", cut_after=0))
    with pytest.raises(errors.LLMError):
        complete(backend, ask("q"))
    with pytest.raises(errors.BadResponse):
        complete(backend, ask("q"))
    assert len(cache) == 0
    llm.script("good")
    answer, _ = complete(backend, ask("q"))
    assert answer.text == "good" and len(llm.chat_requests()) == 3
    # a cut-off ("length") or empty answer is refused too
    assert not cache.put(ask("x"), ChatResponse(text="partial", finish_reason="length"))
    assert not cache.put(ask("y"), ChatResponse(text="  "))
    assert len(cache) == 1


def test_cache_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite3", max_entries=2)
    for name in ("a", "b"):
        cache.put(ask(name), ChatResponse(text=f"answer {name}"))
    assert cache.get(ask("a")) is not None  # a is now more recent than b
    cache.put(ask("c"), ChatResponse(text="answer c"))
    assert len(cache) == 2
    assert cache.get(ask("b")) is None
    assert cache.get(ask("a")).text == "answer a"  # type: ignore[union-attr]
    assert cache.get(ask("c")).text == "answer c"  # type: ignore[union-attr]
    cache.discard(ask("c"))
    assert cache.get(ask("c")) is None
    cache.close()


def test_cache_on_a_connection_the_caller_owns(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "own.sqlite3")
    cache = ResponseCache(conn, max_entries=10)
    cache.put(ask("q"), ChatResponse(text="stored", usage=Usage(5, 1), model="m"))
    cache.close()  # not ours to close: the connection stays usable
    assert conn.execute("SELECT count(*) FROM responses").fetchone()[0] == 1
    conn.close()
    reopened = ResponseCache(tmp_path / "own.sqlite3")
    assert reopened.get(ask("q")) == ChatResponse(
        text="stored", usage=Usage(5, 1), model="m", source="cache"
    )
    reopened.close()


def test_cancel_while_showing_a_cached_answer(cache: ResponseCache) -> None:
    cache.put(ask("q"), ChatResponse(text="x" * 1000))
    stop = threading.Event()
    stop.set()
    never_called = OpenAIChat(api_key=None, base_url=None, timeout=1, max_retries=0)
    backend = CachingBackend(never_called, cache)
    with pytest.raises(errors.Cancelled):
        backend.complete(ask("q"), on_delta=lambda _: None, cancel=stop)


# --- record / replay ---------------------------------------------------------------------


def test_record_then_replay_with_server_stopped_and_no_key(
    tmp_path: Path,
    cache: ResponseCache,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="dataagent_jupyter")
    transcript = tmp_path / "notebooks" / "analysis.jsonl"
    questions = ["revenue per region?", "best month?", "revenue per region?"]
    server = LLMServer()
    try:
        server.script(
            Reply(text=code_answer("result = sales.groupby('region').revenue.sum()"), chunk_size=5),
            code_answer("result = sales.month.mode()[0]"),
        )
        # Recording outermost: the third question, answered by the cache, is recorded too.
        recording = RecordingBackend(
            CachingBackend(endpoint(server), cache), TranscriptRecorder(transcript)
        )
        recorded = [complete(recording, ask(q))[0] for q in questions]
        assert len(server.chat_requests()) == 2
        key = server.api_key
    finally:
        server.stop()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    text = transcript.read_text()
    assert key and key not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 3
    assert set(lines[0]) == {"key", "time", "request", "response"}
    assert lines[0]["request"]["messages"][1]["content"].endswith("revenue per region?")

    replay = ReplayBackend(TranscriptReplayer(transcript))
    for question, original in zip(questions, recorded, strict=True):
        answer, pieces = complete(replay, ask(question))
        assert answer.source == "replay"
        assert (answer.text, answer.usage, answer.model) == (
            original.text,
            original.usage,
            original.model,
        )
        assert "".join(pieces) == answer.text

    with pytest.raises(errors.ReplayMiss) as caught:
        complete(replay, ask("median price per city?"))
    message = str(caught.value)
    assert "median price per city?" in message
    assert "analysis.jsonl" in message and "3 exchanges" in message

    # Logs carry counts and timings only: no key, no question, no cell value.
    assert key not in caplog.text and "revenue per region" not in caplog.text


def test_replay_tolerates_a_drifted_frame_sample(
    tmp_path: Path, llm: LLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    transcript = tmp_path / "t.jsonl"
    llm.script("first answer", "second answer")
    recording = RecordingBackend(endpoint(llm), TranscriptRecorder(transcript))
    complete(recording, ask("top region?"))
    complete(recording, ask("top region?"))

    replay = TranscriptReplayer(transcript)
    drifted = ask("top region?", frames=SALES + "; sample row: north, 12.5")
    with caplog.at_level(logging.WARNING, logger="dataagent_jupyter"):
        assert replay.lookup(drifted).text == "first answer"
        assert replay.lookup(drifted).text == "second answer"  # the next unused one
    assert "line 1" in caplog.text and "line 2" in caplog.text
    # asked again (a notebook re-run in the same kernel): the last recorded answer
    assert replay.lookup(drifted).text == "second answer"
    with pytest.raises(errors.ReplayMiss, match="other region"):
        replay.lookup(ask("other region?"))  # a question never recorded
    with pytest.raises(errors.ReplayMiss):
        replay.lookup(ask("top region?", model="test-model"))  # another model is no match
    # an exact match is still answered after use: a notebook may ask the same thing twice
    assert replay.lookup(ask("top region?")).text == "second answer"


def test_recorder_redacts_secrets_and_survives_a_torn_line(tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    secret = "sk-live-abcdefghijklmnop"
    recorder = TranscriptRecorder(transcript, redact=lambda: [secret, ""])
    recorder.append(ask(f"why does {secret} fail?"), ChatResponse(text="ok"))
    assert secret not in transcript.read_text() and "[redacted]" in transcript.read_text()

    with open(transcript, "a") as f:
        f.write('{"key": "abc", "req')  # the kernel died mid-line
    replayer = TranscriptReplayer(transcript)  # the torn tail is skipped
    assert len(replayer) == 1
    TranscriptRecorder(transcript).append(ask("next"), ChatResponse(text="next answer"))
    assert len(TranscriptReplayer(transcript)) == 2
    assert all(json.loads(line) for line in transcript.read_text().splitlines())


def test_missing_or_corrupt_transcript_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(errors.StoreError) as caught:
        TranscriptReplayer(tmp_path / "nowhere.jsonl")
    assert "nowhere.jsonl" in caught.value.message and "does not exist" in caught.value.message

    transcript = tmp_path / "t.jsonl"
    TranscriptRecorder(transcript).append(ask("q"), ChatResponse(text="a"))
    with open(transcript, "a") as f:
        f.write("{not json}\n")
    with pytest.raises(errors.StoreError) as caught:
        TranscriptReplayer(transcript)
    assert "line 2" in caught.value.message and "t.jsonl" in caught.value.message

    transcript.write_text('{"key": "k", "request": {"model": "m"}, "response": {}}\n')
    with pytest.raises(errors.StoreError, match="line 1"):
        TranscriptReplayer(transcript)


# --- stats against the server's usage ----------------------------------------------------


def test_stats_match_the_usage_the_server_reported(llm: LLMServer, cache: ResponseCache) -> None:
    scripted = [
        Reply(text=code_answer("result = 1"), prompt_tokens=120, completion_tokens=30),
        Reply(text=code_answer("result = 2"), prompt_tokens=200, completion_tokens=55),
        Reply(text=code_answer("result = 3"), prompt_tokens=80, completion_tokens=20),
    ]
    llm.script(*scripted)
    metrics = Metrics(prices={"gpt-4o-mini": [0.15, 0.60]})
    backend = CachingBackend(endpoint(llm), cache, metrics=metrics)
    latencies = []
    for question, model in [
        ("q1", "gpt-4o-mini"),
        ("q2", "gpt-4o-mini"),
        ("q1", "gpt-4o-mini"),  # from the cache: billed nothing
        ("q3", "test-model"),  # a model with no known price
    ]:
        started = time.perf_counter()
        response, _ = complete(backend, ask(question, model=model))
        latency = time.perf_counter() - started
        latencies.append(latency)
        billed = response.usage if response.source == "endpoint" else Usage()
        metrics.record_question(
            Turn(
                notebook="nb",
                conversation="c",
                question=question,
                model=response.model,
                tokens_in=billed.prompt_tokens,
                tokens_out=billed.completion_tokens,
                latency=latency,
                cached=response.source == "cache",
            )
        )
    stats = metrics.snapshot()
    assert len(llm.chat_requests()) == 3
    assert stats.questions == 4 and stats.cache_hits == 1
    assert stats.tokens_in == sum(r.prompt_tokens for r in scripted)  # type: ignore[misc]
    assert stats.tokens_out == sum(r.completion_tokens for r in scripted)  # type: ignore[misc]
    by_model = {m.model: m for m in stats.models}
    assert by_model["gpt-4o-mini"].cost_usd == pytest.approx((320 * 0.15 + 85 * 0.60) / 1e6)
    assert by_model["test-model"].cost_usd is None
    assert stats.cost_usd is None and stats.unpriced == ("test-model",)
    assert stats.latency_p95 == max(latencies)
    assert "unknown (no price for test-model)" in stats._repr_markdown_()
