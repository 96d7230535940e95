"""Talking to the LLM: the openai SDK, streamed, with every failure turned into a sentence.

:class:`ChatRequest` and :class:`ChatResponse` are plain immutable records so that the
response cache, the record/replay transcript and the history can store and compare them
without knowing anything about HTTP. :class:`OpenAIChat` is the one place the API key is
revealed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

from . import errors
from .events import Usage

log = logging.getLogger("dataagent_jupyter.llm")

DEFAULT_ENDPOINT = "https://api.openai.com/v1"


#: Most tool calls kept from one answer, and characters of one call's arguments: the
#: answer comes from outside, so what we hold of it is bounded by us, not by the sender.
MAX_TOOL_CALLS = 8
MAX_TOOL_ARGUMENTS = 100_000


@dataclass(frozen=True)
class ChatRequest:
    """Exactly what is sent: model, messages, sampling options and (agent mode) tools.

    ``messages`` are chat-completions messages; agent mode adds assistant messages with
    ``tool_calls`` and ``tool`` messages, hence ``Any`` values. ``tools`` are function
    schemas; a request without tools serialises exactly as before (same cache keys).
    """

    model: str
    messages: tuple[dict[str, Any], ...]
    temperature: float | None = None
    tools: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(self.messages),
            "temperature": self.temperature,
        }
        if self.tools:
            body["tools"] = list(self.tools)
        return body

    def key(self) -> str:
        """A stable digest of the request: equal requests, equal keys (cache and replay)."""
        canonical = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for; ``arguments`` is the raw JSON text it wrote."""

    id: str
    name: str
    arguments: str

    def to_json(self) -> dict[str, Any]:
        """The call as it goes back in the assistant message of the next request."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }

    @classmethod
    def from_json(cls, data: Any) -> ToolCall:
        """Parse a stored call strictly (cache and transcripts are files a user can edit)."""
        function = data.get("function") if isinstance(data, dict) else None
        if not isinstance(function, dict):
            raise ValueError("a tool call needs a 'function' object")
        name, arguments = function.get("name"), function.get("arguments", "")
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise ValueError("a tool call needs a string name and arguments")
        return cls(id=str(data.get("id") or ""), name=name, arguments=arguments)


@dataclass(frozen=True)
class ChatResponse:
    """The model's whole answer, its token usage and where it came from."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = "stop"
    source: str = "endpoint"  # endpoint | cache | replay
    tool_calls: tuple[ToolCall, ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "text": self.text,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
        }
        if self.tool_calls:
            body["tool_calls"] = [call.to_json() for call in self.tool_calls]
        return body

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str = "endpoint") -> ChatResponse:
        usage = data.get("usage") or {}
        calls = data.get("tool_calls") or []
        if not isinstance(calls, list):
            raise ValueError("'tool_calls' must be a list")
        return cls(
            text=data["text"],
            model=data.get("model", ""),
            finish_reason=data.get("finish_reason"),
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            source=source,
            tool_calls=tuple(ToolCall.from_json(c) for c in calls[:MAX_TOOL_CALLS]),
        )


OnDelta = Callable[[str], None]


class ChatBackend(Protocol):
    """Anything that turns a request into a response, streaming text to ``on_delta``."""

    def complete(
        self, request: ChatRequest, *, on_delta: OnDelta, cancel: threading.Event | None = None
    ) -> ChatResponse: ...


def endpoint_host(base_url: str | None) -> str:
    """The host:port a user recognises, e.g. ``api.openai.com`` or ``127.0.0.1:11434``."""
    parsed = urlparse(base_url or DEFAULT_ENDPOINT)
    return parsed.netloc or (base_url or DEFAULT_ENDPOINT)


