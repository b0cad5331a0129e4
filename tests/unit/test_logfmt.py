"""Log formats: JSON lines parse, fixed keys come first, and no secret reaches the output."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from outboxkit.core.logfmt import (
    JsonFormatter,
    PlainFormatter,
    configure_logging,
    formatter_for,
    redact_text,
)

SECRET = "s3cr3t-value"


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    # A private, non-propagating logger: configuring it cannot disturb pytest's root handlers or
    # another test running in the same worker.
    log = logging.getLogger(f"outboxkit.test_logfmt.{id(object())}")
    log.propagate = False
    yield log
    for handler in log.handlers[:]:
        log.removeHandler(handler)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_line_has_fixed_keys_and_extras(logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "json", out, logger=logger)

    logger.info("relay started: %d rows", 5, extra={"topic": "orders.created", "batch": 3, "ratio": 0.5})
    logger.debug("not shown at INFO")

    [line] = lines(out)
    doc = json.loads(line)
    assert list(doc)[:4] == ["time", "level", "logger", "message"]
    assert doc["level"] == "INFO"
    assert doc["logger"] == logger.name
    assert doc["message"] == "relay started: 5 rows"
    assert doc["time"].endswith("Z")
    assert (doc["topic"], doc["batch"], doc["ratio"]) == ("orders.created", 3, 0.5)


def test_json_traceback_stays_on_one_line(logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "json", out, logger=logger)
    try:
        raise RuntimeError(f"cannot reach postgresql://app:{SECRET}@db/prod")
    except RuntimeError:
        logger.exception("publish failed\nsecond line")

    [line] = lines(out)
    doc = json.loads(line)
    assert "RuntimeError" in doc["exc"]
    assert doc["message"] == "publish failed\nsecond line"
    assert SECRET not in line


def test_extras_cannot_override_fixed_keys(logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "json", out, logger=logger)
    # "message" and "asctime" are refused by logging itself; "level" and "time" are not.
    logger.warning("real", extra={"level": "fake", "time": "fake"})
    doc = json.loads(lines(out)[0])
    assert (doc["level"], doc["time"] != "fake") == ("WARNING", True)


@pytest.mark.parametrize("fmt", ["json", "plain"])
def test_secrets_are_masked(logger: logging.Logger, fmt: str) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, fmt, out, logger=logger)  # type: ignore[arg-type]

    logger.info("connecting to postgresql://app:%s@db:5432/prod", SECRET)
    logger.info(
        "broker ready",
        extra={
            "broker": f"amqp://guest:{SECRET}@rabbit/vhost",
            "db": f"postgresql://app@db/prod?sslmode=require&password={SECRET}",
            "password": SECRET,
            "api_token": SECRET,
            "urls": [f"redis://:{SECRET}@cache:6379/0"],
            "nested": {"secret": SECRET, "url": f"nats://u:{SECRET}@nats:4222"},
            "key": "customer-7",  # the event key is not a secret and stays readable
        },
    )

    text = out.getvalue()
    assert SECRET not in text
    assert "postgresql://app:***@db:5432/prod" in text
    assert "amqp://guest:***@rabbit/vhost" in text
    assert "customer-7" in text
    if fmt == "json":
        doc = json.loads(lines(out)[1])
        assert doc["password"] == doc["api_token"] == doc["nested"]["secret"] == "***"
        assert doc["urls"] == ["redis://:***@cache:6379/0"]
        assert doc["db"] == "postgresql://app@db/prod?sslmode=require&password=***"


def test_plain_format_appends_fields(logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "plain", out, logger=logger)
    logger.warning("topic paused", extra={"topic": "orders.created", "delay": 1.5})
    [line] = lines(out)
    assert f"WARNING {logger.name}: topic paused" in line
    assert line.endswith('topic="orders.created" delay=1.5')


def test_non_json_values_are_made_safe(logger: logging.Logger) -> None:
    out = io.StringIO()
    configure_logging(logging.INFO, "json", out, logger=logger)
    logger.info("odd values", extra={"nan": float("nan"), "obj": object(), "raw": b"bytes"})
    doc = json.loads(lines(out)[0])  # NaN would make the line invalid JSON
    assert doc["nan"] == "nan"
    assert doc["obj"].startswith("<object object")


def test_configure_replaces_handlers(logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(logging.INFO, "plain", first, logger=logger)
    configure_logging(logging.INFO, "json", second, logger=logger)
    logger.info("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["message"] == "once"
    assert len(logger.handlers) == 1


def test_formatter_for() -> None:
    assert isinstance(formatter_for("json"), JsonFormatter)
    assert isinstance(formatter_for("plain"), PlainFormatter)
    with pytest.raises(ValueError, match="json"):
        formatter_for("xml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no url here", "no url here"),
        ("at sqlite:////var/lib/app.db", "at sqlite:////var/lib/app.db"),
        ("'mysql://root:pw@h/db' failed", "'mysql://root:***@h/db' failed"),
        ("a nats://h:4222 and redis://:pw@h:6379", "a nats://h:4222 and redis://:***@h:6379"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
