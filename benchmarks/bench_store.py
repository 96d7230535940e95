"""What the store adds to a question: cache-hit latency and history write cost per turn.

Each figure sits beside its baseline measured in the same run on the same disk: a request
to the local test server (answering at once, so only HTTP + SDK cost remains) for the cache
hit, and a plain ``sqlite3`` insert of the same row for the history write.

    .venv/bin/python benchmarks/bench_store.py [--n 500]

Targets (issue 6): a cached answer under 5 ms of extension overhead; a history write
under 2 ms per turn.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from llm_server import LLMServer, Reply, code_answer  # noqa: E402

from dataagent_jupyter.llm import ChatRequest, OpenAIChat  # noqa: E402
from dataagent_jupyter.store import (  # noqa: E402
    CachingBackend,
    History,
    ResponseCache,
    Turn,
)
from dataagent_jupyter.store.history import _COLUMNS, _SCHEMA  # noqa: E402

ANSWER = code_answer(
    "result = sales.groupby('region')['revenue'].sum().sort_values(ascending=False)",
    "Group the sales by region, sum the revenue and sort it, largest first.",
)


def realistic_request() -> ChatRequest:
    """About the size the engine sends: system rules, three frame descriptions, a question."""
    columns = "\n".join(
        f"- col_{i} (float64): mean {i * 1.5:.2f}, std 3.2, min 0, max 99, 0 missing"
        for i in range(60)
    )
    frames = "\n\n".join(f"Frame `df{n}`: 100,000 rows x 60 columns\n{columns}" for n in range(3))
    return ChatRequest(
        model="gpt-4o-mini",
        messages=(
            {"role": "system", "content": "You write pandas code. " * 40},
            {"role": "user", "content": f"Data available:\n\n{frames}\n\nQuestion: top region?"},
        ),
    )


def realistic_turn(n: int) -> Turn:
    return Turn(
        notebook="analysis.ipynb",
        conversation="bench",
        question=f"Which region had the highest revenue in quarter {n % 4 + 1}?",
        model="gpt-4o-mini",
        frames={"sales": "a1b2c3d4e5f6", "regions": "0f9e8d7c6b5a"},
        prompt_tokens=2400,
        answer="Group the sales by region, sum the revenue and sort it. " * 8,
        code="result = sales.groupby('region')['revenue'].sum().sort_values()\n" * 3,
        result="north    1234567.0\nsouth     987654.0",
        outcome="ran",
        tokens_in=2450,
        tokens_out=180,
        latency=2.3,
        attempts=1,
    )


def timings(fn: Callable[[int], object], n: int, warmup: int = 5) -> list[float]:
    for i in range(warmup):
        fn(-1 - i)
    out = []
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - started) * 1000)
    return out


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="repetitions per measurement")
    parser.add_argument("--quick", action="store_true", help="50 repetitions (a smoke run)")
    args = parser.parse_args()
    n = 50 if args.quick else args.n
    rows: list[tuple[str, int, list[float], str]] = []
    request = realistic_request()
    noop = lambda _text: None  # noqa: E731

    with tempfile.TemporaryDirectory() as tmp, LLMServer(default=Reply(text=ANSWER)) as server:
        tmp_path = Path(tmp)
        endpoint = OpenAIChat(
            api_key=server.api_key, base_url=server.url, timeout=10, max_retries=0
        )
        http_n = max(20, n // 10)
        rows.append(
            (
                "request to the local test server (baseline)",
                http_n,
                timings(lambda _i: endpoint.complete(request, on_delta=noop), http_n),
                "",
            )
        )

        history = History.open(tmp_path / "store")
        cache = ResponseCache(history.database, max_entries=2000)
        backend = CachingBackend(endpoint, cache)
        before = len(server.chat_requests())
        backend.complete(request, on_delta=noop)  # fills the cache
        rows.append(
            (
                "CachingBackend.complete, cache hit",
                n,
                timings(lambda _i: backend.complete(request, on_delta=noop), n),
                "< 5 ms",
            )
        )
        assert len(server.chat_requests()) == before + 1, "cache hits reached the server"
        rows.append(
            (
                "  of which request.key() (hash of the prompt)",
                n,
                timings(lambda _i: request.key(), n),
                "",
            )
        )

        rows.append(
            (
                "History.add, one turn",
                n,
                timings(lambda i: history.add(realistic_turn(i)), n),
                "< 2 ms",
            )
        )
        history.close()

        # Baselines: the same row, the same schema, plain sqlite3 and nothing else.
        row = realistic_turn(0)._row()
        insert = (
            f"INSERT INTO turns ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
        )
        for label, pragmas in [
            ("plain sqlite3 insert+commit, defaults (baseline)", []),
            (
                "plain sqlite3 insert+commit, WAL + NORMAL (baseline)",
                ["PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"],
            ),
        ]:
            path = tmp_path / f"plain-{len(rows)}.sqlite3"
            conn = sqlite3.connect(path)
            for pragma in pragmas:
                conn.execute(pragma)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.commit()

            def plain(_i: int, conn: sqlite3.Connection = conn) -> None:
                conn.execute(insert, row)
                conn.commit()

            rows.append((label, n, timings(plain, n), ""))
            conn.close()

    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'n':>5}  {'median ms':>9}  {'p95 ms':>8}  target")
    print("-" * (width + 38))
    for label, count, values, target in rows:
        print(
            f"{label:<{width}}  {count:>5}  {statistics.median(values):>9.3f}  "
            f"{p95(values):>8.3f}  {target}"
        )


if __name__ == "__main__":
    main()
