"""The child-kernel sandbox, tested against real child kernels (nothing mocked).

One sandbox is shared by the module (a kernel start costs about a second); tests that
kill or restart its child check that a fresh one takes over. Pure pieces (secret
scrubbing, traceback trimming, the result codec, fingerprints) are tested without kernels.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from kernel_helpers import hold_threads
from traitlets import TraitError

from dataagent_jupyter.config import PROTECTION_NAMES, DataAgent
from dataagent_jupyter.errors import (
    Cancelled,
    ChildDied,
    ExecutionFailed,
    ExecutionTimeout,
    FrameError,
    SandboxError,
)
from dataagent_jupyter.sandbox import Sandbox
from dataagent_jupyter.sandbox.executor import trim_traceback
from dataagent_jupyter.sandbox.limits import (
    death_message,
    is_secret_name,
    limits_from_config,
    rlimits,
    scrub_env,
)
from dataagent_jupyter.sandbox.pool import sweep_stale, user_parent
from dataagent_jupyter.sandbox.protections import MEANING, check_required, missing, notice
from dataagent_jupyter.sandbox.sent_frames import SentFrames
from dataagent_jupyter.sandbox.transfer import (
    TransferError,
    export_value,
    read_pickled,
    write_pickled,
)
from dataagent_jupyter.sandbox.untrusted import import_value

LLM_KEY = "sk-test-0123456789abcdefLLMKEY"
CONFIG_KEY = "sk-config-9876543210CONFIGKEY"
AWS_SECRET = "aws-fake-secret-0000111122223333"


def text_of(outputs) -> str:
    """What the child printed to stdout (warnings on stderr are not part of the answer)."""
    return "".join(
        o.data["text/plain"] for o in outputs if o.kind == "stream" and o.name == "stdout"
    )


def mixed_frame() -> pd.DataFrame:
    """A frame with every dtype the issue names, on a MultiIndex."""
    frame = pd.DataFrame(
        {
            "city": pd.Categorical(["Oslo", "Lima", "Oslo", "Pune"]),
            "when": pd.date_range("2024-03-30", periods=4, freq="D", tz="Europe/Oslo"),
            "count": pd.array([1, None, 3, 4], dtype="Int64"),
            "mixed": [1, "two", [3, {"four": 4}], None],
            "price": [1.5, np.nan, 3.25, 4.0],
            "label": ["a", "b", None, "d"],
        },
        index=pd.MultiIndex.from_tuples(
            [("n", 1), ("n", 2), ("s", 1), ("s", 2)], names=["half", "row"]
        ),
    )
    return frame


@pytest.fixture(scope="module")
def env_secrets():
    """Secrets in the user's environment before the child starts (restored afterwards)."""
    saved = dict(os.environ)
    os.environ.update(
        OPENAI_API_KEY=LLM_KEY,
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        INNOCENT_LOOKING=f"prefix-{LLM_KEY}",  # the key copied under a harmless name
        ALSO_INNOCENT=CONFIG_KEY,
        DATAAGENT_TEST_MARKER="visible",
    )
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def outdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("charts")


@pytest.fixture(scope="module")
def sandbox(env_secrets, outdir):
    config = DataAgent(
        memory_limit="2G", exec_timeout=20.0, output_dir=str(outdir), api_key=CONFIG_KEY
    )
    box = Sandbox(config, session_id="test-session")
    box.start_warm()
    # The first run of a session may say which protections this machine lacks (tested on
    # its own below); the tests here look at what the code shows.
    ask(box, "pass")
    yield box
    box.shutdown()


@pytest.fixture
def short_timeout(sandbox):
    sandbox.config.exec_timeout = 1.5
    yield
    sandbox.config.exec_timeout = 20.0


def ask(box: Sandbox, code: str, frames=None, **options) -> list:
    """One question: a fresh child runs ``code`` once and is thrown away."""
    with box.question() as lease:
        return list(lease.run(code, frames or {}, **options))


def gone(pid: int, within: float = 3.0) -> bool:
    """Has the process ended (exited, or dead and not yet reaped) within ``within`` s?"""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def run_text(box: Sandbox, code: str, frames=None) -> str:
    return text_of(ask(box, code, frames))


