"""What a hostile child can send back, and what it can leave behind, cannot hurt the user.

The model's code runs in the child, so the child may write any result file, any status
reply and any output. Unit tests craft such files and replies; end-to-end tests run code
in a real child that replaces the child's own sending function. Each case must end in one
SandboxError naming the limit, within a few seconds, with the user's kernel's memory
growth bounded (RSS measured), and the next question must work at once.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pytest

from dataagent_jupyter.config import DataAgent
from dataagent_jupyter.errors import Cancelled, ExecutionFailed, SandboxError
from dataagent_jupyter.sandbox import Sandbox
from dataagent_jupyter.sandbox.outputs import ChartFolder, OutputBudget, strip_controls
from dataagent_jupyter.sandbox.transfer import RECIPE_KEY, TransferError, export_value
from dataagent_jupyter.sandbox.untrusted import (
    LimitExceeded,
    ResultLimits,
    import_value,
    parse_reply,
)

MB = 1 << 20
#: How much the user's kernel may grow while refusing one hostile value.
RSS_BUDGET = 64 * MB


def rss() -> int:
    return psutil.Process().memory_info().rss


def stream_bytes(table: pa.Table, *, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def honest_table(value, tmp_path: Path) -> pa.Table:
    """The Arrow table the child's exporter writes for ``value`` (to tamper with)."""
    path = str(tmp_path / "honest.arrow")
    export_value(value, path)
    with pa.memory_map(path) as source:
        table = pa.ipc.open_stream(source).read_all()
    os.unlink(path)
    return table


def with_recipe(table: pa.Table, change) -> pa.Table:
    meta = dict(table.schema.metadata)
    recipe = json.loads(meta[RECIPE_KEY])
    change(recipe)
    meta[RECIPE_KEY] = json.dumps(recipe).encode()
    return table.replace_schema_metadata(meta)


def zstd_bomb() -> bytes:
    """About 1 GB of zeros once decompressed, in a file of a few hundred kilobytes."""
    zeros = pa.table({"c0": pa.array(np.zeros(8 * MB))})  # 64 MiB per batch
    meta = {RECIPE_KEY: json.dumps(_frame_recipe(1, 16 * 8 * MB)).encode()}
    table = pa.concat_tables([zeros] * 16).replace_schema_metadata(meta)
    return stream_bytes(table, compression="zstd")


def _frame_recipe(columns: int, rows: int) -> dict:
    return {
        "kind": "frame",
        "fields": [[f"c{j}", "arrow", "float64"] for j in range(columns)],
        "index": {"range": [0, rows, 1], "name": None},
        "columns": {"range": [0, columns, 1], "name": None},
        "rows": rows,
    }


def refused(path: str, data: bytes, match: str, limits: ResultLimits | None = None) -> str:
    """Write ``data`` as a result file; its import must fail fast, cheaply, naming ``match``."""
    Path(path).write_bytes(data)
    before, started = rss(), time.monotonic()
    with pytest.raises(TransferError, match=match) as info:
        import_value(path, limits=limits)
    assert time.monotonic() - started < 5
    assert rss() - before < RSS_BUDGET
    assert not os.path.exists(path)  # consumed either way
    return str(info.value)


# --- crafted result files ----------------------------------------------------------------


def test_compressed_result_is_refused_before_it_expands(tmp_path):
    bomb = zstd_bomb()
    assert len(bomb) < 2 * MB
    message = refused(str(tmp_path / "r"), bomb, "compressed")
    assert "refused" in message


def test_dtype_names_outside_the_allow_list_are_refused(tmp_path):
    table = honest_table(pd.DataFrame({"a": [1, 2]}), tmp_path)
    for name in ("S1000000000", "U1000000000", "V99999999", "dateutil//etc/passwd", "O"):
        crafted = with_recipe(table, lambda r, n=name: r["fields"][0].__setitem__(2, n))
        refused(str(tmp_path / "r"), stream_bytes(crafted), "refused the dtype")


def test_repeated_recipe_fields_are_refused(tmp_path):
    table = honest_table(pd.DataFrame({"a": [1, 2]}), tmp_path)
    crafted = with_recipe(table, lambda r: r.__setitem__("fields", r["fields"] * 400))
    refused(str(tmp_path / "r"), stream_bytes(crafted), "exactly once")


def test_rows_beyond_the_cell_limit_are_refused_without_allocating(tmp_path):
    # A null column costs nothing in the file, and 8 bytes per row once in pandas.
    table = pa.table({"c0": pa.nulls(2_000_000_000)}).replace_schema_metadata(
        {RECIPE_KEY: json.dumps(_frame_recipe(1, 2_000_000_000)).encode()}
    )
    refused(str(tmp_path / "r"), stream_bytes(table), "cell limit")


