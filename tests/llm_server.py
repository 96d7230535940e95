"""A real OpenAI-compatible HTTP server on 127.0.0.1: the only test double in this project.

Each test scripts the answers (``server.script(...)``), the real openai client talks to it
over HTTP, and the test reads back every request it got (``server.requests``). Faults are
part of a scripted reply: a status code (with or without ``Retry-After``), a delay before
answering, a delay between streamed chunks, a stream cut mid-way, a malformed body.

Agent mode: a reply may hold tool calls (``Reply(tool_calls=[tool_call("run_python",
code="...")])``), streamed in pieces like a real endpoint's. ``LLMServer(reject_tools=True)``
plays an endpoint without tool calling: any request carrying ``tools`` gets a 400, without
using up a scripted reply.

Run it by hand for the browser tests or a demo::

    python tests/llm_server.py --port 8765 --answer "Here it is\\n```python\\nresult = 1\\n```"
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer (or fault) for one chat-completions request."""

    text: str = ""
    status: int = 200
    error_message: str = ""
    error_code: str | None = None
    retry_after: float | None = None
    delay: float = 0.0  # seconds before any byte is sent
    chunk_delay: float = 0.0  # seconds between streamed chunks
    chunk_size: int = 12  # characters per streamed chunk
    cut_after: int | None = None  # close the stream after this many chunks
    malformed: bool = False  # send a body that is not valid JSON
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    #: function calls: [{"id": ..., "name": ..., "arguments": dict | str}]
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def tool_call(function: str, call_id: str | None = None, /, **arguments: Any) -> dict[str, Any]:
    """One scripted function call, e.g. ``tool_call("run_python", code="result = 1")``."""
    call_id = call_id or f"call_{function}_{id(arguments):x}"
    return {"id": call_id, "name": function, "arguments": arguments}


def _arguments(call: dict[str, Any]) -> str:
    args = call.get("arguments", {})
    return args if isinstance(args, str) else json.dumps(args)


def code_answer(code: str, explanation: str = "Here is the code.") -> str:
    """A typical model answer: a sentence or two and one fenced Python block."""
    return f"{explanation}\n\n```python\n{code.strip()}\n```\n"