# --- outputs ---------------------------------------------------------------------------


@pytest.mark.kernel
def test_outputs_relayed_in_order(sandbox, outdir):
    df = pd.DataFrame({"region": ["N", "S", "N"], "revenue": [10, 20, 30]})
    code = (
        "print('hello from the child')\n"
        "display(df.groupby('region').revenue.sum().to_frame())\n"
        "import matplotlib.pyplot as plt\n"
        "df.groupby('region').revenue.sum().plot.bar()\n"
        "plt.show()\n"
        "result = df.groupby('region', as_index=False).revenue.sum()\n"
    )
    outputs = ask(sandbox, code, {"df": df}, attempt=2)
    kinds = [o.kind for o in outputs]
    assert kinds == ["stream", "display", "display", "result"]
    stream, table, chart, result = outputs
    assert stream.name == "stdout" and stream.data == {"text/plain": "hello from the child\n"}
    assert "<table" in table.data["text/html"]
    assert "image/png" in chart.data
    assert chart.saved and Path(chart.saved).read_bytes().startswith(b"\x89PNG")
    assert Path(chart.saved).parent == outdir / "test-session"
    assert "<table" in result.data["text/html"] and "40" in result.data["text/plain"]
    assert all(o.attempt == 2 for o in outputs)


@pytest.mark.kernel
def test_stale_result_is_never_shown(sandbox):
    with sandbox.question() as lease:  # even between attempts in the same child
        list(lease.run("result = 'old answer'", {}))
        outputs = list(lease.run("print('no result this time')", {}, attempt=2))
        assert [o.kind for o in outputs] == ["stream"]
        with pytest.raises(SandboxError, match="no variable named 'result'"):
            lease.fetch()


@pytest.mark.kernel
def test_attempts_share_a_child_and_questions_do_not(sandbox):
    with sandbox.question() as lease:
        list(lease.run("kept_value = 41", {}))
        first = lease.wait().pid
        assert text_of(list(lease.run("print(kept_value + 1)", {}, attempt=2))) == "42\n"
        assert lease.wait().pid == first
    assert gone(first)
    with sandbox.question() as lease:
        assert text_of(list(lease.run("print('kept_value' in globals())", {}))) == "False\n"
        assert lease.wait().pid != first


@pytest.mark.kernel
def test_error_gives_trimmed_traceback(sandbox):
    with pytest.raises(ExecutionFailed) as info:
        ask(sandbox, "def f(frame):\n    return frame['missing']\nf(df)", {"df": mixed_frame()})
    error = info.value
    assert error.ename == "KeyError" and "missing" in error.evalue
    assert "\x1b[" not in error.traceback
    assert "ipykernel" not in error.traceback and "IPython" not in error.traceback
    assert "return frame['missing']" in error.traceback
    assert error.traceback.rstrip().endswith("KeyError: 'missing'")
    assert len(error.traceback) <= 3000


# --- frames and results ----------------------------------------------------------------


@pytest.mark.kernel
def test_fetch_round_trip_keeps_dtypes(sandbox):
    frame = mixed_frame()
    frame.columns = pd.MultiIndex.from_tuples([("k", c) for c in frame.columns])
    with sandbox.question() as lease:
        list(lease.run("result = df", {"df": frame}))
        back = lease.fetch()
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert isinstance(back.iloc[2, 3], list)

    series = mixed_frame()["when"]
    with sandbox.question() as lease:
        list(lease.run("result = s", {"s": series}))
        pd.testing.assert_series_equal(lease.fetch(), series)


@pytest.mark.kernel
def test_fetch_other_values_and_refusals(sandbox):
    with sandbox.question() as lease:
        list(lease.run("answer = {'total': 3.5, 'ids': (1, 2)}\nfig = __import__('threading')", {}))
        assert lease.fetch("answer") == {"total": 3.5, "ids": (1, 2)}
        with pytest.raises(SandboxError, match="cannot be brought back"):
            lease.fetch("fig")
        with pytest.raises(SandboxError, match="no variable named 'nothing_here'"):
            lease.fetch("nothing_here")


