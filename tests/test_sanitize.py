"""The trust boundary: child output and model text are shown only as safe, cleaned content.

Payloads are real attacks (tests/markup_payloads.py); the DataFrames and charts are the real
bundles IPython's display system makes for them, so the tests show both that the attacks
are gone and that what users want to see still renders.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.formatters import DisplayFormatter
from IPython.display import HTML, SVG, Javascript, Markdown
from kernel_helpers import Kernel, extension_kernel
from llm_server import LLMServer, code_answer
from markdown_it import MarkdownIt
from markup_payloads import cell_payload, html_payload, markdown_payload, problems, svg_payload

from dataagent_jupyter.events import Output
from dataagent_jupyter.sanitize import (
    clean_html,
    clean_output,
    markdown_bundle,
    markdown_html,
    markdown_source,
)
from dataagent_jupyter.store.export import export_conversation
from dataagent_jupyter.store.history import HistoryTable, Turn

_format = DisplayFormatter()


def bundle(obj: object) -> tuple[dict, dict]:
    """The MIME bundle and metadata IPython's ``display(obj)`` would send."""
    data, metadata = _format.format(obj)
    return data, metadata


def hostile_frame() -> pd.DataFrame:
    return pd.DataFrame({cell_payload("col"): [cell_payload("val"), "plain"], "n": [1, 2]})


def figure_bundle(fmt: str) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import print_figure

    fig, ax = plt.subplots()
    ax.bar(["N", "S"], [3, 4])
    raw = print_figure(fig, fmt)
    plt.close(fig)
    if fmt == "png":
        return {"image/png": base64.b64encode(raw).decode(), "text/plain": "<Figure>"}
    return {"image/svg+xml": raw if isinstance(raw, str) else raw.decode(), "text/plain": "<F>"}


# --- HTML -----------------------------------------------------------------------------------


def test_hostile_html_loses_everything_that_runs_or_loads() -> None:
    dirty = html_payload("h")
    assert len(problems(dirty)) > 15  # the checker sees the attacks it is meant to see
    data, _ = clean_output(*bundle(HTML(dirty)))
    assert problems(data["text/html"]) == []
    assert "onerror" not in data["text/html"] and "javascript" not in data["text/html"]
    # the harmless parts are still there
    assert "a link" in data["text/html"] and "<details" in data["text/html"]


def test_a_dataframe_still_renders_as_a_table_with_hostile_names_as_text() -> None:
    data, _ = clean_output(*bundle(hostile_frame()))
    table = data["text/html"]
    assert problems(table) == []
    assert "<table" in table and "<th>n</th>" in table and "<td>plain</td>" in table
    # the column name and the value are shown, as text
    assert "&lt;img" in table and "<img" not in table
    assert 'style="text-align:right"' in table  # pandas' header alignment is kept


def test_a_matplotlib_chart_stays_an_image() -> None:
    png = figure_bundle("png")
    data, metadata = clean_output(png, {"image/png": {"width": 640, "height": 480}})
    assert data["image/png"] == png["image/png"]
    assert base64.b64decode(data["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert metadata == {"image/png": {"width": 640, "height": 480}}


def test_svg_is_shown_as_an_image_that_cannot_run_script() -> None:
    data, _ = clean_output(*bundle(SVG(svg_payload("s"))))
    assert "image/svg+xml" not in data
    assert problems(data["text/html"]) == []
    src = data["text/html"].split('src="', 1)[1].split('"', 1)[0]
    assert src.startswith("data:image/svg+xml;base64,")
    # the image is the sender's SVG, unchanged: script does not run in an <img>
    assert b"<rect" in base64.b64decode(src.split(",", 1)[1])
    # a real matplotlib SVG chart, the same way
    chart, _ = clean_output(figure_bundle("svg"))
    assert chart["text/html"].startswith('<img src="data:image/svg+xml;base64,')


def test_markdown_from_the_child_is_rendered_and_cleaned() -> None:
    data, _ = clean_output(*bundle(Markdown(markdown_payload("m"))))
    assert "text/markdown" not in data  # never left for a trusted Markdown renderer
    page = data["text/html"]
    assert problems(page) == []
    assert "<strong>Bold</strong>" in page
    assert '<a href="https://pandas.pydata.org/docs/"' in page
    assert "bad link" in page and 'href="javascript' not in page


def test_model_markdown_is_cleaned_and_links_keep_working() -> None:
    text = (
        "Group by **region**, see [the docs](https://pandas.pydata.org/docs/).\n\n"
        + markdown_payload("x")
        + "\n| region | total |\n|---|---|\n| N | 3 |\n\n```python\nx = a < b\n```\n"
    )
    page = markdown_html(text)
    assert problems(page) == []
    assert '<a href="https://pandas.pydata.org/docs/" rel="noopener noreferrer nofollow">' in page
    assert "<table>" in page and "<td>N</td>" in page
    assert "&lt;" in page and "<pre><code" in page  # code kept as code, highlighted
    assert markdown_bundle(text) == {"text/html": page, "text/plain": text}


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " java\tscript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
    ],
)
def test_links_that_run_script_lose_their_target(href: str) -> None:
    page = clean_html(f'<a href="{href}">x</a><img src="{href}">')
    assert problems(page) == [] and "href" not in page and "src" not in page


