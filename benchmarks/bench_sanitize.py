"""What the trust boundary costs: cleaning an output vs IPython making it in the first place.

Every child output and every redraw of a streamed answer passes ``sanitize``; the cost
should stay small next to what producing the output already costs. Baselines measured in
the same run: IPython's display formatter on the same DataFrame, matplotlib rendering the
same chart to PNG, and markdown-it rendering the same answer without cleaning. Targets:
cleaning a DataFrame table costs less than formatting it (ratio < 1), a chart less than a
tenth of drawing it, and cleaning adds less than half to rendering an answer's Markdown
(ratio < 1.5; the answer is redrawn several times a second while it streams).

    python benchmarks/bench_sanitize.py [--quick]
"""

from __future__ import annotations

import argparse
import base64

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from benchkit import best
from IPython.core.formatters import DisplayFormatter
from IPython.core.pylabtools import print_figure

from dataagent_jupyter.sanitize import _markdown_it, clean_output, markdown_html


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (CI)")
    repeat = 3 if parser.parse_args().quick else 15

    formatter = DisplayFormatter()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((60, 20)), columns=[f"<b>col {i}</b>" for i in range(20)])
    table, meta = formatter.format(frame)

    fig, ax = plt.subplots()
    ax.plot(rng.random(1000))
    png = {"image/png": base64.b64encode(print_figure(fig, "png")).decode(), "text/plain": "F"}

    answer = (
        "Group the sales by **region** and add up the revenue; see "
        "[the docs](https://pandas.pydata.org/docs/).\n\n"
        + "| region | total |\n|---|---|\n"
        + "".join(f"| r{i} | {i} |\n" for i in range(20))
        + "\n```python\nresult = sales.groupby('region')['revenue'].sum()\n```\n"
    )

    rows = [
        (
            "DataFrame 60x20",
            best(lambda: clean_output(table, meta), repeat),
            "IPython formats it",
            best(lambda: formatter.format(frame), repeat),
        ),
        (
            "chart PNG",
            best(lambda: clean_output(png), repeat),
            "matplotlib draws it",
            best(lambda: print_figure(fig, "png"), repeat),
        ),
        (
            "answer (Markdown)",
            best(lambda: markdown_html(answer), repeat),
            "markdown-it alone",
            best(lambda: _markdown_it().render(answer), repeat),
        ),
    ]
    plt.close(fig)
    print("\nCleaning one output (ms, best of runs) vs making it")
    print(f"{'output':>18} {'clean':>8} {'baseline':>20} {'base ms':>8} {'ratio':>7}")
    for name, clean, base_name, base in rows:
        print(f"{name:>18} {clean:8.2f} {base_name:>20} {base:8.2f} {clean / base:7.2f}")


if __name__ == "__main__":
    main()
