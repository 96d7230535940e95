"""Describing frames: awkward shapes and dtypes, budgets, privacy, the pandas corpus."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from conftest import CORPUS

from dataagent_jupyter.errors import FrameError
from dataagent_jupyter.frames import (
    FrameTracker,
    describe,
    describe_many,
    find_frames,
    fingerprint,
)
from dataagent_jupyter.tokens import estimate_tokens


def awkward_frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "region": rng.choice(["North", "South", "East"], n),
            "price": np.where(rng.random(n) < 0.1, np.nan, rng.normal(50, 5, n)),
            "qty": pd.array(
                np.where(rng.random(n) < 0.2, None, rng.integers(0, 9, n)), dtype="Int64"
            ),
            "when": pd.date_range("2024-03-01", periods=n, freq="D", tz="Europe/Paris"),
            "took": pd.to_timedelta(rng.integers(1, 500, n), unit="min"),
            "grade": pd.Categorical(rng.choice(["A", "B", "C"], n), ordered=True),
            "mixed": [1, "two", 3.0, None] * (n // 4),
            "nested": [[1, 2], {"k": "v"}, (3,), "s"] * (n // 4),
            "essay": ["lorem ipsum " * 200] * n,
            42: rng.random(n),
            ("a", "b"): rng.random(n),
            "ok": rng.random(n) > 0.3,
        }
    )


def test_every_column_is_described_with_dtype_and_nulls() -> None:
    df = awkward_frame()
    text = describe("sales", df, budget_tokens=4000).text
    assert "sales (DataFrame, 200 rows × 12 columns)" in text
    for label, dtype in [
        ("region", "str"),
        ("price", "float64"),
        ("qty", "Int64"),
        ("when", "datetime64"),
        ("took", "timedelta64"),
        ("grade", "category"),
        ("mixed", "object"),
        ("nested", "object"),
        ("42", "float64"),
        ("('a', 'b')", "float64"),
        ("ok", "bool"),
    ]:
        line = next(x for x in text.splitlines() if x.startswith(f"- {label}"))
        assert dtype in line, line
        assert "null" in line, line
    price = next(x for x in text.splitlines() if x.startswith("- price"))
    assert f"{int(df['price'].isna().sum())} nulls" in price
    assert "min" in price and "max" in price and "mean" in price
    assert "Europe/Paris" in text
    assert "top 'North'" in text or "top 'South'" in text or "top 'East'" in text
    assert "3 categories" in text
    assert "mixed types" in text
    # long strings are cut, never sent whole
    assert "lorem ipsum " * 10 not in text


def test_multiindex_rows_and_columns_duplicates_and_series() -> None:
    df = awkward_frame().set_index(["region", "grade"])
    df.columns = pd.MultiIndex.from_tuples([(str(c), i % 2) for i, c in enumerate(df.columns)])
    text = describe("mi", df).text
    assert "MultiIndex [region (str), grade (category)]" in text
    assert "columns: MultiIndex with 2 levels" in text
    dup = pd.DataFrame([[1, 2, 3]], columns=["a", "a", "b"])
    assert "duplicate column names: a" in describe("dup", dup).text
    series = describe("s", awkward_frame()["price"]).text
    assert "s (Series, 200 rows)" in series and "series name: price" in series


def test_empty_frames() -> None:
    assert "the frame is empty" in describe("e", pd.DataFrame()).text
    text = describe("e", pd.DataFrame({"a": pd.Series([], dtype="float64")})).text
    assert "- a: float64" in text and "the frame is empty" in text


def test_statistics_are_estimates_for_long_frames_and_exact_for_short() -> None:
    short = describe("s", pd.DataFrame({"x": np.arange(100.0)}), stats_sample=1000).text
    assert "~" not in short and "min 0, max 99" in short
    long = pd.DataFrame({"x": np.arange(200_000.0)})
    text = describe("l", long, stats_sample=1000).text
    assert "estimates (~) from a random sample of" in text
    assert "min ~" in text


def test_description_is_deterministic() -> None:
    df = pd.DataFrame({"x": np.random.default_rng(0).random(50_000)})
    assert describe("d", df, stats_sample=500).text == describe("d", df, stats_sample=500).text


def test_wide_frame_stays_in_budget_and_says_what_it_left_out() -> None:
    wide = pd.DataFrame(
        np.random.default_rng(1).random((100, 2000)), columns=[f"col_{i}" for i in range(2000)]
    )
    desc = describe("wide", wide, budget_tokens=2000)
    assert desc.tokens <= 2000
    assert 0 < desc.columns_shown < 2000
    assert f"{2000 - desc.columns_shown:,} more columns not described" in desc.text
    assert "col_0" in desc.text


def test_several_frames_share_the_budget() -> None:
    frames = {f"f{i}": pd.DataFrame(np.zeros((10, 300))) for i in range(4)}
    descs = describe_many(
        frames, privacy="sample", sample_rows=3, stats_sample=100, budget_tokens=2400
    )
    assert sum(estimate_tokens(d.text) for d in descs) <= 2400 * 1.1
    assert all(d.columns_shown > 0 for d in descs)


def test_schema_privacy_sends_no_cell_values() -> None:
    df = pd.DataFrame(
        {
            "secret_name": ["Zyxwvut Qwertyson", "Plokmijn Uhbygv"],
            "salary": [123456.789, 987654.321],
            "born": pd.to_datetime(["1971-02-03", "1988-09-10"]),
            "team": pd.Categorical(["Hushhush", "Mumsword"]),
        },
        index=pd.Index(["idx-Kappa", "idx-Lambda"], name="emp"),
    )
    text = describe("staff", df, privacy="schema").text
    for value in [
        "Zyxwvut",
        "Plokmijn",
        "123456",
        "987654",
        "1971",
        "1988",
        "Hushhush",
        "Mumsword",
        "idx-Kappa",
        "idx-Lambda",
    ]:
        assert value not in text
    assert "secret_name" in text and "salary: float64" in text
    sample = describe("staff", df, privacy="sample").text
    assert "Zyxwvut" in sample  # the default mode does show sampled values


def test_find_frames_by_name_and_errors() -> None:
    ns = {"sales": pd.DataFrame({"a": [1]}), "n": 3, "s": pd.Series([1]), "_hidden": pd.DataFrame()}
    assert list(find_frames(ns, ["sales", "s"])) == ["sales", "s"]
    with pytest.raises(FrameError, match="no variable named 'nope'") as err:
        find_frames(ns, ["nope"])
    assert "sales" in (err.value.hint or "")
    with pytest.raises(FrameError, match="'n' is a int, not a DataFrame or Series"):
        find_frames(ns, ["n"])
    assert list(find_frames(ns)) == ["sales"]


def test_unnamed_frames_are_most_recent_first_and_bounded() -> None:
    ns: dict[str, object] = {}
    tracker = FrameTracker()
    ns["old"] = pd.DataFrame({"a": [1]})
    tracker.update(ns)
    ns["new"] = pd.DataFrame({"b": [1]})
    tracker.update(ns)
    assert list(find_frames(ns, order=tracker.order)) == ["new", "old"]
    ns["old"] = pd.DataFrame({"a": [2]})  # redefined: now the most recent
    tracker.update(ns)
    assert list(find_frames(ns, order=tracker.order)) == ["old", "new"]
    assert list(find_frames(ns, order=tracker.order, limit=1)) == ["old"]


def test_fingerprint_changes_with_the_data() -> None:
    df = pd.DataFrame({"a": np.arange(10)})
    before = fingerprint(df)
    assert fingerprint(df.copy()) == before
    df.loc[0, "a"] = 99
    assert fingerprint(df) != before
    assert fingerprint(pd.DataFrame({"x": [[1], {"a": 2}]})) != ""


def test_odd_values_do_not_break_a_description() -> None:
    df = pd.DataFrame(
        {
            "big": [2**70, -(2**70)],
            "inf": [np.inf, 1.0],
            "bytes": [b"\x00\xff", b"ok"],
            "dt_obj": [dt.date(2020, 1, 1), dt.date(2021, 1, 1)],
            "period": pd.period_range("2020-01", periods=2, freq="M"),
            "interval": pd.arrays.IntervalArray.from_breaks([0, 1, 2]),
            "\nweird name ": [1, 2],
        }
    )
    text = describe("odd", df).text
    assert "has ±inf" in text
    assert "'\\nweird name '" in text  # odd labels are quoted so the model can use them


CORPUS_FILES = (
    sorted(
        p
        for p in (CORPUS / "pandas-io").rglob("*")
        if p.is_file() and p.suffix in {".csv", ".xlsx", ".xls", ".ods"}
    )
    if (CORPUS / "pandas-io").is_dir()
    else []
)


@pytest.mark.skipif(not CORPUS_FILES, reason=f"corpus not found at {CORPUS}")
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_files_describe(path) -> None:
    from dataagent_jupyter.errors import LoadError
    from dataagent_jupyter.loaders import read_frame

    try:
        frame, _ = read_frame(path)
    except LoadError:  # the loader refuses it with a message (tested in test_loaders)
        return
    desc = describe(path.stem, frame, budget_tokens=1500)
    assert desc.text.startswith(f"### {path.stem} (DataFrame")
    assert desc.tokens <= 1500
    assert desc.columns_shown == frame.shape[1] or "more columns not described" in desc.text