def test_only_data_images_load() -> None:
    ok = "data:image/png;base64,iVBORw0KGgo="
    page = clean_html(f'<img src="{ok}"><img src="https://example.invalid/p.png">')
    assert page.count("<img") == 2 and page.count("src=") == 1 and ok in page


# --- the MIME allow-list and size cap --------------------------------------------------------


@pytest.mark.parametrize(
    "mime",
    [
        "application/javascript",
        "application/vnd.jupyter.widget-view+json",
        "application/vnd.plotly.v1+json",
        "text/x-unknown",
    ],
)
def test_other_types_are_dropped_with_a_note_naming_them(mime: str) -> None:
    data, _ = clean_output({mime: "alert(1)", "text/plain": "Widget()"})
    assert set(data) == {"text/plain"}
    lines = data["text/plain"].splitlines()
    assert lines[0] == "Widget()"
    assert len(lines) == 2 and mime in lines[1] and "not shown" in lines[1]


def test_javascript_output_alone_leaves_just_the_note() -> None:
    data, _ = clean_output(*bundle(Javascript("alert(1)")))
    assert list(data) == ["text/plain"]
    assert "application/javascript" in data["text/plain"]


def test_dropped_types_are_noted_in_the_html_that_is_shown() -> None:
    data, _ = clean_output({"text/html": "<b>chart</b>", "application/vnd.plotly.v1+json": {}})
    assert data["text/html"].startswith("<b>chart</b>")
    assert "application/vnd.plotly.v1+json" in data["text/html"]


def test_images_that_are_not_base64_are_dropped() -> None:
    data, _ = clean_output({"image/png": '"><img src=x onerror=alert(1)>', "text/plain": "p"})
    assert "image/png" not in data and "not base64" in data["text/plain"]


def test_json_stays_json_and_must_be_an_object() -> None:
    assert clean_output({"application/json": {"a": [1, 2]}})[0] == {
        "application/json": {"a": [1, 2]}
    }
    data, _ = clean_output({"application/json": "<b>x</b>"})
    assert "application/json" not in data


def test_metadata_keeps_only_image_sizes() -> None:
    _, metadata = clean_output(
        figure_bundle("png"),
        {"image/png": {"width": 10, "onload": "x"}, "isolated": True, "text/html": {"x": 1}},
    )
    assert metadata == {"image/png": {"width": 10}}


def test_an_oversized_output_becomes_a_note() -> None:
    big = "<p>" + "x" * 3_000_000 + "</p>"
    data, metadata = clean_output({"text/html": big, "text/plain": "head " * 10}, max_bytes=2**20)
    assert list(data) == ["text/plain"] and metadata == {}
    assert data["text/plain"].startswith("head head")
    assert "3.0 MB" in data["text/plain"] and "at most 1 MB" in data["text/plain"]
    # the default cap lets ordinary outputs through
    assert "text/html" in clean_output({"text/html": big})[0]


def test_cleaning_twice_changes_nothing() -> None:
    for data, metadata in [
        bundle(HTML(html_payload("i"))),
        bundle(SVG(svg_payload("i"))),
        bundle(Markdown(markdown_payload("i"))),
        bundle(hostile_frame()),
        ({"application/javascript": "x", "text/plain": "p"}, {}),
    ]:
        once = clean_output(data, metadata)
        assert clean_output(*once) == once


def test_an_output_event_is_cleaned_when_it_is_made() -> None:
    # every front end (cell, widget, side panel, transcript) only ever sees Output events
    event = Output(kind="display", data=bundle(HTML(html_payload("e")))[0], metadata={"x": 1})
    assert problems(event.data["text/html"]) == [] and event.metadata == {}
    stream = Output(kind="stream", data={"text/plain": "<b>printed</b>"}, name="stdout")
    assert stream.data == {"text/plain": "<b>printed</b>"}  # text stays text


