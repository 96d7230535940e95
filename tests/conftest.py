"""Shared fixtures: the scripted LLM server, an isolated data dir, IPython shells.

The LLM server is the only test double; everything else (kernels, files, the openai
client) is real.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from llm_server import LLMServer

# Every test (and every kernel a test starts) writes history/cache under a throwaway
# Jupyter data dir, never the developer's own.
_DATA = tempfile.mkdtemp(prefix="dataagent-test-data-")
os.environ["JUPYTER_DATA_DIR"] = _DATA
os.environ.setdefault("MPLBACKEND", "Agg")
for _var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
    os.environ.pop(_var, None)

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("DATAAGENT_CORPUS", REPO.parent / "shared" / "corpus"))


@pytest.fixture(scope="module")
def server() -> Iterator[LLMServer]:
    """A scripted server for a module's kernel: a kernel keeps the endpoint it started
    with, so the server lives as long as the module (tests script it and read its log)."""
    with LLMServer() as srv:
        yield srv


@pytest.fixture
def llm() -> Iterator[LLMServer]:
    """A scripted OpenAI-compatible server on 127.0.0.1, stopped after the test."""
    with LLMServer() as server:
        yield server


@pytest.fixture
def llm_env(llm: LLMServer, monkeypatch: pytest.MonkeyPatch) -> LLMServer:
    """The server, with the openai SDK's environment pointing at it."""
    monkeypatch.setenv("OPENAI_BASE_URL", llm.url)
    monkeypatch.setenv("OPENAI_API_KEY", llm.api_key or "")
    return llm


@pytest.fixture
def ip(llm_env: LLMServer, tmp_path: Path) -> Iterator:
    """IPython's test shell with the extension loaded, unloaded and cleaned afterwards."""
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()
    before = set(shell.user_ns)
    shell.run_line_magic("load_ext", "dataagent_jupyter")
    ext = shell._dataagent_extension
    ext.config.data_dir = str(tmp_path / "data")
    ext.config.warm_child = False
    yield shell
    shell.run_line_magic("unload_ext", "dataagent_jupyter")
    # the extension manager remembers both module names; forget them for the next test
    for name in ("dataagent_jupyter", "dataagent"):
        shell.extension_manager.loaded.discard(name)
    for name in set(shell.user_ns) - before:
        shell.user_ns.pop(name, None)
    shell.rl_next_input = None
    shell.config.pop("DataAgent", None)  # %config values set by the test


#: markers whose tests must run in CI: a skip there would hide a whole suite
REQUIRED_IN_CI = ("browser", "wheel", "kernel", "engines")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """In CI (DATAAGENT_CI=1) a skipped test of a REQUIRED_IN_CI suite fails, not passes."""
    outcome = yield
    report = outcome.get_result()
    required = [m for m in REQUIRED_IN_CI if item.get_closest_marker(m) is not None]
    if report.skipped and os.environ.get("DATAAGENT_CI") and required:
        report.outcome = "failed"
        report.longrepr = f"{required[0]} test was skipped but CI requires it: {report.longrepr}"


# the engines, for the tests that use them (installed by the engines extra; without it these
# tests skip, and CI fails on a skip)
@pytest.fixture
def pl() -> Any:
    return pytest.importorskip("polars")


@pytest.fixture
def duckdb() -> Any:
    return pytest.importorskip("duckdb")
