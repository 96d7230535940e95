"""Re-record the example notebooks' transcripts, then store their outputs.

The notebooks replay these transcripts when no OPENAI_API_KEY is set (and in CI), so they
run anywhere. Run this after changing a notebook's questions or the prompt format:

    python notebooks/record_transcripts.py            # transcripts, then outputs
    python notebooks/record_transcripts.py --outputs  # outputs only

The stored outputs are what CI compares under strict nbval (``notebooks/sanitize.cfg``
masks timings, token counts, paths and ids): they are produced by replaying, with no key
and an empty cache, exactly as CI runs them.

Each question's answer is written below in ANSWERS; the script starts the test server
(127.0.0.1), executes the notebook with DATAAGENT_RECORD pointing at the transcript, and
stops the server.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from llm_server import LLMServer, Reply, Request, code_answer  # noqa: E402

ANSWERS = {
    "Which region grew revenue the most from the first to the last quarter?": code_answer(
        'by_q = sales.groupby(["region", "quarter"])["revenue"].sum().unstack("quarter")\n'
        "growth = (by_q.iloc[:, -1] - by_q.iloc[:, 0]) / by_q.iloc[:, 0]\n"
        'result = growth.sort_values(ascending=False).rename("growth").to_frame()\n'
        "result",
        "Sum revenue per region and quarter, then compare the last quarter with the first "
        "as a relative change, largest first.",
    ),
    "Plot total revenue per quarter for each region as a line chart.": code_answer(
        "import matplotlib.pyplot as plt\n\n"
        'pivot = sales.pivot_table(index="quarter", columns="region", values="revenue",\n'
        '                          aggfunc="sum")\n'
        "fig, ax = plt.subplots(figsize=(7, 4))\n"
        'pivot.plot(ax=ax, marker="o")\n'
        'ax.set_title("Revenue per quarter by region")\n'
        'ax.set_xlabel("Quarter")\n'
        'ax.set_ylabel("Revenue")\n'
        "result = pivot\n"
        "result",
        "Pivot revenue to one column per region and draw one line per region.",
    ),
    "And which product sold the most units in each region?": code_answer(
        'units = sales.groupby(["region", "product"])["units"].sum().reset_index()\n'
        'result = units.loc[units.groupby("region")["units"].idxmax()].reset_index(drop=True)\n'
        "result",
        "Total the units per region and product, then keep the best product of each region.",
    ),
}


def answer(request: Request) -> Reply:
    question = request.messages[-1]["content"].rsplit("Question: ", 1)[-1].strip()
    if question not in ANSWERS:
        return Reply(status=400, error_message=f"no scripted answer for {question!r}")
    return Reply(text=ANSWERS[question])


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) these variables for the notebook's kernel, then put
    back what was there."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(notebook: Path) -> nbformat.NotebookNode:
    """Run every cell of ``notebook`` in a fresh kernel, with an empty history and cache."""
    with tempfile.TemporaryDirectory() as data, environment(JUPYTER_DATA_DIR=data):
        nb = nbformat.read(notebook, as_version=4)
        NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def record(notebook: Path) -> None:
    """Answer the notebook's questions from ANSWERS and write what was said to its
    transcript."""
    transcript = notebook.with_suffix(".jsonl")
    transcript.unlink(missing_ok=True)
    with (
        LLMServer(default=answer) as server,
        environment(
            OPENAI_BASE_URL=server.url,
            OPENAI_API_KEY=server.api_key or "",
            DATAAGENT_RECORD=str(transcript),
        ),
    ):
        execute(notebook)
    print(f"{transcript.name}: {len(transcript.read_text().splitlines())} exchanges")


def store_outputs(notebook: Path) -> None:
    """Execute ``notebook`` as CI does (replay, no key, fresh cache) and save its outputs."""
    with environment(OPENAI_API_KEY=None, OPENAI_BASE_URL=None):
        nb = execute(notebook)
    for cell in nb.cells:  # what nbclient adds beyond the outputs is noise in a diff
        cell.metadata.pop("execution", None)
    nbformat.write(nb, notebook)
    print(f"{notebook.name}: outputs stored")


if __name__ == "__main__":
    if "--outputs" not in sys.argv[1:]:
        record(HERE / "quickstart.ipynb")
    for name in ("quickstart.ipynb", "load_and_chat.ipynb"):
        store_outputs(HERE / name)