def test_decoded_size_limit_is_checked_before_building(tmp_path):
    frame = pd.DataFrame({"a": np.zeros(2 * MB)})  # 16 MiB in pandas
    data = stream_bytes(honest_table(frame, tmp_path))
    small = ResultLimits(decoded_bytes=8 * MB)
    message = refused(str(tmp_path / "r"), data, "limit on a result", limits=small)
    assert "MiB" in message


def test_long_strings_and_deep_nesting_are_refused(tmp_path):
    long = honest_table(pd.DataFrame({"s": pd.array(["x" * (20 * MB)], dtype="str")}), tmp_path)
    refused(str(tmp_path / "r"), stream_bytes(long), "limit on a string")
    nested = honest_table(pd.DataFrame({"o": pd.Series([[0]], dtype=object)}), tmp_path)
    deep = "[" * 100_000 + "]" * 100_000
    cells = pa.array([deep], type=nested.schema.field("c0").type)
    crafted = nested.set_column(nested.schema.get_field_index("c0"), "c0", cells)
    refused(str(tmp_path / "r"), stream_bytes(crafted), "nest")


def test_planted_links_fifos_and_huge_files_are_refused(tmp_path):
    target = tmp_path / "secret.txt"
    target.write_text("not for the child")
    link = tmp_path / "link.arrow"
    link.symlink_to(target)
    with pytest.raises(TransferError, match="could not be opened"):
        import_value(str(link))
    assert target.read_text() == "not for the child"
    fifo = str(tmp_path / "fifo.arrow")
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(TransferError, match="not a file"):
        import_value(fifo)
    assert time.monotonic() - started < 2
    big = tmp_path / "big.arrow"
    big.write_bytes(b"\0" * (2 * MB))
    with pytest.raises(LimitExceeded, match="limit on a result file"):
        import_value(str(big), limits=ResultLimits(file_bytes=MB))


def test_honest_values_survive_the_checks(tmp_path):
    frame = pd.DataFrame(
        {
            "f": np.arange(5.0),
            "s": pd.array(["a", None, "c", "d", "e"], dtype="str"),
            "c": pd.Categorical(list("xyxyx")),
            "t": pd.date_range("2024-01-01", periods=5, tz="Europe/Oslo"),
            "p": pd.period_range("2024-01", periods=5, freq="M"),
            "o": [1, "two", [3], None, {"k": (1, 2)}],
        },
        index=pd.Index(list("vwxyz"), name="key"),
    )
    path = str(tmp_path / "r")
    export_value(frame, path)
    back = import_value(path)
    pd.testing.assert_frame_equal(back, frame)
    back.loc["v", "f"] = 10.0  # numeric columns come back writable
    assert back.loc["v", "f"] == 10.0


def test_replies_are_json_with_a_size_cap():
    def reply(text):
        return {"status": {"status": "ok", "data": {"text/plain": text}}}

    assert parse_reply(reply('{"ok": true}'), "status") == {"ok": True}
    nested = "[" * (4 * MB) + "]" * (4 * MB)
    before, started = rss(), time.monotonic()
    with pytest.raises(LimitExceeded, match="limit on a status reply"):
        parse_reply(reply(nested), "status")
    assert time.monotonic() - started < 1 and rss() - before < RSS_BUDGET
    with pytest.raises(TransferError, match="not valid JSON"):
        parse_reply(reply("{'ok': True}"), "status")  # a Python literal is not evaluated
    with pytest.raises(TransferError, match="not a JSON object"):
        parse_reply(reply("[1, 2]"), "status")


# --- end to end: code in a real child replaces its own sending function -------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    config = DataAgent(
        memory_limit="2G", exec_timeout=20.0, output_dir=str(tmp_path_factory.mktemp("out"))
    )
    box = Sandbox(config, session_id="hostile")
    box.start_warm()
    yield box
    box.shutdown()


def replace_send_back(body: str) -> str:
    """Model code that swaps the child's sending function for ``evil``."""
    return f"import _dataagent_transfer as T\n{body}\nT.send_back = evil\nresult = 1\n"


def text_of(outputs) -> str:
    return "".join(o.data["text/plain"] for o in outputs if o.kind == "stream")


