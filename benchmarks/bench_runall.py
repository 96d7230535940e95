"""Run All of a 10-question notebook three times: first, again, and after a kernel restart.

Each ``%%ask`` cell is executed in a real ipykernel with the cell id JupyterLab sends, so a
re-run replaces its turn and repeats its request byte for byte; the response cache then
answers. The endpoint is the local test server, answering after ``--latency`` seconds
(what a hosted model costs at the least). The baseline is the first pass, measured in the
same run: the other passes are shown as a ratio of it.

    .venv/bin/python benchmarks/bench_runall.py [--questions 10] [--latency 0.5] [--quick]

Goal (issue 12): requests 10, 0, 0; the second and third passes cost no more than the
extension's own overhead (no endpoint time at all).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from kernel_helpers import Kernel  # noqa: E402
from llm_server import LLMServer, Reply, Request, code_answer  # noqa: E402

SETUP = (
    "import numpy as np, pandas as pd\n"
    "rng = np.random.default_rng(1)\n"
    "sales = pd.DataFrame({'region': rng.choice(['N', 'S', 'E', 'W'], 5000),\n"
    "                      'product': rng.choice(['basic', 'pro'], 5000),\n"
    "                      'revenue': rng.gamma(2.0, 50.0, 5000).round(2)})\n"
    "%load_ext dataagent"
)
QUESTIONS = [
    "total revenue by region?",
    "and the mean per region?",
    "which product sells best?",
    "revenue share of each product per region?",
    "how many orders above 200?",
    "the ten largest orders?",
    "median revenue per product?",
    "which region has the most orders?",
    "revenue quartiles?",
    "orders per region and product?",
]


def answer(latency: float):
    def reply(request: Request) -> Reply:
        question = request.messages[-1]["content"].rsplit("Question: ", 1)[-1]
        code = f"result = sales.groupby('region')['revenue'].sum()  # {question}"
        return Reply(text=code_answer(code, "Group and sum."), delay=latency)

    return reply


def run_all(kernel: Kernel, questions: list[str]) -> float:
    """Execute every cell in order, as Run All does; the wall time in seconds."""
    started = time.perf_counter()
    for i, question in enumerate(questions):
        ex = kernel.execute(f"%%ask sales\n{question}", cell_id=f"cell-{i:02d}", timeout=300)
        if not ex.ok:
            raise RuntimeError(f"cell {i} failed: {ex.error}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=len(QUESTIONS))
    parser.add_argument("--latency", type=float, default=0.5, help="endpoint seconds/answer")
    parser.add_argument("--quick", action="store_true", help="no endpoint latency (smoke run)")
    args = parser.parse_args()
    latency = 0.0 if args.quick else args.latency
    questions = [QUESTIONS[i % len(QUESTIONS)] + f" ({i})" for i in range(args.questions)]

    rows = []
    with LLMServer(default=answer(latency)) as server, tempfile.TemporaryDirectory() as data:
        env = {
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": server.api_key or "",
            "JUPYTER_DATA_DIR": data,
            "JPY_SESSION_NAME": str(Path(data) / "bench.ipynb"),
        }

        def start() -> Kernel:
            kernel = Kernel(env=env, extra_args=["--DataAgent.warm_child=False"])
            if not kernel.execute(SETUP).ok:
                raise RuntimeError("the setup cell failed")
            return kernel

        kernel = start()
        try:
            for label in ("1. first Run All", "2. Run All again"):
                before = len(server.chat_requests())
                seconds = run_all(kernel, questions)
                rows.append((label, len(server.chat_requests()) - before, seconds))
        finally:
            kernel.shutdown()
        kernel = start()  # a kernel restart: a new process, the same notebook
        try:
            before = len(server.chat_requests())
            seconds = run_all(kernel, questions)
            rows.append(
                ("3. after a kernel restart", len(server.chat_requests()) - before, seconds)
            )
        finally:
            kernel.shutdown()

    base = rows[0][2]
    print(
        f"Run All of a {len(questions)}-question notebook (endpoint latency {latency:.2f} s "
        "per answer)"
    )
    print(f"{'pass':<28}{'requests':>9}{'wall s':>9}{'per cell ms':>13}{'vs pass 1':>11}")
    print("-" * 70)
    for label, requests, seconds in rows:
        per_cell = seconds / len(questions) * 1000
        print(f"{label:<28}{requests:>9}{seconds:>9.2f}{per_cell:>13.1f}{seconds / base:>11.2f}")
    goal = [len(questions), 0, 0]
    got = [r[1] for r in rows]
    print(f"goal: requests {goal} -> {'met' if got == goal else 'NOT met: ' + str(got)}")
    if got != goal:
        sys.exit(1)


if __name__ == "__main__":
    main()
