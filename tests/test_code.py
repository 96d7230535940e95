"""Extracting code from answers and explaining risky code."""

from __future__ import annotations

import pytest

from dataagent_jupyter.code import CodeProblem, extract_code, review_notes


def test_fenced_python_block_and_explanation() -> None:
    got = extract_code(
        "Group by region.\n\n```python\nresult = df.groupby('r').sum()\n```\nThen look at it."
    )
    assert got.code == "result = df.groupby('r').sum()\n"
    assert got.explanation == "Group by region.\n\nThen look at it."


def test_several_blocks_are_joined_in_order_and_output_blocks_skipped() -> None:
    answer = (
        "First:\n```py\nimport pandas as pd\n```\nOutput looks like:\n```\n"
        "   a  b\n0  1  2\n```\nThen:\n~~~python\nresult = 1\n~~~\n"
    )
    got = extract_code(answer)
    assert got.code == "import pandas as pd\n\nresult = 1\n"


def test_bare_code_answer_is_accepted_but_prose_is_not() -> None:
    assert extract_code("result = df['a'].mean()").code.startswith("result =")
    with pytest.raises(CodeProblem, match="no ```python code block"):
        extract_code("I cannot answer that without more data.")
    with pytest.raises(CodeProblem):
        extract_code("Hello")


def test_code_that_does_not_parse() -> None:
    with pytest.raises(CodeProblem, match="does not parse.*line 2"):
        extract_code("```python\nx = 1\ny = (\n```")


def test_unterminated_fence_still_yields_the_code() -> None:
    assert extract_code("Here:\n```python\nresult = 2\n").code == "result = 2\n"


def test_console_prompts_are_stripped() -> None:
    got = extract_code("```python\n>>> x = 1\n>>> result = x + 1\n```")
    assert got.code == "x = 1\nresult = x + 1\n"


def test_review_notes_explain_risky_code() -> None:
    code = (
        "import subprocess, os\nos.system('ls')\nsales.drop(columns=['a'], inplace=True)\n"
        "sales['b'] = 1\nopen('x.txt', 'w').write('hi')\ndf.to_csv('out.csv')\n"
        "del other\n"
    )
    notes = review_notes(code, frames={"sales", "other"})
    assert "imports subprocess, which starts processes" in notes
    assert "calls os.system(), which runs a shell command" in notes
    assert "changes sales in place" in notes
    assert "modifies your variable sales" in notes
    assert "writes a file with open()" in notes
    assert "writes a file (to_csv)" in notes
    assert "deletes your variable other" in notes
    assert review_notes("result = sales.groupby('r').sum()", frames={"sales"}) == ()
