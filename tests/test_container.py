"""The container files, checked without a Docker engine, and the sandbox where a container
takes Landlock and seccomp away.

No Docker runs on these machines: the Dockerfile and docker-compose.yml are read as
files (hadolint lints the Dockerfile in scripts/test.sh) and checked for what a user
relies on: a non-root user, the health check, the port, the volumes. The health-check
script runs against a real Jupyter server. The launcher is run under a seccomp filter
that makes the Landlock and seccomp system calls fail, as a container's profile may.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from browser_helpers import free_port

REPO = Path(__file__).resolve().parents[1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions((REPO / "Dockerfile").read_text())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def values(steps: list[tuple[str, str]], word: str) -> list[str]:
    return [rest for w, rest in steps if w == word]


def test_image_runs_jupyterlab_as_a_plain_user_with_a_token_and_a_health_check() -> None:
    stage = final_stage()
    assert re.fullmatch(r"python:3\.\d+-slim", values(stage, "FROM")[0])
    # the user: created with uid 1000, switched to before the server starts, never root
    (user,) = values(stage, "USER")
    assert user == "1000:1000"
    assert any("useradd" in r and "--uid 1000" in r for r in values(stage, "RUN"))
    assert [w for w, _ in stage].index("USER") < [w for w, _ in stage].index("CMD")
    # the wheel is installed with its labextension, and the build checks Lab sees it
    install = next(r for r in values(stage, "RUN") if "pip install" in r)
    assert "/tmp/dist/*.whl" in install and "dataagent-jupyter.*enabled.*OK" in install
    # JupyterLab on 8888, on all interfaces (a container), token auth left on
    cmd = json.loads(values(stage, "CMD")[0])
    assert cmd[:2] == ["jupyter", "lab"] and "--port=8888" in cmd and "--ip=0.0.0.0" in cmd
    assert not any("token" in arg.lower() or "password" in arg.lower() for arg in cmd)
    assert values(stage, "EXPOSE") == ["8888"]
    # the health check runs the script that asks /api/status
    check = values(stage, "HEALTHCHECK")[0]
    assert "--interval=" in check
    probe = json.loads(check.split("CMD", 1)[1])
    copied = {r.split()[-1]: r.split()[-2] for r in values(stage, "COPY") if "--from" not in r}
    assert probe[0] == "python" and probe[1] in copied
    assert "api/status" in (REPO / copied[probe[1]]).read_text()
    # volumes: the notebooks (the server's root) and the data dir (history, cache)
    volumes = json.loads(values(stage, "VOLUME")[0])
    env = dict(
        pair.split("=", 1)
        for pair in shlex.split(" ".join(values(stage, "ENV")))
        if "=" in pair  # ENV A=1 B=2 form
    )
    assert volumes == ["/home/jovyan/work", "/home/jovyan/data"]
    assert env["JUPYTER_DATA_DIR"] == "/home/jovyan/data"  # DataAgent.data_dir under it
    assert values(stage, "WORKDIR") == ["/home/jovyan/work"]
    assert "--ServerApp.root_dir=/home/jovyan/work" in cmd


def test_build_context_holds_what_the_wheel_needs() -> None:
    steps = instructions((REPO / "Dockerfile").read_text())
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        src
        for w, rest in steps
        if w == "COPY" and "--from" not in rest
        for src in rest.split()[:-1]
    ]
    for src in sources:
        assert (REPO / src).exists(), src
        assert src not in ignored, src
    for needed in (
        "pyproject.toml",
        "README.md",
        "install.json",
        "dataagent",
        "dataagent_jupyter",
        "js",
    ):
        assert needed in sources, needed
    # a local build of the labextension or a venv never leaks into the image
    assert {"dataagent_jupyter/labextension", ".venv", "**/node_modules"} <= set(ignored)


def test_compose_runs_the_image_and_offers_ollama_as_a_profile() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    lab = compose["services"]["jupyterlab"]
    assert lab["build"] == "." and lab["ports"] == ["8888:8888"]
    assert "profiles" not in lab  # started by a plain `docker compose up`
    env = lab["environment"]
    assert any(e.startswith("JUPYTER_TOKEN=${JUPYTER_TOKEN:?") for e in env)  # no token, no start
    # passed through from the shell, unset when the shell has none
    assert {"OPENAI_API_KEY", "OPENAI_BASE_URL", "DATAAGENT_MODEL"} <= set(env)
    stage = final_stage()
    image_volumes = json.loads(values(stage, "VOLUME")[0])
    assert [v.split(":")[1] for v in lab["volumes"]] == image_volumes
    assert lab["depends_on"]["ollama"]["required"] is False
    ollama = compose["services"]["ollama"]
    assert ollama["profiles"] == ["ollama"] and "11434" in ollama["expose"]
    # the documented wiring names the service and its port
    assert "OPENAI_BASE_URL=http://ollama:11434/v1" in (REPO / "docker-compose.yml").read_text()
    assert set(compose["volumes"]) == {
        v.split(":")[0] for s in compose["services"].values() for v in s["volumes"] if ":" in v
    } - {"./notebooks"}


def test_image_ipython_config_sets_the_model_from_the_environment(tmp_path: Path) -> None:
    code = "print(get_ipython().config.DataAgent.model)"
    env = {**os.environ, "DATAAGENT_MODEL": "llama3.1", "IPYTHONDIR": str(tmp_path)}
    config = f"--config={REPO / 'docker' / 'ipython_config.py'}"
    out = subprocess.run(
        [sys.executable, "-m", "IPython", config, "-c", code],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "llama3.1", out.stderr


def test_health_check_asks_the_server_with_its_own_token(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_TOKEN": "s3cret-t0ken"}
    check = [sys.executable, str(REPO / "docker" / "healthcheck.py")]
    before = subprocess.run(check, capture_output=True, text=True, env=env, timeout=30)
    assert before.returncode == 1 and "unhealthy: no Jupyter server" in before.stdout
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
         f"--port={port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.root_dir={tmp_path}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            ok = subprocess.run(check, capture_output=True, text=True, env=env, timeout=30)
            if ok.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert ok.returncode == 0 and ok.stdout.startswith("ok: started"), ok.stdout
        assert "s3cret" not in ok.stdout  # the token is used, never printed
    finally:
        server.send_signal(signal.SIGKILL)  # a crash: the runtime file stays behind
        server.wait(timeout=30)
    after = subprocess.run(check, capture_output=True, text=True, env=env, timeout=30)
    assert after.returncode == 1 and after.stdout.startswith("unhealthy:")


# --- the sandbox where a container's seccomp profile refuses Landlock and seccomp --------

#: (audit arch, seccomp syscall number) per machine; Landlock is 444-446 everywhere
ARCHES = {"x86_64": (0xC000003E, 317), "aarch64": (0xC00000B7, 277)}

# Runs in a fresh interpreter: installs a filter under which the Landlock syscalls fail
# with ENOSYS and seccomp() with EPERM (as under a profile that does not list them), then
# starts a real sandbox child (which inherits the filter) and reports what it has.
RESTRICTED = """
import ctypes, json, sys
arch, nr_seccomp = {arch}, {nr_seccomp}
ENOSYS, EPERM = 0x00050000 | 38, 0x00050000 | 1
prog = [
    (0x20, 0, 0, 4), (0x15, 0, 5, arch), (0x20, 0, 0, 0),
    (0x15, 4, 0, 444), (0x15, 3, 0, 445), (0x15, 2, 0, 446), (0x15, 2, 0, nr_seccomp),
    (0x06, 0, 0, 0x7FFF0000), (0x06, 0, 0, ENOSYS), (0x06, 0, 0, EPERM),
]
class Ins(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Ins))]
libc = ctypes.CDLL(None, use_errno=True)
filt = (Ins * len(prog))(*(Ins(*i) for i in prog))
assert libc.prctl(38, 1, 0, 0, 0) == 0  # no_new_privs, so anyone may install a filter
assert libc.syscall(nr_seccomp, 1, 0, ctypes.byref(Prog(len(prog), filt))) == 0
assert libc.syscall(444, None, 0, 1) == -1 and ctypes.get_errno() == 38