class OpenAIChat:
    """Streams chat completions from any OpenAI-compatible endpoint through the openai SDK."""

    def __init__(
        self, *, api_key: str | None, base_url: str | None, timeout: float, max_retries: int
    ) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self._api_key = api_key
        self._client: Any = None

    def _openai(self) -> Any:
        if self._api_key is None:
            raise errors.MissingAPIKey(
                "no API key is set for the LLM endpoint.",
                hint="Set the OPENAI_API_KEY environment variable (or "
                "%config DataAgent.api_key = '...'). For a local server such as Ollama, "
                "set OPENAI_BASE_URL (e.g. http://localhost:11434/v1) and any non-empty key.",
            )
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
        return self._client

    def complete(
        self, request: ChatRequest, *, on_delta: OnDelta, cancel: threading.Event | None = None
    ) -> ChatResponse:
        """Send ``request`` with streaming; return the whole answer; raise an ``LLMError``.

        The stream is read on a worker thread so that Stop (``cancel``) and Ctrl-C act at
        once, even while the endpoint is silent.
        """
        client = self._openai()
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": list(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.tools:
            kwargs["tools"] = list(request.tools)
        started = time.perf_counter()
        chunks: queue.Queue[tuple[str, Any]] = queue.Queue()
        holder: dict[str, Any] = {}

        def read() -> None:
            try:
                stream = client.chat.completions.create(**kwargs)
                holder["stream"] = stream
                for chunk in stream:
                    chunks.put(("chunk", chunk))
                chunks.put(("end", None))
            except BaseException as exc:  # handed to the caller's thread
                chunks.put(("error", exc))

        reader = threading.Thread(target=read, daemon=True, name="dataagent-llm-stream")
        reader.start()
        parts: list[str] = []
        usage = Usage()
        model = request.model
        finish: str | None = None
        calls = _ToolCallParts()
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise errors.Cancelled("stopped while the model was answering.")
                try:
                    kind, item = chunks.get(timeout=0.05)
                except queue.Empty:
                    continue
                if kind == "end":
                    break
                if kind == "error":
                    raise _translate(
                        item, self.base_url, request.model, self.timeout, tools=bool(request.tools)
                    )
                model = getattr(item, "model", None) or model
                if getattr(item, "usage", None):
                    usage = Usage(item.usage.prompt_tokens or 0, item.usage.completion_tokens or 0)
                for choice in getattr(item, "choices", None) or []:
                    text = getattr(choice.delta, "content", None) if choice.delta else None
                    if text:
                        parts.append(text)
                        on_delta(text)
                    if choice.delta is not None and getattr(choice.delta, "tool_calls", None):
                        calls.add(choice.delta.tool_calls)
                    if choice.finish_reason:
                        finish = choice.finish_reason
        except KeyboardInterrupt:
            raise errors.Cancelled("interrupted while the model was answering.") from None
        finally:
            stream = holder.get("stream")
            if stream is not None and reader.is_alive():
                try:
                    stream.close()
                except Exception:  # closing a half-read stream may itself fail; nothing to do
                    pass
        text = "".join(parts)
        if finish is None:
            raise errors.BadResponse(
                "the answer stream was cut off before the model finished"
                + (f" (after {len(text)} characters)." if text else "."),
                hint="Ask again; if it keeps happening, check the endpoint or proxy.",
            )
        log.info(
            "llm answer: model=%s tokens_in=%d tokens_out=%d seconds=%.2f",
            model,
            usage.prompt_tokens,
            usage.completion_tokens,
            time.perf_counter() - started,
        )
        return ChatResponse(
            text=text, usage=usage, model=model, finish_reason=finish, tool_calls=calls.finished()
        )


class _ToolCallParts:
    """Tool calls assembled from streamed deltas (a call's arguments arrive in pieces).

    Bounded: at most ``MAX_TOOL_CALLS`` calls and ``MAX_TOOL_ARGUMENTS`` characters each;
    an endpoint sending more gets a ``BadResponse``, never unbounded memory.
    """

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: Any) -> None:
        for delta in deltas:
            index = getattr(delta, "index", None)
            index = index if isinstance(index, int) else len(self._calls)
            if index not in self._calls and len(self._calls) >= MAX_TOOL_CALLS:
                raise errors.BadResponse(
                    f"the model asked for more than {MAX_TOOL_CALLS} tool calls in one answer."
                )
            call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": []})
            call["id"] = getattr(delta, "id", None) or call["id"]
            function = getattr(delta, "function", None)
            if function is None:
                continue
            call["name"] = getattr(function, "name", None) or call["name"]
            piece = getattr(function, "arguments", None) or ""
            call["size"] = call.get("size", 0) + len(piece)
            if call["size"] > MAX_TOOL_ARGUMENTS:
                raise errors.BadResponse(
                    f"a tool call's arguments ran past {MAX_TOOL_ARGUMENTS} characters."
                )
            call["arguments"].append(piece)

    def finished(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(
                id=call["id"] or f"call_{index}",
                name=call["name"],
                arguments="".join(call["arguments"]),
            )
            for index, call in sorted(self._calls.items())
        )


