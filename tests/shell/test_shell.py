"""`make shell` smoke test: harlequin opens the warehouse read-only and answers a query.

Drives the real TUI under a detached tmux session of fixed size: wait for the UI, type a
query, run it with ctrl+j (harlequin 2.17's "Run Query"), read the screen back with
capture-pane. Every wait polls the screen with a timeout; nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
HARLEQUIN = ROOT / ".venv" / "bin" / "harlequin"
TMUX = shutil.which("tmux")

pytestmark = pytest.mark.skipif(
    TMUX is None or not HARLEQUIN.exists(), reason="needs tmux and harlequin in .venv"
)


class Screen:
    """A tmux session running one command, read back as plain text."""

    def __init__(self, name: str, pid: int) -> None:
        self.name = name
        self.pid = pid  # the pane's first process (make), leader of its process group

    def close(self) -> None:
        """Kill the session and every process of the pane: harlequin outlives a closed
        terminal (spinning on the dead tty) unless its process group is killed."""
        subprocess.run([TMUX, "kill-session", "-t", self.name], check=False, capture_output=True)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)

    def text(self) -> str:
        out = subprocess.run([TMUX, "capture-pane", "-p", "-t", self.name],
                             capture_output=True, text=True, check=False)
        return out.stdout

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.text()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; screen:\n{screen}")
            time.sleep(0.2)

    def type(self, text: str) -> None:
        subprocess.run([TMUX, "send-keys", "-t", self.name, "-l", text], check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run([TMUX, "send-keys", "-t", self.name, *keys], check=True)


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    db = tmp_path / "shellcheck.duckdb"
    con = duckdb.connect(str(db))
    con.sql("create table answers as select * from (values (1, 'forty-two-marker'), (2, 'other')) t(id, label)")
    con.close()
    return db


@pytest.fixture
def harlequin(warehouse: Path, tmp_path: Path) -> Iterator[Screen]:
    """`make shell DB=<warehouse>` in a 160x45 tmux session; killed in teardown."""
    name = f"pilehouse-shell-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"  # harlequin's config and cache stay out of the real $HOME
    home.mkdir()
    # -o .venv/.installed: never (re)install from the test, just run the target's command
    command = (f"cd {ROOT} && HOME={home} exec make --no-print-directory -s -o .venv/.installed "
               f"shell DB={warehouse}")
    started = subprocess.run(
        [TMUX, "new-session", "-d", "-P", "-F", "#{pane_pid}", "-s", name, "-x", "160", "-y", "45", command],
        check=True, capture_output=True, text=True, env={**os.environ, "TERM": "xterm-256color"})
    screen = Screen(name, int(started.stdout.strip()))
    try:
        yield screen
    finally:
        screen.close()


def run_query(screen: Screen, sql: str, replace: bool = True) -> None:
    """Put ``sql`` in the editor and run it. Keys can race harlequin moving the focus to the
    results after a query, so each step is checked on screen and retried."""
    for _ in range(3):
        if "Any other key closes" in screen.text():  # a dialog (error, cell viewer) is open
            screen.keys("Escape")
            screen.wait_for(lambda s: "Any other key closes" not in s, "the dialog to close", timeout=5)
        screen.keys("F2")  # focus the query editor
        if replace:
            screen.keys("C-a")  # select everything, so typing replaces it
            try:
                screen.wait_for(lambda s: "Run Selection" in s, "the editor's selection", timeout=3)
            except AssertionError:
                continue
        screen.type(sql)
        try:
            screen.wait_for(lambda s: sql in s, "the query in the editor", timeout=3)
        except AssertionError:
            continue
        screen.keys("C-j")
        return
    raise AssertionError(f"could not type the query into harlequin; screen:\n{screen.text()}")


def test_make_shell_runs_a_query_read_only(harlequin: Screen, warehouse: Path) -> None:
    screen = harlequin
    screen.wait_for(lambda s: "Query Editor" in s and "shellcheck db" in s, "harlequin connected")

    run_query(screen, "select upper(label) as shouted from answers where id = 1", replace=False)
    shown = screen.wait_for(lambda s: "FORTY-TWO-MARKER" in s or "Error" in s, "the query's result")
    assert "FORTY-TWO-MARKER" in shown, shown
    assert "1 Records" in shown, shown

    # harlequin holds only a shared (read-only) lock: another process can still read the
    # file, but not open it for writing.
    probe = ("import duckdb, sys\n"
             "c = duckdb.connect(sys.argv[1], read_only=True)\n"
             "print(c.sql('select count(*) from answers').fetchall()[0][0])\n"
             "c.close()\n"
             "try:\n    duckdb.connect(sys.argv[1])\nexcept duckdb.Error as e:\n    print('write refused:', e)\n")
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", probe, str(warehouse)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "2", out.stdout
    assert "write refused" in out.stdout, out.stdout

    # and a write through harlequin itself fails
    run_query(screen, "create table written as select 1 as x")
    shown = screen.wait_for(lambda s: "read-only" in s, "the read-only error")
    assert "Query Error" in shown, shown

    screen.close()
    deadline = time.monotonic() + 10
    while True:  # the lock goes with the process; then check nothing was written
        try:
            con = duckdb.connect(str(warehouse), read_only=True)
            break
        except duckdb.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    tables = {r[0] for r in con.sql("select table_name from information_schema.tables").fetchall()}
    con.close()
    assert tables == {"answers"}
