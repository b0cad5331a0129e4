"""NATS JetStream provisioning: the stream the relay publishes into.

A subject that no stream captures cannot be published with confirmation (the relay reports it
as unroutable and keeps the events pending), so the relay needs a stream over its topics:

* **file storage** — a memory stream loses every message on a server restart (H7);
* a **duplicate window** (2 minutes unless ``--duplicate-window``): JetStream drops a re-sent copy
  with the same ``Nats-Msg-Id`` inside it, which absorbs the relay's re-sends after a crash (G4, G6);
* ``--replicas N`` for a clustered stream (R3 survives the loss of a server).

Idempotent: an existing stream of that name gets the subjects it lacks; a subject another stream
already captures is left to that stream (JetStream refuses overlapping streams). Settings not asked
for are never changed on an existing stream. The server's ``sync_interval`` (fsync) is server
configuration, not a stream setting: see docs/buses/nats.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import nats.errors
import nats.js.errors
from nats.js.api import StorageType, StreamConfig

from outboxkit.brokers.nats.client import connect, split_options
from outboxkit.brokers.provision import DEFAULT_DUPLICATE_WINDOW, ProvisionRequest, Step, seconds
from outboxkit.core.urls import redact_url
from outboxkit.errors import ConfigurationError, UnavailableError

_TOKEN = re.compile(r"[^A-Za-z0-9_-]")
_OVERLAP = 10065  # JetStream: subjects overlap with an existing stream


def default_stream_name(topics: Sequence[str]) -> str:
    """``orders.>`` -> ``ORDERS``: the first token of the first topic, upper-cased."""
    first = topics[0].split(".", 1)[0] if topics else ""
    name = _TOKEN.sub("_", first).upper().strip("_")
    if not name:
        raise ConfigurationError(f"cannot name a stream after {topics[0]!r}: pass --stream NAME")
    return name


def covers(pattern: str, subject: str) -> bool:
    """Whether every subject matching ``subject`` (itself maybe a pattern) also matches ``pattern``,
    with NATS wildcards: ``*`` one token, ``>`` one or more trailing tokens."""
    want, have = pattern.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have):
            return False
        if part == "*":
            if have[i] == ">":
                return False
            continue
        if part != have[i]:
            return False
    return len(have) == len(want)


def _describe(config: StreamConfig) -> str:
    storage = config.storage.value if isinstance(config.storage, StorageType) else str(config.storage)
    return (
        f"subjects {', '.join(config.subjects or [])}; {storage} storage; "
        f"duplicate window {seconds(float(config.duplicate_window or 0))}; "
        f"{config.num_replicas or 1} replica(s)"
    )


async def provision(url: str, request: ProvisionRequest, *, dry_run: bool) -> list[Step]:
    """Create or complete the JetStream stream over ``request.topics`` (see the module docstring)."""
    if not request.topics:
        raise ConfigurationError("provision needs at least one --topic")
    for topic in request.topics:
        if "#" in topic or "+" in topic:
            raise ConfigurationError(f"{topic!r} is not a NATS subject pattern: NATS wildcards are * and >")
    name = request.stream or default_stream_name(request.topics)
    nc = await connect(split_options(url)[0], name="outboxkit-provision")
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            info = None
        except (nats.errors.Error, OSError) as exc:
            raise UnavailableError(f"JetStream at {redact_url(url)} did not answer: {exc}") from None
        if info is not None:
            return await _complete(js, info.config, request, dry_run=dry_run)
        steps: list[Step] = []
        missing: list[str] = []
        for topic in request.topics:
            try:
                other = await js.find_stream_name_by_subject(topic)
            except nats.js.errors.NotFoundError:
                missing.append(topic)
                continue
            steps.append(Step("unchanged", "stream", other, f"already captures {topic}; left as it is"))
        if not missing:
            return steps
        config = StreamConfig(
            name=name,
            subjects=missing,
            storage=StorageType.FILE,
            duplicate_window=request.duplicate_window or DEFAULT_DUPLICATE_WINDOW,
            num_replicas=request.replicas or 1,
        )
        if not dry_run:
            try:
                await js.add_stream(config=config)
            except nats.js.errors.APIError as exc:
                raise ConfigurationError(f"JetStream refused stream {name}: {exc.description}") from None
        steps.append(Step("create", "stream", name, _describe(config)))
        return steps
    finally:
        await nc.close()


async def _complete(js: object, config: StreamConfig, request: ProvisionRequest, *, dry_run: bool) -> list[Step]:
    """An existing stream: add the subjects it lacks and apply the settings asked for explicitly."""
    name = config.name or "?"
    changes: list[str] = []
    subjects = list(config.subjects or [])
    for topic in request.topics:
        if not any(covers(existing, topic) for existing in subjects):
            subjects.append(topic)
            changes.append(f"add subject {topic}")
    if request.duplicate_window is not None and float(config.duplicate_window or 0) != request.duplicate_window:
        changes.append(f"duplicate window {seconds(request.duplicate_window)}")
        config.duplicate_window = request.duplicate_window
    if request.replicas is not None and (config.num_replicas or 1) != request.replicas:
        changes.append(f"{request.replicas} replica(s)")
        config.num_replicas = request.replicas
    steps: list[Step] = []
    if config.storage == StorageType.MEMORY:
        steps.append(
            Step(
                "warning",
                "stream",
                name,
                "uses memory storage: a server restart loses every message (H7). Storage cannot be changed "
                "in place: create a new stream with file storage and move the subjects to it",
            )
        )
    if not changes:
        return [Step("unchanged", "stream", name, _describe(config)), *steps]
    config.subjects = subjects
    if not dry_run:
        try:
            await js.update_stream(config=config)  # type: ignore[attr-defined]
        except nats.js.errors.APIError as exc:
            if getattr(exc, "err_code", None) == _OVERLAP:
                raise ConfigurationError(
                    f"cannot add {', '.join(request.topics)} to stream {name}: another stream captures them"
                ) from None
            raise ConfigurationError(f"JetStream refused to update stream {name}: {exc.description}") from None
    return [Step("update", "stream", name, "; ".join(changes)), *steps]


__all__ = ["covers", "default_stream_name", "provision"]