def _translate(
    exc: BaseException, base_url: str | None, model: str, timeout: float, *, tools: bool = False
) -> BaseException:
    """One clear ``LLMError`` for whatever the SDK or the transport raised."""
    import openai

    host = endpoint_host(base_url)
    if isinstance(exc, errors.DataAgentError | KeyboardInterrupt):
        return exc
    if tools and _refuses_tools(exc):
        return errors.ToolsUnsupported(
            f"{host} does not accept tool calling for {model!r} "
            f"({exc.status_code}: {_error_detail(exc)[:200]}).",  # type: ignore[attr-defined]
            hint="Agent mode falls back to plain messages for this endpoint.",
        )
    if isinstance(exc, openai.APITimeoutError):
        return errors.LLMTimeout(
            f"{host} did not answer within {timeout:g} s.",
            hint="Try again, or raise the limit: %config DataAgent.timeout = 120",
        )
    if isinstance(exc, openai.APIConnectionError):
        return errors.EndpointUnreachable(
            f"could not connect to the LLM endpoint at {host}.",
            hint="Check that the server is running and that OPENAI_BASE_URL / "
            "DataAgent.base_url points at it (e.g. http://localhost:11434/v1).",
        )
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return errors.AuthenticationFailed(
            f"{host} refused the API key ({exc.status_code}).",
            hint="Check OPENAI_API_KEY (or DataAgent.api_key) is a valid key for this endpoint.",
        )
    if isinstance(exc, openai.RateLimitError):
        retry = exc.response.headers.get("retry-after") if exc.response is not None else None
        wait = f" It asked to wait {retry} s." if retry else ""
        return errors.RateLimited(
            f"{host} is rate-limiting requests (429) and still was after retrying.{wait}",
            hint="Wait a moment and ask again, or raise DataAgent.max_retries.",
        )
    if isinstance(exc, openai.NotFoundError):
        detail = _error_detail(exc)
        if "model" in detail.lower():
            return errors.ModelNotFound(
                f"{host} does not know the model {model!r}.",
                hint="Pick one the endpoint serves: %config DataAgent.model = '...' "
                "(for Ollama, the name shown by `ollama list`).",
            )
        return errors.EndpointUnreachable(
            f"{host} has no chat-completions route (404: {detail}).",
            hint="The base URL usually ends in /v1, e.g. http://localhost:11434/v1.",
        )
    if isinstance(exc, openai.APIStatusError):
        return errors.LLMError(
            f"{host} answered {exc.status_code}: {_error_detail(exc)}",
            hint="This is the endpoint's own error; check the model and the server.",
        )
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | ValueError):
        return errors.BadResponse(
            f"{host} sent an answer that is not a valid chat completion.",
            hint="Check that the endpoint is OpenAI-compatible (chat completions API).",
        )
    if isinstance(exc, openai.OpenAIError):
        return errors.LLMError(f"the openai client failed: {exc}")
    name = type(exc).__name__
    if "RemoteProtocol" in name or "ReadError" in name or "Incomplete" in name:
        return errors.BadResponse(
            "the answer stream was cut off before the model finished.",
            hint="Ask again; if it keeps happening, check the endpoint or proxy.",
        )
    return errors.LLMError(f"the request to {host} failed: {name}: {exc}")


def _refuses_tools(exc: BaseException) -> bool:
    """Whether an error answer means "this endpoint or model has no tool calling".

    Servers say it differently (OpenAI-compatible gateways 400 "tools is not supported",
    Ollama 400 "does not support tools", vLLM 400 about tool choice, some 404/422/501);
    common to all: a client-error status whose message names tools or functions.
    """
    import openai

    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 404, 422, 501):
        return False
    detail = _error_detail(exc).lower()
    return "tool" in detail or "function" in detail


def _error_detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(getattr(exc, "message", exc))


def iter_text(response: ChatResponse, *, chunk: int = 64) -> Iterator[str]:
    """Pieces of a stored answer, so cached and replayed answers render like streamed ones."""
    for i in range(0, len(response.text), chunk):
        yield response.text[i : i + chunk]