def planted(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return replace_send_back(
        "import base64\n"
        f"blob = base64.b64decode('{encoded}')\n"
        "def evil(namespace, name, path):\n"
        "    with open(path, 'wb') as fh:\n"
        "        fh.write(blob)\n"
        "    return T.Reply({'ok': True})"
    )


def fetch_refused(box: Sandbox, code: str, match: str) -> None:
    with box.question() as lease:
        list(lease.run(code, {}))
        before, started = rss(), time.monotonic()
        with pytest.raises(SandboxError, match=match):
            lease.fetch()
        assert time.monotonic() - started < 5
        assert rss() - before < RSS_BUDGET
    assert ask_and_fetch(box, "result = 41 + 1") == 42  # the next question works at once


def ask_and_fetch(box: Sandbox, code: str, frames=None):
    with box.question() as lease:
        list(lease.run(code, frames or {}))
        return lease.fetch()


@pytest.mark.kernel
def test_child_sending_a_zstd_bomb_gets_a_sandbox_error(sandbox):
    fetch_refused(sandbox, planted(zstd_bomb()), "compressed")


@pytest.mark.kernel
def test_child_sending_a_huge_dtype_name_gets_a_sandbox_error(sandbox, tmp_path):
    table = honest_table(pd.DataFrame({"a": [1, 2]}), tmp_path)
    crafted = with_recipe(table, lambda r: r["fields"][0].__setitem__(2, "S1000000000"))
    fetch_refused(sandbox, planted(stream_bytes(crafted)), "refused the dtype 'S1000000000'")


@pytest.mark.kernel
def test_child_sending_repeated_fields_gets_a_sandbox_error(sandbox, tmp_path):
    table = honest_table(pd.DataFrame({"a": [1, 2]}), tmp_path)
    crafted = with_recipe(table, lambda r: r.__setitem__("fields", r["fields"] * 400))
    fetch_refused(sandbox, planted(stream_bytes(crafted)), "exactly once")


@pytest.mark.kernel
def test_child_sending_an_8_mb_nested_status_gets_a_sandbox_error(sandbox):
    code = replace_send_back(
        "def evil(namespace, name, path):\n    return T.Reply('[' * 4_000_000 + ']' * 4_000_000)"
    )
    fetch_refused(sandbox, code, "limit on a status reply")


@pytest.mark.kernel
def test_stop_cancels_a_stuck_fetch_and_restart_does_not_wait(sandbox):
    code = replace_send_back(
        "import time\ndef evil(namespace, name, path):\n    time.sleep(60)\n    return T.Reply({})"
    )
    cancel = threading.Event()
    errors: list[BaseException] = []

    def fetch(lease) -> None:
        try:
            lease.fetch(cancel=cancel)
        except BaseException as exc:
            errors.append(exc)

    with sandbox.question() as lease:
        list(lease.run(code, {}))
        worker = threading.Thread(target=fetch, args=(lease,))
        worker.start()
        time.sleep(0.5)
        started = time.monotonic()
        cancel.set()
        worker.join(timeout=5)
        assert not worker.is_alive() and time.monotonic() - started < 2
        assert isinstance(errors[0], Cancelled)
    assert ask_and_fetch(sandbox, "result = 'next'") == "next"
    # a fetch stuck in the child never holds up a restart or the next question
    cancel.clear()
    with sandbox.question() as lease:
        list(lease.run(code, {}))
        worker = threading.Thread(target=fetch, args=(lease,))
        worker.start()
        time.sleep(0.5)
        started = time.monotonic()
        sandbox.restart()
        assert time.monotonic() - started < 2
        assert ask_and_fetch(sandbox, "result = 'meanwhile'") == "meanwhile"
        worker.join(timeout=5)
        assert not worker.is_alive() and isinstance(errors[-1], SandboxError)
    assert ask_and_fetch(sandbox, "result = 'after restart'") == "after restart"


# --- one clean child per question ----------------------------------------------------------


@pytest.mark.kernel
def test_tampered_transfer_functions_do_not_reach_the_next_question(sandbox):
    frame = pd.DataFrame({"a": [1, 2, 3]})
    tamper = (
        "import _dataagent_transfer as T\n"
        "honest = T.receive\n"
        "def receive(namespace, *args, **kwargs):\n"
        "    honest(namespace, *args, **kwargs)\n"
        "    for value in list(namespace.values()):\n"
        "        if isinstance(value, pd.DataFrame) and 'a' in value:\n"
        "            value['a'] = value['a'] * 1000\n"
        "T.receive = receive\n"
        "pd.DataFrame.sum = lambda self, *a, **k: 'patched'\n"
        "pd.Series.sum = lambda self, *a, **k: -1\n"
        "T.send_back = lambda namespace, name, path: T.Reply({'ok': False, 'error': 'x'})\n"
    )
    with sandbox.question() as lease:
        list(lease.run(tamper, {"df": frame}))
        # within the question the damage is real (fix attempts share the child) ...
        assert text_of(lease.run("print(df['a'].sum())", {"df": frame}, attempt=2)) == "-1\n"
    # ... but the next question starts from a child no answer has touched
    assert ask_and_fetch(sandbox, "result = int(df['a'].sum())", {"df": frame}) == 6


@pytest.mark.kernel
def test_a_frame_does_not_reach_a_later_questions_child(sandbox):
    secret = pd.DataFrame({"region": ["North", "SZQX-hidden"]})
    with sandbox.question() as lease:
        list(lease.run("print(len(secret))", {"secret": secret}))
    store_file = sandbox._store._files["secret"].path  # where the version lives
    probe = (
        "import gc, os\n"
        "held = any(isinstance(o, pd.DataFrame) and 'SZQX-hidden' in o.to_string()\n"
        "           for o in gc.get_objects())\n"
        "print('held' if held or 'secret' in globals() else 'not held')\n"
        "try:\n"
        f"    open({str(store_file)!r}, 'rb').read()\n"
        "    print('read the file')\n"
        "except OSError:\n"
        "    print('denied')\n"
        "try:\n"
        f"    print(os.listdir({str(store_file.parent.parent)!r}))\n"
        "except OSError:\n"
        "    print('denied')\n"
    )
    with sandbox.question() as lease:
        out = text_of(lease.run(probe, {"other": pd.DataFrame({"x": [1]})}))
    assert out == "not held\ndenied\ndenied\n"


@pytest.mark.kernel
def test_work_left_running_ends_with_the_answer(sandbox):
    leftover = (
        "import threading, subprocess, sys\n"
        "def spin():\n"
        "    while True:\n"
        "        pass\n"
        "threading.Thread(target=spin, daemon=True).start()\n"
        "print('started')\n"
    )
    with sandbox.question() as lease:
        assert text_of(lease.run(leftover, {})) == "started\n"
        pid = lease.wait().pid
        assert psutil.Process(pid).num_threads() > 1
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the child and its spinning thread outlived the answer")


@pytest.mark.kernel
def test_a_changed_frame_file_is_written_again(sandbox):
    frame = pd.DataFrame({"a": np.arange(1000)})
    with sandbox.question() as lease:
        list(lease.run("pass", {"df": frame}))
    sent = sandbox.bytes_sent()
    with sandbox.question() as lease:  # unchanged: linked again, nothing written
        list(lease.run("pass", {"df": frame}))
    assert sandbox.bytes_sent() == sent
    path = sandbox._store._files["df"].path
    os.chmod(path, 0o600)  # what a child without Landlock could do, then write to it
    with open(path, "r+b") as fh:
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\xff" * 8)
    assert ask_and_fetch(sandbox, "result = int(df['a'].iloc[-1])", {"df": frame}) == 999
    assert sandbox.bytes_sent() > sent  # the damaged version was dropped and rewritten


# --- bounded outputs, clean text -------------------------------------------------------------


def test_control_sequences_are_removed_and_colours_kept():
    hostile = (
        "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # OSC 52: write the clipboard
        "\x1b]0;fake title\x1b\\"  # OSC 0: window title, ST-terminated
        "\x1b[2J\x1b[H\x1b[3J"  # clear the screen and scrollback
        "\x1b[31mred\x1b[0m\tcol\r\nnext\x1b[6n\x1bP+q544e\x1b\\\x07\x08\x9b1m\x1b"
    )
    assert strip_controls(hostile) == "\x1b[31mred\x1b[0m\tcol\nnext"
    assert strip_controls("plain\ttext\n") == "plain\ttext\n"
    assert strip_controls("\x1b]52;c;" + "A" * 100_000) == ""  # unterminated: all of it


def test_output_budget_cuts_large_outputs_and_the_answers_total():
    budget = OutputBudget(per_output=1000, total=5000)
    shown, whole = budget.admit({"text/plain": "x" * 900})
    assert whole and shown == {"text/plain": "x" * 900}
    note, whole = budget.admit({"image/png": "A" * 64_000})
    assert not whole and "is not shown" in note["text/plain"]
    assert "DataAgent.max_output_mb" in note["text/plain"] and len(note["text/plain"]) < 200
    kept = [budget.admit({"text/plain": "y" * 900}) for _ in range(10)]
    whole_ones = [k for k in kept if k is not None and k[1]]
    cut = [k for k in kept if k is not None and not k[1]]
    assert len(whole_ones) == 4 and len(cut) == 1  # one line says the rest is not shown
    assert "rest of this answer's output is not shown" in cut[0][0]["text/plain"]
    assert kept[-1] is None


def test_saved_charts_stay_within_their_total(tmp_path):
    folder = ChartFolder(tmp_path / "session", limit=2500)
    paths = [folder.save(bytes([i]) * 1000) for i in range(4)]
    assert all(paths)
    left = sorted(p.name for p in (tmp_path / "session").iterdir())
    assert left == ["chart-003.png", "chart-004.png"]  # the oldest removed first
    assert folder.save(b"z" * 3000) is None  # larger than the whole allowance
    off = ChartFolder(tmp_path / "off", limit=0)
    assert off.save(b"png") is None and not (tmp_path / "off").exists()


@pytest.fixture
def small_outputs(sandbox):
    saved = (sandbox.config.max_output_mb, sandbox.config.max_saved_charts_mb)
    sandbox.config.max_output_mb = 0.5
    yield sandbox
    sandbox.config.max_output_mb, sandbox.config.max_saved_charts_mb = saved


@pytest.mark.kernel
def test_huge_displays_are_cut_in_one_line_each_and_never_saved(small_outputs):
    box = small_outputs
    code = (
        "import base64\n"
        "png = base64.b64encode(b'\\x89PNG' + b'\\0' * 3_000_000).decode()\n"
        "for _ in range(6):\n"
        "    display({'image/png': png}, raw=True)\n"
    )
    folder = Path(box.config.output_dir) / box.session_id
    before_files = set(folder.glob("*")) if folder.exists() else set()
    before = rss()
    with box.question() as lease:
        outputs = list(lease.run(code, {}))
    assert rss() - before < RSS_BUDGET
    notes = [o.data["text/plain"] for o in outputs]
    assert len(outputs) == 6 and all("is not shown" in n and "4.0 MB" in n for n in notes)
    assert all(o.saved is None and "image/png" not in o.data for o in outputs)
    assert (set(folder.glob("*")) if folder.exists() else set()) == before_files


@pytest.mark.kernel
def test_an_answers_outputs_stop_at_their_total_with_one_line(small_outputs):
    code = "for i in range(20):\n    display({'text/plain': str(i) * 400_000}, raw=True)\n"
    with small_outputs.question() as lease:
        outputs = list(lease.run(code, {}))
    texts = [o.data["text/plain"] for o in outputs]
    assert len(texts) == 7  # 6 x 0.4 MB fit in 5 x 0.5 MB; then one line
    assert "rest of this answer's output is not shown" in texts[-1]


@pytest.mark.kernel
def test_charts_saved_per_session_are_capped_and_can_be_off(small_outputs):
    box = small_outputs
    plot = (
        "import matplotlib.pyplot as plt\n"
        "for i in range(6):\n"
        "    fig, ax = plt.subplots()\n"
        "    ax.plot(range(100), [x * i for x in range(100)])\n"
        "    plt.show()\n"
    )
    box.config.max_saved_charts_mb = 0.05
    with box.question() as lease:
        outputs = list(lease.run(plot, {}))
    charts = [o for o in outputs if "image/png" in o.data]
    assert len(charts) == 6  # every chart is shown
    folder = Path(charts[0].saved or charts[-1].saved).parent
    sizes = [p.stat().st_size for p in folder.glob("chart-*.png")]
    assert 0 < sum(sizes) <= 50_000
    assert Path(charts[-1].saved).exists() and not Path(charts[0].saved).exists()
    box.config.max_saved_charts_mb = 0
    with box.question() as lease:
        outputs = list(lease.run(plot, {}))
    assert all(o.saved is None for o in outputs if "image/png" in o.data)


@pytest.mark.kernel
def test_child_text_reaches_the_user_without_control_sequences(sandbox):
    code = (
        "import sys\n"
        "print('\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\x1b]0;owned\\x07'\n"
        "      '\\x1b[2Jok \\x1b[32mgreen\\x1b[0m')\n"
        "print('\\x1b[1;1Hstderr too', file=sys.stderr)\n"
        "raise ValueError('bad \\x1b]52;c;QUJD\\x07value\\x1b[2J')\n"
    )
    with sandbox.question() as lease:
        outputs = []
        with pytest.raises(ExecutionFailed) as info:
            for output in lease.run(code, {}):
                outputs.append(output)
    streams = "".join(o.data["text/plain"] for o in outputs)
    assert streams == "ok \x1b[32mgreen\x1b[0m\nstderr too\n"
    error = info.value
    assert error.evalue == "bad value" and "\x1b" not in error.message
    assert "\x1b" not in error.traceback and "bad value" in error.traceback
