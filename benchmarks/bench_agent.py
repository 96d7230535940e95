"""Agent mode: the extension's overhead per step, beyond the child's own run time.

    .venv/bin/python benchmarks/bench_agent.py [--quick] [--steps N] [--repeat R]

The scripted server (tests/llm_server.py) answers at once, each answer a ``run_python``
tool call, so an agent run of N steps costs N+1 requests and N runs in the child. The
baseline, measured in the same run on the same child, is N bare ``Sandbox.run`` calls of
the same code: the child's own run time. Overhead per step = (agent run - baseline) / N:
the HTTP request and streamed answer through the openai client, parsing the move, the
step report round trip to the child, the summary for the model, events and history.
Each agent run leases a fresh child (one per question); the next one is started ahead,
and each timed run waits for it to be up first, as a person's next question does. The
agent run includes taking that child and sending it the frame, which the baseline (timed
after its first run) does not: the figure errs on the side of overhead.
Goal (issue 13): under 30 ms a step. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchkit import table, wait_ready  # noqa: E402
from llm_server import LLMServer, Reply, tool_call  # noqa: E402

from dataagent_jupyter.config import DataAgent  # noqa: E402
from dataagent_jupyter.events import Done  # noqa: E402
from dataagent_jupyter.options import AskOptions  # noqa: E402
from dataagent_jupyter.session import Session  # noqa: E402

STEP = "result = sales.groupby('region')['revenue'].sum()\nresult"


def agent_run(session: Session, server: LLMServer, steps: int) -> float:
    server.script(
        *[Reply(tool_calls=[tool_call("run_python", code=STEP)]) for _ in range(steps)],
        "Done.",
    )
    wait_ready(session.sandbox)
    started = time.perf_counter()
    events = list(session.ask("where is revenue?", AskOptions(frames=("sales",), mode="agent")))
    elapsed = time.perf_counter() - started
    if not isinstance(events[-1], Done) or events[-1].steps != steps:
        raise RuntimeError(f"the agent run did not end as scripted: {events[-1]}")
    return elapsed


def baseline(session: Session, steps: int) -> float:
    """N bare runs on one leased child (as an agent run has), its start and frame untimed."""
    frames = {"sales": session.namespace["sales"]}
    lease = session.sandbox.lease()
    try:
        for _ in lease.run("import pandas", frames):
            pass
        started = time.perf_counter()
        for i in range(steps):
            for _ in lease.run(STEP, frames, attempt=i + 1):
                pass
        return time.perf_counter() - started
    finally:
        lease.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    repeat = 2 if args.quick else args.repeat
    sales = pd.DataFrame({"region": ["N", "S", "E", "W"] * 250, "revenue": range(1000)})
    with LLMServer() as server, tempfile.TemporaryDirectory() as tmp:
        config = DataAgent(
            base_url=server.url,
            api_key=server.api_key,
            max_retries=0,
            cache=False,
            data_dir=str(Path(tmp) / "data"),
            output_dir=str(Path(tmp) / "charts"),
            warm_child=True,  # the default: the next question's child starts ahead
            agent_max_steps=args.steps,
        )
        session = Session(config, {"sales": sales})
        session.sandbox.start_warm()  # as loading the extension does
        try:
            agent_run(session, server, 1)  # start the child, send the frame, warm imports
            baseline(session, 1)
            runs = [agent_run(session, server, args.steps) for _ in range(repeat)]
            bases = [baseline(session, args.steps) for _ in range(repeat)]
        finally:
            session.close()
    agent_med, base_med = statistics.median(runs), statistics.median(bases)
    per_step = (agent_med - base_med) / args.steps * 1000
    table(
        f"Agent run of {args.steps} steps, instantly answering server (median of {repeat})",
        ["measure", "seconds", "per step (ms)", "ratio to baseline"],
        [
            [
                "agent run (whole)",
                f"{agent_med:.3f}",
                f"{agent_med / args.steps * 1000:.1f}",
                f"{agent_med / base_med:.2f}x",
            ],
            [
                "baseline: bare sandbox runs",
                f"{base_med:.3f}",
                f"{base_med / args.steps * 1000:.1f}",
                "1.00x",
            ],
            ["extension overhead", f"{agent_med - base_med:.3f}", f"{per_step:.1f}", "-"],
        ],
    )
    print(f"\noverhead per step: {per_step:.1f} ms (goal: < 30 ms)")


if __name__ == "__main__":
    main()