@pytest.mark.kernel
def test_parent_frames_are_never_mutated(sandbox):
    df = mixed_frame()
    before = df.copy(deep=True)
    code = "df.drop(columns=['price'], inplace=True)\ndf.iloc[0, 0] = 'Lima'\nprint(df.shape)"
    assert run_text(sandbox, code, {"df": df}) == "(4, 5)\n"
    pd.testing.assert_frame_equal(df, before)
    # The next question starts from the user's frame again, not the child's edited copy.
    assert run_text(sandbox, "print(df.shape, df.iloc[0, 0])", {"df": df}) == "(4, 6) Oslo\n"


@pytest.mark.kernel
def test_unchanged_frame_is_not_resent(sandbox):
    df = pd.DataFrame({"a": np.arange(100_000), "b": np.random.default_rng(0).random(100_000)})
    start = sandbox.bytes_sent()
    run_text(sandbox, "print(len(df))", {"df": df})
    first = sandbox.bytes_sent() - start
    assert first >= df.memory_usage().sum()
    run_text(sandbox, "print(len(df))", {"df": df})
    assert sandbox.bytes_sent() - start == first  # same version: nothing travels
    df.loc[5, "a"] = -1  # an in-place edit of the user's frame
    assert run_text(sandbox, "print(df.loc[5, 'a'])", {"df": df}) == "-1\n"
    assert sandbox.bytes_sent() - start > first
    assert "df" in sandbox.status().frames


@pytest.mark.kernel
def test_non_frames_are_refused(sandbox):
    with pytest.raises(FrameError):
        ask(sandbox, "pass", {"x": [1, 2, 3]})
    with pytest.raises(FrameError):
        ask(sandbox, "pass", {"not a name": pd.DataFrame()})


# --- isolation ---------------------------------------------------------------------------


@pytest.mark.kernel
def test_secrets_are_not_in_the_child(sandbox):
    code = "import os, json\nprint(json.dumps(dict(os.environ)))\n"
    env = json.loads(run_text(sandbox, code))
    assert "OPENAI_API_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "INNOCENT_LOOKING" not in env and "ALSO_INNOCENT" not in env
    assert env.get("DATAAGENT_TEST_MARKER") == "visible"  # ordinary variables pass
    blob = json.dumps(env)
    for secret in (LLM_KEY, CONFIG_KEY, AWS_SECRET):
        assert secret not in blob
    probe = (
        "import os\n"
        "try:\n"
        "    data = open(f'/proc/{os.getppid()}/environ', 'rb').read()\n"
        "    print('READ', len(data))\n"
        "except OSError as exc:\n"
        "    print('DENIED', type(exc).__name__)\n"
    )
    assert run_text(sandbox, probe).startswith("DENIED")


@pytest.mark.kernel
def test_child_cannot_read_home_or_connection_files(sandbox, tmp_path):
    from jupyter_client.connect import write_connection_file

    home = tmp_path / "home"
    home.mkdir()
    (home / ".secrets").write_text("password=hunter2")
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    connection_file, _ = write_connection_file(str(runtime / "kernel-parent.json"))
    probe = (
        "import os\n"
        "for path in paths:\n"
        "    try:\n"
        "        open(path).read()\n"
        "        print('READ', path)\n"
        "    except OSError as exc:\n"
        "        print('DENIED', type(exc).__name__)\n"
        "try:\n"
        f"    open({str(tmp_path / 'planted.txt')!r}, 'w').write('x')\n"
        "    print('WROTE')\n"
        "except OSError:\n"
        "    print('DENIED write')\n"
        "open('inside-work-folder.txt', 'w').write('fine')\n"
    )
    paths = [
        str(home / ".secrets"),
        connection_file,
        os.path.expanduser("~/.bashrc"),
        str(Path(__file__)),
    ]
    out = run_text(sandbox, f"paths = {paths!r}\n" + probe)
    assert "READ" not in out and "WROTE" not in out
    assert out.count("DENIED") == len(paths) + 1
    assert not (tmp_path / "planted.txt").exists()
    assert "landlock filesystem" in sandbox.status().protections


