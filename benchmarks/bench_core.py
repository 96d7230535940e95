"""Core costs: describing frames (vs pandas' describe) and the overhead of one %%ask.

Prints tables of ratios against baselines measured in the same run. Targets (issue 2):
describe a 10^7-row frame in < 50 ms and >= 50x faster than ``df.describe(include="all")``;
the 2,000-column frame within ``max_prompt_tokens``; ``%%ask`` overhead < 30 ms beyond
the LLM's own time for a 10^7-row frame.

    python benchmarks/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchkit import best
from llm_server import LLMServer, code_answer

from dataagent_jupyter.config import DataAgent
from dataagent_jupyter.frames import describe
from dataagent_jupyter.llm import ChatRequest, OpenAIChat


def make(rows: int, cols: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    data = {f"c{i}": rng.random(rows) for i in range(cols)}
    if cols >= 4:  # a few non-numeric columns, as real frames have
        data["c1"] = pd.Categorical(rng.choice(["a", "b", "c"], rows))
        data["c2"] = pd.date_range("2020-01-01", periods=rows, freq="s")
        data["c3"] = rng.integers(0, 1000, rows)
    return pd.DataFrame(data)


def bench_describe(quick: bool) -> None:
    config = DataAgent()
    budget = int(config.max_prompt_tokens * 0.75)
    shapes = [(10**3, 20), (10**5, 20), (10**7, 20), (10**4, 2000)]
    if quick:
        shapes = [(10**3, 20), (10**5, 20), (10**4, 2000)]
    print("\nDescribing frames (ms, best of runs) vs df.describe(include='all')")
    print(
        f"{'frame':>16} {'dataagent':>10} {'pandas':>10} {'ratio':>8} {'tokens':>7} "
        f"{'budget':>7} {'cols shown':>10}"
    )
    for rows, cols in shapes:
        df = make(rows, cols)
        ours = best(lambda df=df: describe("df", df, budget_tokens=budget))
        reps = 1 if rows * cols >= 10**7 else 3
        theirs = best(lambda df=df: df.describe(include="all"), repeat=reps)
        d = describe("df", df, budget_tokens=budget)
        print(
            f"{f'{rows:.0e} x {cols}':>16} {ours:>10.1f} {theirs:>10.1f} "
            f"{theirs / ours:>7.0f}x {d.tokens:>7} {config.max_prompt_tokens:>7} "
            f"{d.columns_shown:>5}/{cols}"
        )


def bench_ask_overhead(quick: bool) -> None:
    from IPython.testing.globalipapp import get_ipython

    rows = 10**6 if quick else 10**7
    with LLMServer(default=None) as server:
        answer = code_answer("result = df['c0'].mean()\nresult")
        server.default = lambda request: __import__("llm_server").Reply(text=answer)
        os.environ["OPENAI_BASE_URL"] = server.url
        os.environ["OPENAI_API_KEY"] = server.api_key or ""
        # baseline: the same streamed request with the bare client, same server, same run
        client = OpenAIChat(api_key=server.api_key, base_url=server.url, timeout=10, max_retries=0)
        req = ChatRequest(model="gpt-4o-mini", messages=({"role": "user", "content": "x"},))
        client.complete(req, on_delta=lambda t: None)
        raw = [best(lambda: client.complete(req, on_delta=lambda t: None), 1) for _ in range(15)]
        ip = get_ipython()
        ip.run_line_magic("load_ext", "dataagent_jupyter")
        ip.run_line_magic("config", "DataAgent.warm_child = False")
        ip.run_line_magic("config", "DataAgent.cache = False")
        ip.user_ns["df"] = make(rows, 20)
        ip.run_cell("pass")
        from IPython.utils.capture import capture_output

        def one() -> None:
            with capture_output():
                ip.run_cell_magic("ask", "df", "mean of c0?")

        one()
        asks = [best(one, 1) for _ in range(15)]
    med_raw, med_ask = statistics.median(raw), statistics.median(asks)
    print(f"\nOne %%ask on a {rows:.0e}-row frame, test server answering instantly (ms, median)")
    print(f"{'bare streamed request':>28} {med_raw:>8.1f}")
    print(f"{'%%ask end to end':>28} {med_ask:>8.1f}")
    print(f"{'extension overhead':>28} {med_ask - med_raw:>8.1f}   (target < 30)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the 10^7-row cases")
    args = parser.parse_args()
    bench_describe(args.quick)
    bench_ask_overhead(args.quick)


if __name__ == "__main__":
    main()
