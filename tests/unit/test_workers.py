"""``outboxkit relay --workers N``: the decisions (names, ports, restart timing) and the settings."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from outboxkit.config import resolve
from outboxkit.core.workers import (
    RESTART_CAP,
    STABLE_AFTER,
    RestartPolicy,
    fatal,
    ports_fit,
    split_owner,
    worker_owner,
    worker_port,
)
from outboxkit.errors import ConfigurationError
from outboxkit.relay.loop import RelayConfig
from outboxkit.workers import WorkerSpec


def test_owner_names_say_supervisor_and_worker() -> None:
    owner = worker_owner("web-1:4242:a1b2c3", 3)
    assert owner == "web-1:4242:a1b2c3/w3"
    assert split_owner(owner) == ("web-1:4242:a1b2c3", 3)
    # A relay started on its own (host:pid:random) or named by hand is no worker.
    for plain in ("web-1:4242:a1b2c3", "relay-a", "a/w0", "a/wx", "/w1"):
        assert split_owner(plain) is None, plain


def test_ports_count_up_from_the_base() -> None:
    assert [worker_port(9464, i) for i in (1, 2, 3)] == [9464, 9465, 9466]
    assert worker_port(0, 2) == 0  # off stays off
    assert ports_fit(0, 64) and ports_fit(65533, 3)
    assert not ports_fit(65534, 3)


def test_only_a_configuration_exit_is_final() -> None:
    assert fatal(2)
    assert not any(fatal(rc) for rc in (0, 1, 130, -9, -15))


def test_restarts_back_off_and_a_stable_run_starts_over() -> None:
    policy = RestartPolicy(rng=random.Random(1))
    quick = [policy.delay(0.5) for _ in range(12)]
    ceilings = [min(RESTART_CAP, 0.5 * 2**i) for i in range(12)]
    for delay, ceiling in zip(quick, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert quick[-1] >= RESTART_CAP / 2
    assert policy.delay(STABLE_AFTER) <= 0.5  # it ran long enough: the first restart's wait again


def test_spec_round_trips_as_json() -> None:
    spec = WorkerSpec(
        index=2,
        workers=3,
        supervisor_pid=7,
        db="postgresql://u:secret@h/db",
        broker="nats://h:4222",
        table="outbox",
        schema="app",
        source="/s",
        relay=RelayConfig(window=10, owner="h:7:abc/w2"),
        http_port=9465,
    )
    assert WorkerSpec.from_json(spec.to_json()) == spec
    assert spec.name == "w2" and spec.ref.qualified == '"app"."outbox"'


def test_workers_setting_flag_over_env_over_file(tmp_path: Path) -> None:
    toml = tmp_path / "outboxkit.toml"
    toml.write_text("[relay]\nworkers = 2\n")
    assert resolve({}, environ={}).workers == 1  # default: one relay process, as before
    assert resolve({}, config_file=str(toml), environ={}).workers == 2
    assert resolve({}, config_file=str(toml), environ={"OUTBOXKIT_WORKERS": "3"}).workers == 3
    assert resolve({"workers": 4}, config_file=str(toml), environ={"OUTBOXKIT_WORKERS": "3"}).workers == 4


@pytest.mark.parametrize(("value", "expect"), [(0, "at least 1"), ("many", "must be a number"), (65, "at most 64")])
def test_bad_workers_setting_is_a_configuration_error(value: object, expect: str) -> None:
    with pytest.raises(ConfigurationError, match=expect):
        resolve({"workers": value}, environ={})