@pytest.mark.kernel
def test_child_cannot_reach_a_local_tcp_server(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        probe = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('CONNECTED')\n"
            "except OSError as exc:\n"
            "    print('BLOCKED', type(exc).__name__)\n"
        )
        assert run_text(sandbox, probe).startswith("BLOCKED")
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    assert "network blocked (landlock tcp)" in sandbox.status().protections


@pytest.mark.kernel
def test_child_cannot_reach_a_unix_socket(sandbox, tmp_path):
    # Landlock does not cover connect() on path-named sockets (think docker.sock).
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "service.sock"))
    server.listen(1)
    server.settimeout(0.5)
    try:
        probe = (
            "import socket\n"
            "try:\n"
            "    s = socket.socket(socket.AF_UNIX)\n"
            f"    s.connect({str(tmp_path / 'service.sock')!r})\n"
            "    print('CONNECTED')\n"
            "except OSError as exc:\n"
            "    print('BLOCKED', type(exc).__name__)\n"
        )
        assert run_text(sandbox, probe).startswith("BLOCKED")
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
    if sandbox.status().protections and os.uname().machine in ("x86_64", "aarch64"):
        assert "no new sockets (seccomp)" in sandbox.status().protections


@pytest.mark.kernel
def test_setns_into_parent_network_namespace_fails(sandbox):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare  # noqa: B018 - the platform supports namespaces at all
    probe = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "try:\n"
        "    fd = os.open(f'/proc/{os.getppid()}/ns/net', os.O_RDONLY)\n"
        "except OSError as exc:\n"
        "    print('OPEN DENIED', type(exc).__name__)\n"
        "else:\n"
        "    rc = libc.setns(fd, 0x40000000)\n"
        "    print('SETNS', rc, ctypes.get_errno())\n"
    )
    out = run_text(sandbox, probe)
    assert out.startswith("OPEN DENIED") or out.startswith("SETNS -1")
    protections = sandbox.status().protections
    if os.geteuid() == 0:
        assert "capabilities dropped" in protections
        assert "network namespace (no interfaces)" in protections
    assert "no_new_privs" in protections and "env scrubbed" in protections


# --- stopping runaway code -------------------------------------------------------------------


@pytest.mark.kernel
def test_infinite_loop_is_stopped_by_the_time_limit(sandbox, short_timeout):
    with sandbox.question() as lease:
        list(lease.run("survivor = 'still here'", {}))
        pid = lease.wait().pid
        started = time.monotonic()
        with pytest.raises(ExecutionTimeout, match="1.5 s limit"):
            list(lease.run("while True:\n    pass", {}, attempt=2))
        assert time.monotonic() - started < 6
        # An interruptible loop keeps the child and its state for the next attempt.
        assert lease.wait().pid == pid
        assert text_of(list(lease.run("print(survivor)", {}, attempt=3))) == "still here\n"


@pytest.mark.kernel
def test_ignored_interrupt_restarts_the_child(sandbox, short_timeout):
    stubborn = (
        "import time\n"
        "while True:\n"
        "    try:\n"
        "        time.sleep(10)\n"
        "    except KeyboardInterrupt:\n"
        "        pass\n"
    )
    with sandbox.question() as lease:
        pid = lease.wait().pid
        with pytest.raises(ExecutionTimeout, match="restarted"):
            list(lease.run(stubborn, {}))
        assert text_of(list(lease.run("print('fresh')", {}, attempt=2))) == "fresh\n"
        assert lease.wait().pid != pid


@pytest.mark.kernel
def test_memory_bomb_is_stopped_by_the_memory_limit(sandbox):
    bomb = "hog = []\nwhile True:\n    hog.append(bytearray(128 * 2**20))\n"
    with sandbox.question() as lease:
        list(lease.run("before_the_bomb = 1", {}))
        pid = lease.wait().pid
        with pytest.raises(ChildDied) as info:
            list(lease.run(bomb, {}, attempt=2))
        assert "ran out of memory" in info.value.message and "2.0 GiB" in info.value.message
        # the parent is fine, and the next attempt runs on a fresh child
        again = list(lease.run("print('before_the_bomb' in globals())", {}, attempt=3))
        assert text_of(again) == "False\n"
        assert lease.wait().pid != pid