from dataagent_jupyter.config import DataAgent
from dataagent_jupyter.sandbox import Sandbox
box = Sandbox(DataAgent(warm_child=False))
try:
    with box.question() as lease:
        outputs = list(lease.run("print(6 * 7)", {{}}))
        st = box.status()
    out = [o.data.get("text/plain") for o in outputs if o.name != "stderr"]
    notice = [o.data.get("text/plain") for o in outputs if o.name == "stderr"]
    print(json.dumps({{"out": out, "notice": notice, "protections": list(st.protections),
                      "problems": list(st.problems), "status": st._repr_markdown_()}}))
finally:
    box.shutdown()
"""


@pytest.mark.kernel
def test_sandbox_runs_and_says_what_is_missing_without_landlock_and_seccomp() -> None:
    machine = platform.machine()
    if machine not in ARCHES:
        pytest.fail(f"no seccomp test filter for {machine}: add its numbers to ARCHES")
    arch, nr_seccomp = ARCHES[machine]
    script = RESTRICTED.format(arch=arch, nr_seccomp=nr_seccomp)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
        cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # the code still runs, in a child that has the protections this system allows
    assert "".join(report["out"]).strip() == "42"
    protections = " ".join(report["protections"])
    assert "resource limits" in protections and "no_new_privs" in protections
    assert "env scrubbed" in protections
    # and none that it could not apply is claimed
    assert "landlock" not in protections and "seccomp" not in protections
    problems = " ".join(report["problems"])
    assert "landlock: not offered by this kernel" in problems
    assert "seccomp: Operation not permitted" in problems
    # the first run says so in one line, with what it means
    assert len(report["notice"]) == 1 and report["notice"][0].count("\n") == 1
    assert "landlock-fs" in report["notice"][0] and "seccomp" in report["notice"][0]
    assert "can read your home folder" in report["notice"][0]
    # %dataagent status shows both lists
    assert "**Not available:**" in report["status"] and "landlock" in report["status"]


def test_seccomp_numbers_of_this_machine_are_the_launchers() -> None:
    # The test filter must target the syscalls the launcher really calls.
    from dataagent_jupyter.sandbox import launcher

    machine = platform.machine()
    assert launcher._SYS_SECCOMP[machine] == ARCHES[machine][1]
    assert launcher._SECCOMP_ARCHES[machine][0] == ARCHES[machine][0]
    assert (launcher._SYS_CREATE_RULESET, launcher._SYS_ADD_RULE, launcher._SYS_RESTRICT_SELF) == (
        444,
        445,
        446,
    )
    assert ctypes.sizeof(ctypes.c_uint32) == 4
