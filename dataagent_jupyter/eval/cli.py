"""The command line of ``python -m dataagent_jupyter.eval`` (``--help`` lists every option).

Exit status: 0 when every question was asked (whatever the accuracy), 1 when the run had
to stop (a fatal endpoint error, Ctrl-C; the report holds what finished), 2 for bad
arguments or files. Errors are printed as the notebook prints them: what happened, then
what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import DataAgent
from ..errors import Cancelled, DataAgentError, UsageError
from ..llm import endpoint_host
from . import report
from .dabench import load_questions, select
from .runner import Pool, Result, Settings, Stopped, StopSignal, Tables, results_in_order


def parser() -> argparse.ArgumentParser:
    """The argument parser (also what the docs show)."""
    p = argparse.ArgumentParser(
        prog="python -m dataagent_jupyter.eval",
        description="Ask a model data-analysis questions (InfiAgent-DABench format) through "
        "the same pipeline as %%ask --run, score the answers, and write report.md and "
        "report.json. The endpoint is set as in a notebook: OPENAI_BASE_URL and "
        "OPENAI_API_KEY (or DATAAGENT_REPLAY).",
    )
    p.add_argument("questions", help="questions file, JSON Lines (DABench da-dev-questions.jsonl)")
    p.add_argument("--tables", required=True, help="folder holding the tables the questions name")
    p.add_argument("--labels", help="labels file, JSON Lines with id and common_answers")
    p.add_argument("--ids", help="only these question ids, comma-separated (e.g. 1,5,9)")
    p.add_argument("--limit", type=int, help="at most this many questions")
    p.add_argument("--model", help="chat model (default: DataAgent.model, gpt-4o-mini)")
    p.add_argument(
        "--mode", choices=["run", "agent"], default="run", help="run (default) or agent mode"
    )
    p.add_argument(
        "--privacy", choices=["sample", "schema"], default="sample", help="what the model sees"
    )
    p.add_argument(
        "--jobs", type=int, default=1, help="questions asked at once, each in its own child"
    )
    p.add_argument("--out", default="eval-report", help="folder for report.md and report.json")
    p.add_argument(
        "--resume", action="store_true", help="skip the questions already in --out's report"
    )
    p.add_argument(
        "--price",
        nargs=2,
        type=float,
        metavar=("IN", "OUT"),
        help="USD per million input and output tokens, for the cost estimate",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (see the module docstring)."""
    args = parser().parse_args(argv)
    try:
        return _run(args)
    except DataAgentError as exc:
        _say_error(exc)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.jobs < 1:
        raise UsageError("--jobs must be 1 or more.")
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more.")
    if args.price is not None and min(args.price) < 0:
        raise UsageError("--price takes two numbers of 0 or more (USD per million tokens).")
    tables = Path(args.tables)
    if not tables.is_dir():
        raise UsageError(f"--tables {args.tables!r} is not a folder.")
    questions = load_questions(args.questions, args.labels)
    ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None
    chosen = select(questions, ids=ids, limit=args.limit)
    defaults = DataAgent()
    settings = Settings(model=args.model or defaults.model, mode=args.mode, privacy=args.privacy)
    prices = {settings.model: list(args.price)} if args.price else dict(defaults.prices)
    out = Path(args.out)
    earlier = report.read_previous(out, settings) if args.resume else []
    done_ids = {r.id for r in earlier}
    todo = [q for q in chosen if q.id not in done_ids]
    source = {
        "questions": str(args.questions),
        "tables": str(tables),
        "endpoint": "replay" if defaults.replay else endpoint_host(defaults.base_url),
    }
    results: dict[str, Result] = {r.id: r for r in earlier}
    order = [q.id for q in questions]
    lock = threading.Lock()

    def save() -> None:
        current = results_in_order(results.values(), order)
        report.write(out, report.build(current, settings, source=source, prices=prices))

    if earlier:
        print(f"resuming: {len(earlier)} question(s) already in {out / 'report.json'}")
    progress = report.Progress(len(todo))
    progress.start()
    stop = StopSignal()
    pool = Pool(settings, charts=out / "charts")
    stopped: DataAgentError | None = None
    store = Tables(tables)

    def ask(question: Any) -> Result | None:
        if stop.requested:
            return None
        result = pool.worker().ask(question, store, stop)
        if result is None:
            return None
        with lock:
            results[result.id] = result
            progress.update(result)
            save()
        return result

    executor = concurrent.futures.ThreadPoolExecutor(args.jobs, thread_name_prefix="eval")
    try:
        futures = [executor.submit(ask, q) for q in todo]
        for future in concurrent.futures.as_completed(futures):
            try:
                future.result()
            except Stopped as exc:
                stopped = stopped or exc.error
                stop.request()
    except KeyboardInterrupt:
        stop.request()
        stopped = Cancelled("the evaluation was stopped (Ctrl-C).")
    finally:
        stop.request()
        executor.shutdown(wait=True, cancel_futures=True)
        progress.finish()
        pool.close()
    with lock:
        save()
    final = report.build(
        results_in_order(results.values(), order), settings, source=source, prices=prices
    )
    print(report.table(final))
    print(f"report: {out / 'report.md'}, {out / 'report.json'}")
    if stopped is not None:
        _say_error(stopped)
        print("the report holds the questions that finished; run again with --resume.")
        return 1
    return 0


def _say_error(exc: DataAgentError) -> None:
    print(f"{exc.title}: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(exc.hint, file=sys.stderr)