# --- Markdown that stays Markdown: exports and history -----------------------------------------


def _raw_html(markdown: str) -> list[str]:
    tokens = MarkdownIt("commonmark", {"html": True}).parse(markdown)
    found = [t.content for t in tokens if t.type == "html_block"]
    for token in tokens:
        found += [c.content for c in token.children or () if c.type == "html_inline"]
    return found


def test_markdown_source_escapes_raw_html_and_keeps_the_rest() -> None:
    text = (
        markdown_payload("x")
        + "\nUse `df[df.a<b]` here.\n\n```python\nif a<b:\n    print('<b>')\n```\n"
        + "[r]: javascript:alert(1)\n"
    )
    assert _raw_html(text)
    safe = markdown_source(text)
    assert _raw_html(safe) == []
    rendered = MarkdownIt("commonmark", {"html": True}).render(safe)
    assert problems(rendered) == []
    assert "`df[df.a<b]`" in safe and "if a<b:\n    print('<b>')" in safe
    assert "[safe link](https://pandas.pydata.org/docs/)" in safe
    plain = "Group by **region**; `a < b`; [docs](https://x.org)\n\n```\n<b>\n```"
    assert markdown_source(plain) == plain


@pytest.mark.parametrize("suffix", [".md", ".ipynb"])
def test_exports_carry_no_raw_html_from_the_model(tmp_path: Path, suffix: str) -> None:
    turn = Turn(
        notebook="a.ipynb",
        conversation="c",
        question="totals?",
        answer=markdown_payload("export"),
        code="result = df.sum()",
        error=cell_payload("err"),
        outcome="failed",
    )
    path = export_conversation([turn], tmp_path / f"out{suffix}")
    text = path.read_text()
    if suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert _raw_html(text) == []
    assert "**Bold** text" in text and "(https://pandas.pydata.org/docs/)" in text


def test_history_markdown_escapes_data() -> None:
    table = HistoryTable([Turn(notebook="a", conversation="c", question=cell_payload("q"))])
    assert _raw_html(table._repr_markdown_()) == []
    assert problems(table._repr_html_()) == []


# --- end to end: %%ask in a real kernel with a real sandbox child -----------------------------


@pytest.fixture(scope="module")
def kernel(server: LLMServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    setup = (
        "%load_ext dataagent\nimport pandas as pd\n"
        f"df = pd.DataFrame({{{cell_payload('col')!r}: [{cell_payload('val')!r}, 'x'], "
        "'n': [1, 2]})"
    )
    with extension_kernel(server, setup, cwd=str(tmp_path_factory.mktemp("notebook"))) as k:
        yield k


HOSTILE_RUN = f"""
from IPython.display import HTML, SVG, Markdown, Javascript, display
import matplotlib.pyplot as plt
display(HTML({html_payload("run-html")!r}))
display(SVG({svg_payload("run-svg")!r}))
display(Markdown({markdown_payload("run-md")!r}))
display(Javascript("window.__dataagent_pwned = 1"))
plt.bar(["a", "b"], df["n"])
plt.show()
result = df
"""


@pytest.mark.kernel
def test_run_mode_shows_child_output_only_cleaned(kernel: Kernel, server: LLMServer) -> None:
    server.script(code_answer(HOSTILE_RUN, markdown_payload("run-explain")))
    ex = kernel.execute("%%ask df --run\nshow me")
    assert ex.ok, ex.error
    assert ex.data("text/markdown") == [] and ex.data("image/svg+xml") == []
    assert ex.data("application/javascript") == []
    pages = ex.data("text/html")
    assert all(problems(p) == [] for p in pages), [problems(p) for p in pages]
    assert any("<table" in p and "&lt;img" in p for p in pages)  # the frame, as a table
    assert len(ex.data("image/png")) == 1  # the chart
    assert any('src="data:image/svg+xml;base64,' in p for p in pages)
    assert "application/javascript" in ex.text  # the note naming the dropped type


@pytest.mark.kernel
def test_insert_mode_shows_the_explanation_cleaned(kernel: Kernel, server: LLMServer) -> None:
    server.script(code_answer("result = df.n.sum()", markdown_payload("insert-explain")))
    ex = kernel.execute("%%ask df\nsum n")
    assert ex.ok, ex.error
    assert ex.data("text/markdown") == []
    pages = ex.data("text/html")
    assert any("<strong>Bold</strong>" in p for p in pages)
    assert all(problems(p) == [] for p in pages), [problems(p) for p in pages]
    assert ex.next_input is not None
