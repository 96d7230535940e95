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


@dataclass(frozen=True)
class ChatRequest:
    """Exactly what is sent: model, messages and sampling options."""

    model: str
    messages: tuple[dict[str, str], ...]
    temperature: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": list(self.messages),
            "temperature": self.temperature,
        }

    def key(self) -> str:
        """A stable digest of the request: equal requests, equal keys (cache and replay)."""
        canonical = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChatResponse:
    """The model's whole answer, its token usage and where it came from."""

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = "stop"
    source: str = "endpoint"  # endpoint | cache | replay

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: str = "endpoint") -> ChatResponse:
        usage = data.get("usage") or {}
        return cls(
            text=data["text"],
            model=data.get("model", ""),
            finish_reason=data.get("finish_reason"),
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            source=source,
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


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters a token for English and code).

    tiktoken downloads its tables on first use, which offline machines cannot do; for
    budgeting a prompt a close estimate is enough.
    """
    return (len(text) + 3) // 4


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
                    raise _translate(item, self.base_url, request.model, self.timeout)
                model = getattr(item, "model", None) or model
                if getattr(item, "usage", None):
                    usage = Usage(item.usage.prompt_tokens or 0, item.usage.completion_tokens or 0)
                for choice in getattr(item, "choices", None) or []:
                    text = getattr(choice.delta, "content", None) if choice.delta else None
                    if text:
                        parts.append(text)
                        on_delta(text)
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
        return ChatResponse(text=text, usage=usage, model=model, finish_reason=finish)


def _translate(
    exc: BaseException, base_url: str | None, model: str, timeout: float
) -> BaseException:
    """One clear ``LLMError`` for whatever the SDK or the transport raised."""
    import openai

    host = endpoint_host(base_url)
    if isinstance(exc, errors.DataAgentError | KeyboardInterrupt):
        return exc
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
