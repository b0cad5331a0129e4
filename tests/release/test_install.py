"""Release hygiene a user checks before adopting: the sdist and the wheel build (the wheel from the
sdist, so the sdist is complete), carry the license, and the wheel installs into a clean virtualenv
with no extras, where ``outboxkit --help`` works and a command that needs an extra says, in one
line, which ``pip install`` fixes it.

The base dependencies come from the package index (pip's cache makes repeat runs quick)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# One worker builds and installs once for the whole module (the build writes build/ in the tree).
pytestmark = pytest.mark.xdist_group("release")

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the build backend (setuptools >= 77) is in the development environment already.
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture(scope="module")
def clean_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtualenv with only the wheel and its base dependencies."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    wheel = next(dist.glob("outboxkit-*.whl"))
    # Without PYTHONPATH: a source tree on it would make pip think outboxkit is installed already.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    yield venv


def run(venv: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOXKIT_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [str(venv / "bin" / "outboxkit"), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd
    )


def test_sdist_and_wheel_carry_the_license_and_the_package(dist: Path) -> None:
    sdist = dist / f"outboxkit-{VERSION}.tar.gz"
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "src/outboxkit/py.typed"} <= names
    wheel = next(dist.glob(f"outboxkit-{VERSION}-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
        metadata = zf.read(f"outboxkit-{VERSION}.dist-info/METADATA").decode()
    assert f"outboxkit-{VERSION}.dist-info/licenses/LICENSE" in files
    assert "outboxkit/py.typed" in files and "outboxkit/cli.py" in files
    assert "License-Expression: Apache-2.0" in metadata
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


def test_the_docs_build_strictly_from_the_unpacked_sdist(dist: Path, tmp_path: Path) -> None:
    """The sdist carries the documentation site whole (pages, images) and the examples it quotes."""
    with tarfile.open(dist / f"outboxkit-{VERSION}.tar.gz") as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        tar.extractall(tmp_path, filter="data")
    assert {f"docs/img/{p.name}" for p in (ROOT / "docs" / "img").iterdir()} <= names
    assert {f"examples/fastapi_orders/{p.name}" for p in (ROOT / "examples" / "fastapi_orders").glob("*.*")} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    unpacked = tmp_path / f"outboxkit-{VERSION}"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "img" / "dashboard-overview.png").exists()


def test_clean_install_without_extras_runs_the_cli(clean_venv: Path, tmp_path: Path) -> None:
    python = clean_venv / "bin" / "python"
    probe = "import importlib.util as u; print([m for m in ('psycopg', 'nats', 'aio_pika') if u.find_spec(m)])"
    assert subprocess.run([str(python), "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"

    help_ = run(clean_venv, "--help")
    assert help_.returncode == 0, help_.stderr
    for command in ("migrate", "provision", "relay", "consume", "status", "lab", "demo"):
        assert command in help_.stdout
    assert run(clean_venv, "lab", "run", "--help").returncode == 0

    # SQLite needs no extra: migrate and status work in a base install.
    db = f"sqlite:///{tmp_path}/app.db"
    assert run(clean_venv, "migrate", "--db", db).returncode == 0
    assert run(clean_venv, "status", "--db", db).returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ["--db", "postgresql://app@db.example/app"],
        ["--dialect", "postgresql"],
        ["--dialect", "mariadb"],
        ["--db", "mysql://app@db.example/app", "--inbox"],
        ["--dialect", "postgresql", "--event-store"],
    ],
)
def test_migrate_sql_prints_the_ddl_without_a_database_driver(clean_venv: Path, args: list[str]) -> None:
    """A DBA renders the migration on a machine that has no psycopg or PyMySQL (nor the database)."""
    result = run(clean_venv, "migrate", "--sql", *args)
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE IF NOT EXISTS" in result.stdout


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["relay", "--db", "sqlite:///app.db", "--broker", "nats://127.0.0.1:4222"], "nats"),
        (["relay", "--db", "postgresql://app@127.0.0.1/app", "--broker", "nats://127.0.0.1:4222"], "postgres"),
        (["provision", "--broker", "amqp://guest:guest@127.0.0.1:5672/", "--topic", "orders.#"], "rabbitmq"),
        (["demo"], "nats"),
        (["status", "--db", "mysql://root@127.0.0.1:3306/test"], "mysql"),
    ],
)
def test_a_missing_extra_is_one_line_naming_the_install(
    clean_venv: Path, tmp_path: Path, args: list[str], extra: str
) -> None:
    result = run(clean_venv, *args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ") and f"pip install 'outboxkit[{extra}]'" in lines[0]
