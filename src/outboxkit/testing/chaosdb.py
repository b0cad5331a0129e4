"""The private databases the chaos harness owns, so it can restart them: a PostgreSQL from
``pgserver`` (with ``wal_level=logical`` for ``--capture wal``) and a MariaDB on a Unix socket
(with the row binlog ``--capture binlog`` reads). The shared servers are never restarted.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from outboxkit.stores.registry import database_for


class PrivateDatabase(Protocol):
    @property
    def url(self) -> str: ...
    @property
    def unix_socket(self) -> str: ...
    def tcp_url(self, port: int) -> str:
        """The URL that reaches this server through a TCP proxy on 127.0.0.1:``port``."""
        ...

    def restart(self) -> None: ...
    def close(self) -> None: ...


class PrivatePostgres:
    def __init__(self, path: Path, *, logical: bool = False) -> None:
        try:
            pgserver: Any = importlib.import_module("pgserver")
            self._commands: Any = importlib.import_module("pgserver._commands")
        except ImportError as exc:  # pragma: no cover - dev dependency
            raise RuntimeError("chaos needs pgserver: pip install pgserver") from exc
        self.server: Any = pgserver.get_server(str(path), cleanup_mode="delete")
        if logical:
            # Logical decoding needs wal_level=logical, which only a restart applies.
            conn = database_for(self.url).connect(self.url, label="outboxkit-chaos")
            try:
                conn.execute("ALTER SYSTEM SET wal_level = logical")
            finally:
                conn.close()
            self.restart()

    @property
    def url(self) -> str:
        return str(self.server.get_uri())

    @property
    def unix_socket(self) -> str:
        # pgserver listens on a socket only, in the directory its URL names, on the default port.
        directory = self.url.split("host=", 1)[1].split("&", 1)[0]
        return f"{directory}/.s.PGSQL.5432"

    def tcp_url(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def restart(self) -> None:
        self._commands.pg_ctl(
            ["-w", "-t", "60", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )
        # pgserver waits only 10 s for the start; a loaded 2-core machine can need more. Retry.
        for attempt in range(3):
            try:
                self.server.ensure_postgres_running()
                return
            except Exception:
                if attempt == 2:
                    raise
                time.sleep(1.0)

    def close(self) -> None:
        self.server.cleanup()


def mariadb_binaries() -> tuple[str, str] | None:
    """(mariadbd, mariadb-install-db), or None when this machine has no MariaDB server."""
    path = "/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")
    server, install = shutil.which("mariadbd", path=path), shutil.which("mariadb-install-db", path=path)
    return (server, install) if server and install else None


class PrivateMariaDb:
    """A throw-away MariaDB on a Unix socket, with the row binlog the binlog relay needs."""

    def __init__(self, root: Path) -> None:
        binaries = mariadb_binaries()
        if binaries is None:
            raise RuntimeError("chaos --capture binlog needs mariadbd and mariadb-install-db")
        self.server_binary, install = binaries
        self.root = root
        self.data = root / "data"
        self.socket = root / "sock"
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        args = [install, "--no-defaults", f"--datadir={self.data}", "--user=root", "--skip-test-db"]
        args.append("--auth-root-authentication-method=normal")
        subprocess.run(args, check=True, capture_output=True, timeout=120)
        self.start()

    @property
    def url(self) -> str:
        return f"mysql://root@localhost/test?unix_socket={self.socket}"

    @property
    def unix_socket(self) -> str:
        return str(self.socket)

    def tcp_url(self, port: int) -> str:
        # The server sees the proxy's socket connection: root@localhost, as for the socket URL.
        return f"mysql://root@127.0.0.1:{port}/test"

    def start(self) -> None:
        args = [self.server_binary, "--no-defaults", f"--datadir={self.data}", f"--socket={self.socket}"]
        args += ["--skip-networking", "--user=root", f"--log-bin={self.data}/pmb", "--binlog-format=ROW"]
        args += ["--binlog-row-metadata=FULL", "--server-id=1", "--innodb-buffer-pool-size=32M"]
        args += [f"--pid-file={self.root}/pid", "--max-allowed-packet=64M"]
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        admin = self.url.replace("/test?", "/mysql?")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                conn = database_for(admin).connect(admin, label="outboxkit-chaos")
                try:
                    conn.execute("CREATE DATABASE IF NOT EXISTS test")
                finally:
                    conn.close()
                return
            time.sleep(0.1)
        raise RuntimeError((self.root / "server.log").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
