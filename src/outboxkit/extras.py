"""Which pip extra brings which optional module, so a missing one is reported as the install line
that fixes it instead of a traceback.

A base install (``pip install outboxkit``) has the CLI, SQLite and the operator commands; every
other database, bus and the lab come with an extra (``pip install "outboxkit[postgres,nats]"``).
"""

from __future__ import annotations

#: top-level module name -> the extra that installs it
MODULE_EXTRAS: dict[str, str] = {
    "psycopg": "postgres",
    "psycopg_binary": "postgres",
    "pymysql": "mysql",
    "asyncmy": "mysql",
    "pymysqlreplication": "binlog",
    "sqlalchemy": "sqlalchemy",
    "nats": "nats",
    "aio_pika": "rabbitmq",
    "aiormq": "rabbitmq",
    "pamqp": "rabbitmq",
    "confluent_kafka": "kafka",
    "redis": "redis",
    "aiomqtt": "mqtt",
    "paho": "mqtt",
    "jinja2": "dashboard",
    "markupsafe": "dashboard",
    "faststream": "faststream",
    "fast_depends": "faststream",
}


def extra_for(exc: BaseException) -> str | None:
    """The extra whose absence raised ``exc`` (an ``ImportError``), or None if it is not ours to name."""
    if not isinstance(exc, ImportError):
        return None
    name = (getattr(exc, "name", None) or "").split(".")[0]
    return MODULE_EXTRAS.get(name)


def install_hint(extra: str) -> str:
    """The one line that fixes a missing extra."""
    return f"pip install 'outboxkit[{extra}]'"


def missing_extra_message(exc: BaseException) -> str | None:
    """``this needs the postgres extra: pip install 'outboxkit[postgres]' (no module psycopg)``, or None."""
    extra = extra_for(exc)
    if extra is None:
        return None
    module = (getattr(exc, "name", None) or "?").split(".")[0]
    return f"this needs the {extra} extra: {install_hint(extra)} (module {module!r} is not installed)"


__all__ = ["MODULE_EXTRAS", "extra_for", "install_hint", "missing_extra_message"]
