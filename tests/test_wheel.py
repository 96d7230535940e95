"""The wheel carries the prebuilt labextension: built from a clean copy of this checkout,
installed into a fresh virtualenv with no Node.js on PATH, JupyterLab lists it as OK.

Slow (about a minute: a jlpm install and build, then a pip install), so it has its own
marker; CI runs it with the rest (``pytest``), ``-m "not wheel"`` leaves it out locally.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
EXTENSION = "share/jupyter/labextensions/dataagent-jupyter"


def run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 400,
) -> str:
    done = subprocess.run(
        cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({done.returncode}):\n"
            f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return done.stdout + done.stderr


def clean_copy(dest: Path) -> None:
    """The files a fresh clone would have: tracked and not ignored (no node_modules, no
    built labextension)."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None:
        pytest.skip("building the labextension needs Node.js on PATH")
    src = tmp_path_factory.mktemp("src")
    dist = tmp_path_factory.mktemp("dist")
    clean_copy(src)
    assert not (src / "dataagent_jupyter" / "labextension").exists()
    # build isolation: hatch-jupyter-builder, jupyter-builder (jlpm) come from the registry
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(src)])
    (built,) = dist.glob("dataagent_jupyter-*.whl")
    return built


def test_wheel_holds_the_prebuilt_labextension(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    data = [n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n]
    assert f"{EXTENSION}/package.json" in data
    assert f"{EXTENSION}/install.json" in data
    assert f"{EXTENSION}/static/style.js" in data
    assert any(re.match(rf"{EXTENSION}/static/remoteEntry\.\w+\.js$", n) for n in data)
    assert f"{EXTENSION}/schemas/dataagent-jupyter/panel.json" in data
    # the Python package itself does not carry a second copy, nor any js sources
    assert not any(n.startswith("dataagent_jupyter/labextension/") for n in names)
    assert not any(n.startswith("js/") for n in names)


def test_installs_without_node_and_lab_lists_it_ok(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = str(bin_dir)  # nothing else: no node, no jlpm, no system tools
    env.pop("JUPYTER_PATH", None)
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "jupyter-data")
    assert shutil.which("node", path=env["PATH"]) is None
    python = str(bin_dir / "python")
    run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-q",
            str(wheel),
            "jupyterlab>=4,<5",
        ],
        env=env,
    )
    listing = run([str(bin_dir / "jupyter"), "labextension", "list"], env=env)
    listing = re.sub(r"\x1b\[[0-9;]*m", "", listing)
    line = next((x for x in listing.splitlines() if "dataagent-jupyter" in x), "")
    assert re.search(r"dataagent-jupyter v\S+ enabled\s+OK", line), listing
    assert "(python, dataagent-jupyter)" in line  # installed by pip, uninstalled by pip
    run(
        [python, "-c", "import dataagent_jupyter, dataagent; print(dataagent.__version__)"], env=env
    )
