"""A real JupyterLab server and headless Chromium for the side-panel tests.

JupyterLab runs as its own ``jupyter-lab`` process on a free 127.0.0.1 port, with
throwaway root, settings and workspace folders, and the labextension built from this
checkout (``dataagent_jupyter/labextension``, put first on the labextensions path).
Chromium is Debian's ``/usr/bin/chromium`` driven by Python playwright; no browser is
downloaded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat

REPO = Path(__file__).resolve().parents[1]
LABEXTENSION = REPO / "dataagent_jupyter" / "labextension"
ARTIFACTS = REPO / "test-artifacts"
#: where the docs take their screenshots from (committed; see docs_screenshot)
DOCS_SCREENSHOTS = REPO / "docs" / "_static" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter-lab`` in a subprocess; ``stop()`` ends it by its PID."""

    def __init__(
        self,
        base: Path,
        env: dict[str, str],
        *,
        kernel_config: str = "",
        disabled_labextensions: tuple[str, ...] = (),
        app: str = "lab",
    ) -> None:
        """Start it; ``kernel_config`` goes to this server's kernels only (a private
        IPython profile), ``disabled_labextensions`` are off for this server only (a front
        end without them, as VS Code is without ours); ``app="notebook"`` serves
        Notebook 7 instead of JupyterLab, with the same extensions."""
        self.base = base
        self.root = base / "notebooks"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "jupyter-lab.log"
        for sub in ("notebooks", "workspaces", "settings", "user-settings", "labext", "ipython"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        # no "Jupyter news" toast over the panel
        (base / "settings" / "overrides.json").write_text(
            json.dumps(
                {
                    "@jupyterlab/apputils-extension:notification": {
                        "fetchNews": "false",
                        "checkForUpdates": False,
                    }
                }
            )
        )
        profile = base / "ipython" / "profile_default"
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "ipython_kernel_config.py").write_text(kernel_config)
        labconfig = base / "config" / "labconfig"
        labconfig.mkdir(parents=True, exist_ok=True)
        (labconfig / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {name: True for name in disabled_labextensions}})
        )
        # this checkout's build, ahead of any installed copy
        link = base / "labext" / "dataagent-jupyter"
        if not link.exists():
            link.symlink_to(LABEXTENSION, target_is_directory=True)
        self.app = app
        lab = Path(sys.executable).with_name("jupyter-lab" if app == "lab" else "jupyter-notebook")
        cls = "LabApp" if app == "lab" else "JupyterNotebookApp"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                str(lab),
                "--no-browser",
                "--allow-root",
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                "--ServerApp.disable_check_xsrf=True",
                "--ServerApp.ip=127.0.0.1",
                f"--port={self.port}",
                "--ServerApp.port_retries=0",
                f"--ServerApp.root_dir={self.root}",
                f"--{cls}.expose_app_in_browser=True",
                f"--{cls}.workspaces_dir={base / 'workspaces'}",
                f"--{cls}.app_settings_dir={base / 'settings'}",
                f"--{cls}.user_settings_dir={base / 'user-settings'}",
                # for both apps: Notebook 7's page names this build's files, but
                # /lab/extensions/ is served by JupyterLab's handler, registered first
                f"--LabApp.extra_labextensions_path={base / 'labext'}",
                f"--JupyterNotebookApp.extra_labextensions_path={base / 'labext'}",
            ],
            env={
                **os.environ,
                **env,
                "IPYTHONDIR": str(base / "ipython"),
                "JUPYTER_CONFIG_DIR": str(base / "config"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter-lab exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"jupyter-lab did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-20000:]

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def delete_sessions(self) -> None:
        """Shut down every kernel (sessions outlive the page that opened them)."""
        for session in self.api("GET", "/api/sessions") or []:
            try:
                self.api("DELETE", f"/api/sessions/{session['id']}")
            except urllib.error.URLError:
                pass

    def new_notebook(self, name: str, cells: list[str] | None = None) -> str:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3 (ipykernel)",
            "language": "python",
        }
        nb.cells = [nbformat.v4.new_code_cell(src) for src in (cells or [""])]
        nbformat.write(nb, self.root / name)
        return name

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


# --- page helpers (JupyterLab is exposed as window.jupyterapp) --------------------------

NOTEBOOK = "jupyterapp.shell.currentWidget"
#: the cells of the notebook on show (other notebooks' panels are hidden tabs)
CELLS = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell"


#: the notebook's kernel has nothing to run. Not ``kernel.status`` alone: with subshells
#: (ipykernel 7) a comm or control request reports "idle" while a cell still runs, so no
#: code cell may be in its "running" state either.
KERNEL_QUIET_JS = """() => {
  const nb = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = nb && nb.sessionContext && nb.sessionContext.session
    && nb.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle'
    && !nb.content.widgets.some(c => c.model.type === 'code'
                                     && c.model.executionState === 'running');
}"""


@contextmanager
def lab_for(
    base: Path,
    llm: Any,
    notebook: str,
    cells: list[str],
    *,
    env: dict[str, str] | None = None,
    **options: Any,
) -> Iterator[LabServer]:
    """JupyterLab whose kernels talk to ``llm``, with ``notebook`` holding ``cells``.

    History and the response cache live under ``base`` (no answer cached by another
    test), the child kernel starts cold (``warm_child = False``), and every kernel is shut
    down and the server stopped afterwards. ``options`` go to :class:`LabServer`.
    """
    server = LabServer(
        base / "lab",
        {
            "OPENAI_BASE_URL": llm.url,
            "OPENAI_API_KEY": llm.api_key or "",
            "MPLBACKEND": "Agg",
            "JUPYTER_DATA_DIR": str(base / "data"),
            **(env or {}),
        },
        **{"kernel_config": "c.DataAgent.warm_child = False\n", **options},
    )
    try:
        server.new_notebook(notebook, cells=cells)
        yield server
    finally:
        server.delete_sessions()
        server.stop()


@contextmanager
def chromium_page(request: Any, timeout_ms: float = 60_000) -> Iterator[Any]:
    """A page in a fresh headless Chromium; its screenshot lands in test-artifacts/ when
    the test (``request``'s node) failed, to see what the user would have seen."""
    from playwright.sync_api import sync_playwright

    failed_before = request.session.testsfailed
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(timeout_ms)
            yield page
            # the call phase has been reported by now: a failure shows in the counter
            if request.session.testsfailed > failed_before:
                ARTIFACTS.mkdir(exist_ok=True)
                shot = ARTIFACTS / f"{request.node.name}.png"
                page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()


def open_notebook(page: Any, lab: LabServer, name: str) -> None:
    """Open ``name`` in a workspace of its own (no tabs restored from other tests)."""
    workspace = Path(name).stem
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{name}")
    page.locator(CELLS).first.wait_for(state="visible", timeout=60000)
    wait_kernel_idle(page)


def wait_kernel_idle(page: Any, timeout: float = 60000) -> None:
    """Wait until the notebook's kernel has nothing left to run."""
    page.wait_for_function(KERNEL_QUIET_JS, timeout=timeout)


def cell_sources(page: Any) -> list[str]:
    return page.evaluate(
        f"() => {NOTEBOOK}.content.model.sharedModel.cells.map(c => c.getSource())"
    )


def run_in_last_cell(page: Any, code: str) -> None:
    """Type ``code`` into the last cell and run it with Shift+Enter, like a user."""
    page.locator(CELLS).last.locator(".cm-content").click()
    page.keyboard.insert_text(code)
    before = page.evaluate(
        f"() => {NOTEBOOK}.content.model.sharedModel.cells"
        ".filter(c => c.cell_type === 'code' && c.execution_count).length"
    )
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        f"""() => {NOTEBOOK}.content.model.sharedModel.cells
            .filter(c => c.cell_type === 'code' && c.execution_count).length > {before}""",
        timeout=60000,
    )
    wait_kernel_idle(page)