@dataclass
class Request:
    """What the server received: path, headers and the parsed JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    time: float = field(default_factory=time.time)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body.get("messages", [])

    @property
    def text(self) -> str:
        """Everything sent in the messages, for scanning (privacy tests)."""
        return "\n".join(str(m.get("content", "")) for m in self.messages)


class LLMServer:
    """A scripted chat-completions server. Use as a context manager or call ``stop()``."""

    def __init__(
        self,
        *,
        models: tuple[str, ...] = ("gpt-4o-mini", "test-model"),
        api_key: str | None = "sk-test-0123456789abcdef",
        default: Reply | Callable[[Request], Reply] | None = None,
        reject_tools: bool = False,
    ) -> None:
        self.models = list(models)
        self.reject_tools = reject_tools
        self.api_key = api_key
        self.requests: list[Request] = []
        self.default = default
        self._script: deque[Reply | Callable[[Request], Reply]] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, daemon=True, name="llm-test-server"
        )
        self._thread.start()

    # --- control ---------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL to give the openai client (``OPENAI_BASE_URL``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply | str | Callable[[Request], Reply]) -> None:
        """Queue answers; a str is a plain 200 answer with that text."""
        with self._lock:
            for r in replies:
                self._script.append(Reply(text=r) if isinstance(r, str) else r)

    def chat_requests(self) -> list[Request]:
        """The chat-completions requests received so far (not /models)."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_reply(self, request: Request) -> Reply:
        with self._lock:
            item = self._script.popleft() if self._script else self.default
        if item is None:
            return Reply(status=500, error_message="test server: no scripted reply left")
        return item(request) if callable(item) else item

    # --- HTTP ------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(
                self,
                status: int,
                payload: Any,
                headers: dict[str, str] | None = None,
                raw: bytes | None = None,
            ) -> None:
                body = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _error(
                self,
                status: int,
                message: str,
                code: str | None = None,
                headers: dict[str, str] | None = None,
            ) -> None:
                self._json(
                    status,
                    {
                        "error": {
                            "message": message,
                            "type": "test_error",
                            "code": code,
                            "param": None,
                        }
                    },
                    headers,
                )

            def _authorized(self) -> bool:
                if server.api_key is None:
                    return True
                return self.headers.get("Authorization") == f"Bearer {server.api_key}"

            def do_GET(self) -> None:
                server.requests.append(Request(self.path, dict(self.headers), {}))
                if self.path.rstrip("/") != "/v1/models":
                    self._error(404, f"no route {self.path}")
                    return
                if not self._authorized():
                    self._error(401, "Incorrect API key provided.", "invalid_api_key")
                    return
                data = [
                    {"id": m, "object": "model", "created": 0, "owned_by": "test"}
                    for m in server.models
                ]
                self._json(200, {"object": "list", "data": data})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    body = {"_raw": raw.decode(errors="replace")}
                request = Request(self.path, dict(self.headers), body)
                server.requests.append(request)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._error(404, f"no route {self.path}")
                    return
                if not self._authorized():
                    self._error(401, "Incorrect API key provided.", "invalid_api_key")
                    return
                model = body.get("model", "")
                if model not in server.models:
                    self._error(
                        404,
                        f"The model `{model}` does not exist or you do not have access to it.",
                        "model_not_found",
                    )
                    return
                if server.reject_tools and body.get("tools"):
                    self._error(400, "tools is not supported by this model", "invalid_request")
                    return
                reply = server._next_reply(request)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.status != 200:
                    headers = {}
                    if reply.retry_after is not None:
                        headers["Retry-After"] = str(reply.retry_after)
                    self._error(
                        reply.status,
                        reply.error_message or f"status {reply.status}",
                        reply.error_code,
                        headers,
                    )
                    return
                if reply.malformed:
                    self._json(200, None, raw=b'{"id": "x", "choices": [ {"mess')
                    return
                usage = {
                    "prompt_tokens": reply.prompt_tokens
                    if reply.prompt_tokens is not None
                    else len(json.dumps(body)) // 4,
                    "completion_tokens": reply.completion_tokens
                    if reply.completion_tokens is not None
                    else max(1, (len(reply.text) + len(json.dumps(reply.tool_calls))) // 4),
                }
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                name = reply.model or model
                if body.get("stream"):
                    self._stream(reply, name, usage, body)
                else:
                    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
                    if reply.tool_calls:
                        message["tool_calls"] = [
                            {
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["name"], "arguments": _arguments(call)},
                            }
                            for call in reply.tool_calls
                        ]
                    self._json(
                        200,
                        {
                            "id": "chatcmpl-test",
                            "object": "chat.completion",
                            "created": 0,
                            "model": name,
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                                    "message": message,
                                }
                            ],
                            "usage": usage,
                        },
                    )

            def _stream(
                self, reply: Reply, model: str, usage: dict[str, int], body: dict[str, Any]
            ) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

                def send(obj: Any) -> None:
                    data = obj if isinstance(obj, str) else json.dumps(obj)
                    self.wfile.write(f"data: {data}\n\n".encode())
                    self.wfile.flush()

                def chunk(
                    delta: dict[str, Any],
                    finish: str | None = None,
                    with_usage: dict[str, int] | None = None,
                ) -> dict[str, Any]:
                    out: dict[str, Any] = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }
                    if with_usage is not None:
                        out = {**out, "choices": [], "usage": with_usage}
                    return out

                try:
                    send(chunk({"role": "assistant", "content": ""}))
                    pieces = [
                        reply.text[i : i + reply.chunk_size]
                        for i in range(0, len(reply.text), reply.chunk_size)
                    ]
                    for n, piece in enumerate(pieces):
                        if reply.cut_after is not None and n >= reply.cut_after:
                            return  # connection closes without [DONE]: a cut stream
                        if reply.chunk_delay:
                            time.sleep(reply.chunk_delay)
                        send(chunk({"content": piece}))
                    for index, call in enumerate(reply.tool_calls):
                        # like real endpoints: id and name first, the arguments in pieces
                        head = {"index": index, "id": call["id"], "type": "function"}
                        head["function"] = {"name": call["name"], "arguments": ""}
                        send(chunk({"tool_calls": [head]}))
                        text = _arguments(call)
                        for i in range(0, len(text), reply.chunk_size):
                            if reply.chunk_delay:
                                time.sleep(reply.chunk_delay)
                            piece = {"arguments": text[i : i + reply.chunk_size]}
                            send(chunk({"tool_calls": [{"index": index, "function": piece}]}))
                    send(chunk({}, finish="tool_calls" if reply.tool_calls else "stop"))
                    if (body.get("stream_options") or {}).get("include_usage"):
                        send(chunk({}, with_usage=usage))
                    send("[DONE]")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client went away (a cancelled request)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the scripted OpenAI-compatible server.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--answer", default=code_answer("result = 42", "The answer."))
    parser.add_argument("--api-key", default="sk-test-0123456789abcdef")
    args = parser.parse_args()
    server = LLMServer(api_key=args.api_key or None, default=Reply(text=args.answer))
    if args.port:  # re-bind on the requested port
        server.stop()
        server._httpd = ThreadingHTTPServer(("127.0.0.1", args.port), server._handler_class())
    print(f"listening on {server.url}", flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