@pytest.mark.kernel
def test_killed_child_is_reported_and_replaced(sandbox):
    with sandbox.question() as lease:
        pid = lease.wait().pid
        killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
        killer.start()
        started = time.monotonic()
        with pytest.raises(ChildDied, match="killed"):
            list(lease.run("import time\ntime.sleep(30)", {}))
        assert time.monotonic() - started < 5
        assert text_of(list(lease.run("print('replaced')", {}, attempt=2))) == "replaced\n"
        assert lease.wait().pid != pid


@pytest.mark.kernel
def test_cancel_stops_the_run_and_keeps_the_child(sandbox):
    with sandbox.question() as lease:
        list(lease.run("kept = 'yes'", {}))
        pid = lease.wait().pid
        cancel = threading.Event()
        threading.Timer(0.5, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(Cancelled):
            list(lease.run("import time\ntime.sleep(30)\nprint('too late')", {}, cancel=cancel))
        assert time.monotonic() - started < 5
        assert lease.wait().pid == pid
        assert text_of(list(lease.run("print(kept)", {}, attempt=2))) == "yes\n"


@pytest.mark.kernel
def test_status_and_restart(sandbox):
    deadline = time.monotonic() + 30
    while not sandbox.ready() and time.monotonic() < deadline:  # the next child is starting
        time.sleep(0.05)
    status = sandbox.status()
    assert status.state == "idle" and status.pid and status.memory
    assert status.limits["memory"] == "2.0 GiB"
    assert "**Analysis kernel:** idle" in status._repr_markdown_()
    ask(sandbox, "lost_on_restart = 1")
    sandbox.restart()
    assert sandbox.status().state in ("starting", "idle")
    assert run_text(sandbox, "print('lost_on_restart' in globals())") == "False\n"


@pytest.mark.kernel
def test_fresh_sandbox_without_warm_child_starts_on_demand(outdir):
    box = Sandbox(DataAgent(warm_child=False, output_dir=str(outdir)))
    try:
        box.start_warm()  # a no-op when warm_child is False
        assert box.status().state == "not started"
        assert run_text(box, "print(pd.__name__, np.__name__)") == "pandas numpy\n"
    finally:
        box.shutdown()
        box.shutdown()  # idempotent
    assert box.status().state == "not started"


@pytest.mark.kernel
def test_killed_parent_leaves_no_child_and_no_folders():
    # A user's kernel killed by Jupyter runs no exit handlers: the child must go by itself
    # and the next sandbox must sweep the folders it left.
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from dataagent_jupyter.config import DataAgent\n"
        "from dataagent_jupyter.sandbox import Sandbox\n"
        "box = Sandbox(DataAgent())\n"
        "lease = box.lease()\n"
        "list(lease.run('pass', {}))\n"
        "child = lease.wait()\n"
        "print(child.pid, child.root, child.transfer_dirs[0], flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, root, shm = parent.stdout.readline().split()
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the orphaned child kept running")
    assert Path(root).exists()
    sweep_stale()
    assert not Path(root).exists() and not Path(shm).exists()


# --- pure pieces (no kernels) ----------------------------------------------------------------


def test_secret_names_and_values_are_scrubbed():
    assert all(
        map(
            is_secret_name,
            [
                "OPENAI_API_KEY",
                "AWS_ACCESS_KEY_ID",
                "GITHUB_TOKEN",
                "DB_PASSWORD",
                "my_secret",
                "GOOGLE_APPLICATION_CREDENTIALS",
                "AZURE_CLIENT_ID",
                "SSH_AUTH_SOCK",
            ],
        )
    )
    assert not any(map(is_secret_name, ["PATH", "HOME", "LANG", "PYTHONPATH", "TERM"]))
    env = {
        "PATH": "/usr/bin",
        "OPENAI_API_KEY": LLM_KEY,
        "COPY": f"x{LLM_KEY}",
        "TOKENISH_VALUE": "a",
        "DSN": "postgres://me:pw@db/x",
        "OTHER": CONFIG_KEY,
    }
    clean = scrub_env(env, secrets=[CONFIG_KEY, None])
    assert clean == {"PATH": "/usr/bin"}


def test_limits_from_config():
    limits = limits_from_config(
        DataAgent(
            memory_limit="1G", cpu_limit=10, max_file_size="5M", max_processes=0, exec_timeout=3
        )
    )
    assert (limits.memory, limits.cpu_seconds, limits.file_size) == (2**30, 10, 5 * 2**20)
    assert limits.processes is None and limits.wall_seconds == 3
    assert rlimits(limits)["RLIMIT_AS"] == (2**30, 2**30)
    assert rlimits(limits)["RLIMIT_CPU"][0] == 10 and "RLIMIT_NPROC" not in rlimits(limits)
    message = death_message(limits, returncode=-9, out_of_memory=True)
    assert message.startswith("the analysis ran out of memory (limit 1.0 GiB)")
    assert "CPU time" in death_message(limits, returncode=-int(signal.SIGXCPU))


def test_trim_traceback_drops_noise_and_keeps_the_end():
    frames = [
        "\x1b[31m---------\x1b[39m",
        "\x1b[31mValueError\x1b[39m   Traceback (most recent call last)",
        "Cell In[1], line 3\n      1 x = 1\n----> 3 g()\n",
        "File /x/site-packages/IPython/core/interactiveshell.py:1, in run_code()\n  1 foo\n",
        *["File /x/site-packages/pandas/core/frame.py:9, in f()\n      8 a\n----> 9 b\n     10 c\n"]
        * 40,
        *[f"File /x/site-packages/numpy/m{i}.py:1, in h()\n----> 1 z\n" for i in range(200)],
        "\x1b[31mValueError\x1b[39m: bad value",
    ]
    text = trim_traceback(frames, ename="ValueError", evalue="bad value", limit=1500)
    assert "\x1b" not in text and "IPython" not in text and "Traceback (most" not in text
    assert text.startswith("Cell In[1], line 3") and text.endswith("ValueError: bad value")
    assert "traceback shortened" in text and len(text) <= 1600
    assert "     10 c" not in text  # library frames keep only their marked line


def test_forward_transfer_is_exact_and_leaves_the_file_as_written(tmp_path):
    frame = mixed_frame()
    frame.attrs["source"] = "test"
    path = str(tmp_path / "f.pkl")
    size = write_pickled(frame, path)
    assert size == os.path.getsize(path)
    back = read_pickled(path)
    pd.testing.assert_frame_equal(back, frame)
    assert back.attrs == {"source": "test"}
    big = pd.DataFrame(np.zeros((300_000, 4)))  # large enough to be mapped, not read
    path = str(tmp_path / "big.pkl")
    write_pickled(big, path)
    os.chmod(path, 0o400)  # as the frame store leaves it
    written = Path(path).read_bytes()
    mapped = read_pickled(path)
    mapped.iloc[0, 0] = 1.0  # writable (copy-on-write mapping)
    assert big.iloc[0, 0] == 0.0 and mapped.iloc[0, 0] == 1.0
    assert Path(path).read_bytes() == written  # the next reader gets what was written
    assert read_pickled(path).iloc[0, 0] == 0.0


def test_result_codec_refuses_dangerous_time_zones(tmp_path):
    path = str(tmp_path / "r.arrow")
    export_value(pd.DataFrame({"t": pd.date_range("2024", periods=2, tz="UTC")}), path)
    import pyarrow as pa

    table = pa.ipc.open_stream(pa.memory_map(path)).read_all()
    meta = dict(table.schema.metadata)
    recipe = json.loads(meta[b"dataagent"])
    recipe["fields"][0][2] = "datetime64[ns, dateutil//etc/passwd]"
    meta[b"dataagent"] = json.dumps(recipe).encode()
    table = table.replace_schema_metadata(meta)
    os.unlink(path)
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(TransferError, match="refused"):
        import_value(path)
    assert not os.path.exists(path)  # consumed either way


def test_tracker_sees_in_place_edits_and_forgets_dropped_frames():
    tracker = SentFrames()
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    tracker.remember("df", df)
    assert tracker.is_current("df", df)
    assert not tracker.is_current("df", df.copy())
    df.loc[0, "a"] = 10
    assert not tracker.is_current("df", df)
    tracker.remember("df", df)
    df.index.name = "renamed"
    assert not tracker.is_current("df", df)
    tracker.remember("df", df)
    del df
    assert tracker.names() == [] and tracker.pop_expired() == ["df"]


# --- process limit, missing protections, disk limit, the stale-folder sweep ------------------

# Starts threads, then processes, until the system refuses; prints how many it got and
# releases them (processes exit by themselves, threads on the event).
FORK_BOMB = """
import os, threading, time
stop = threading.Event()
threads = []
try:
    for _ in range(5000):
        t = threading.Thread(target=stop.wait, daemon=True)
        t.start()
        threads.append(t)
except RuntimeError:
    pass
stop.set()
for t in threads:
    t.join()
kids = []
try:
    for _ in range(5000):
        pid = os.fork()
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        kids.append(pid)
except OSError:
    pass
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(len(threads), len(kids))
"""


@pytest.mark.kernel
def test_fork_bomb_is_stopped_by_the_process_limit(outdir):
    box = Sandbox(DataAgent(max_processes=40, output_dir=str(outdir), exec_timeout=60))
    try:
        threads, kids = map(int, run_text(box, FORK_BOMB).split())
        # The limit counts the kernel's own threads too, so the bomb gets fewer than 40.
        assert 0 < threads < 40 and 0 < kids < 40
        assert run_text(box, "print('still here')") == "still here\n"
        assert any(p.startswith("process limit") for p in box.status().protections)
    finally:
        box.shutdown()


@pytest.mark.kernel
def test_threads_held_elsewhere_do_not_stop_the_child(outdir):
    # RLIMIT_NPROC counts every task of the user: with a plain limit of 256, a browser
    # holding 300 threads kept an ordinary user's child from starting at all.
    holder = hold_threads(320)
    box = Sandbox(DataAgent(max_processes=256, output_dir=str(outdir)))
    try:
        code = "import threading\nprint(threading.active_count() > 0)"
        assert run_text(box, code) == "True\n"
        limit = [p for p in box.status().protections if p.startswith("process limit")]
        assert limit, box.status().problems
        if os.geteuid() != 0:
            # the RLIMIT_NPROC path: the limit sits above what the user already runs
            assert "cgroup" in limit[0] or "beyond the" in limit[0]
    finally:
        box.shutdown()
        holder.stdin.close()
        holder.wait(timeout=10)


@pytest.mark.kernel
def test_missing_protections_are_said_once_and_listed_in_status(outdir):
    box = Sandbox(DataAgent(output_dir=str(outdir)))
    try:
        first = ask(box, "print(1)")
        second = ask(box, "print(2)")
        status = box.status()
        notices = [o.data["text/plain"] for o in first if o.kind == "stream" and o.name == "stderr"]
        if status.missing:
            assert len(notices) == 1 and notices[0].count("\n") == 1
            for name in status.missing:
                assert name in notices[0] and name in status._repr_markdown_()
        else:
            assert notices == []
        assert not [o for o in second if o.kind == "stream" and o.name == "stderr"]
        if os.geteuid() != 0:
            # an ordinary user gets no network namespace: that is said, not hidden
            assert "netns" in status.missing
            assert "shares this machine's network" in notices[0]
    finally:
        box.shutdown()


@pytest.mark.kernel
def test_sandbox_require_refuses_a_child_without_the_protection(outdir):
    required = ["landlock-fs", "landlock-net"]
    config = DataAgent(output_dir=str(outdir), sandbox_network=True, sandbox_require=required)
    box = Sandbox(config)
    try:
        with pytest.raises(SandboxError) as info:
            ask(box, "print('should not run')")
        assert "landlock-net" in info.value.message and "sandbox_network" in info.value.message
        assert "landlock-fs" not in info.value.message  # that one is there
        config.sandbox_network = False
        assert run_text(box, "print('ran')") == "ran\n"
    finally:
        box.shutdown()


@pytest.mark.kernel
def test_disk_limit_stops_a_child_that_writes_too_much(outdir):
    config = DataAgent(output_dir=str(outdir), disk_limit="24M", exec_timeout=30)
    box = Sandbox(config)
    try:
        big = pd.DataFrame({"x": np.arange(4_000_000, dtype="int64")})  # 32 MB, from the parent
        code = "import time\ntime.sleep(1)\nprint(len(big))"
        assert run_text(box, code, {"big": big}) == "4000000\n"
        for where in ("work", "shm"):
            lease = box.lease()
            shm = lease.wait().transfer_dirs[0]  # this question's child's
            assert shm.parent == Path("/dev/shm")
            folder = "'.'" if where == "work" else repr(str(shm))
            code = (
                "import os, time\n"
                "for i in range(40):\n"
                f"    with open(os.path.join({folder}, f'f{{i}}'), 'wb') as fh:\n"
                "        fh.write(os.urandom(1 << 20))\n"
                "    time.sleep(0.05)\n"
                "time.sleep(5)\n"
            )
            with pytest.raises(ChildDied) as info:
                list(lease.run(code, {}))
            lease.close()
            assert "more than the 24.0 MiB allowed" in info.value.message
            assert "DataAgent.disk_limit" in info.value.message
            assert run_text(box, "print('replaced')") == "replaced\n"
    finally:
        box.shutdown()


def test_sweep_only_touches_private_folders_of_this_user(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    parent = user_parent()
    assert parent.parent == tmp_path and (parent.stat().st_mode & 0o777) == 0o700
    dead = {"pid": 2**22 + 7, "started": 1.0}  # above pid_max: never a live process
    stale, open_folder = parent / "dataagent-sandbox-a", parent / "dataagent-sandbox-b"
    outside = tmp_path / "dataagent-sandbox-c"  # the old, shared place
    for folder, mode in ((stale, 0o700), (open_folder, 0o755), (outside, 0o700)):
        folder.mkdir(mode=mode)
        folder.chmod(mode)
        (folder / "owner.json").write_text(json.dumps(dead))
    assert sweep_stale() == 1
    assert not stale.exists() and open_folder.exists() and outside.exists()
    # a parent that is not private is refused, not used
    parent.chmod(0o755)
    with pytest.raises(SandboxError, match="not a private folder"):
        user_parent()


def test_a_path_secret_does_not_remove_paths_under_it():
    work = "/home/ana/project"
    env = {
        "PWD": work,
        "PATH": f"{work}/.venv/bin:/usr/bin",
        "VIRTUAL_ENV": f"{work}/.venv",
        "SAME_AS_PWD": work,
        "OPENAI_API_KEY": LLM_KEY,
        "KEY_IN_A_PATH": f"/opt/{LLM_KEY}/bin",
    }
    clean = scrub_env(env)
    assert clean == {"PATH": f"{work}/.venv/bin:/usr/bin", "VIRTUAL_ENV": f"{work}/.venv"}


def test_protection_names_say_what_missing_means():
    assert set(MEANING) == set(PROTECTION_NAMES)
    config = DataAgent()
    assert missing(config, PROTECTION_NAMES) == ()
    assert missing(config, ["landlock-net"])[0] == "landlock-fs"
    line = notice(["landlock-fs"])
    assert "\n" not in line and "can read your home folder" in line
    assert "landlock-net" not in missing(DataAgent(sandbox_network=True), [])
    assert "process-limit" not in missing(DataAgent(max_processes=0), [])
    with pytest.raises(SandboxError, match="seccomp"):
        check_required(DataAgent(sandbox_require=["seccomp"]), ["landlock-fs"])
    check_required(DataAgent(sandbox_require=["seccomp"]), ["seccomp"])
    with pytest.raises(TraitError):
        DataAgent(sandbox_require=["landlock"])
    with pytest.raises(TraitError):
        DataAgent(disk_limit="50%")