def docs_screenshot(page: Any, name: str) -> Path:
    """Save what the user sees now as ``NAME.png``, the picture the docs show of it.

    With ``DATAAGENT_DOCS_SCREENSHOTS=1`` it goes to ``docs/_static/screenshots`` (commit
    it); otherwise to ``test-artifacts/screenshots``, so an ordinary test run leaves the
    checkout clean while still taking the picture the same way.
    """
    folder = DOCS_SCREENSHOTS if os.environ.get("DATAAGENT_DOCS_SCREENSHOTS") else ARTIFACTS
    path = (folder if folder == DOCS_SCREENSHOTS else folder / "screenshots") / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, 0)  # no hover highlight in the picture
    page.screenshot(path=str(path))
    return path


def open_panel(page: Any) -> Any:
    """Open the Data Agent panel with its keyboard shortcut; the panel locator."""
    page.keyboard.press("Escape")
    page.keyboard.press("Alt+Shift+A")
    panel = page.locator("#dataagent-panel")
    panel.wait_for(state="visible", timeout=15000)
    return panel


def ask(panel: Any, question: str, mode: str = "insert") -> None:
    panel.locator(".jp-DataAgent-mode").select_option(mode)
    box = panel.locator(".jp-DataAgent-input")
    box.fill(question)
    box.press("Enter")
