"""Item 9 of the hardening issue: secrets in every URL form stay out of every line a process writes."""

from __future__ import annotations

import pytest

from outboxkit.testing.servers import free_port
from tests.integration.test_cli import run

SECRETS = ("PgS3cretPw", "NatsT0kenXyz", "KwS3cretPw", "SaslS3cretPw")


@pytest.mark.parametrize(
    "args",
    [
        # unreachable database with a password (the relay fails at start-up, unavailable)
        ["relay", "--db", "postgresql://u:PgS3cretPw@127.0.0.1:{port}/db", "--broker", "nats://127.0.0.1:{port}"],
        # NATS token; the database is fine (SQLite), the broker is not reachable
        ["relay", "--db", "sqlite:///{tmp}/x.db", "--broker", "nats://NatsT0kenXyz@127.0.0.1:{port}"],
        # a libpq keyword DSN is not a URL: refused, without echoing its password
        ["relay", "--db", "host=127.0.0.1 password=KwS3cretPw dbname=x", "--broker", "nats://127.0.0.1:{port}"],
        # Kafka SASL password in the query string
        ["relay", "--db", "sqlite:///{tmp}/x.db", "--broker", "kafka://127.0.0.1:{port}?sasl_password=SaslS3cretPw"],
        ["status", "--db", "postgresql://u:PgS3cretPw@127.0.0.1:{port}/db"],
    ],
)
def test_item9_secrets_never_reach_stderr_or_stdout(args: list[str], tmp_path: object) -> None:
    port = str(free_port())
    filled = [a.format(port=port, tmp=tmp_path) for a in args]
    if "sqlite" in " ".join(filled):
        run("migrate", "--db", f"sqlite:///{tmp_path}/x.db")
    for extra in ([], ["-v"], ["--debug"]):
        result = run(*extra, *filled, timeout=60)
        assert result.returncode != 0
        output = result.stdout + result.stderr
        for secret in SECRETS:
            assert secret not in output, (extra, output[-2000:])
