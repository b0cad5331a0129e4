"""docs/fleet.md: its fleet file parses as written, its [fleet] block states the defaults the code
has, and the bad-file line it shows is the one the parser gives."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from outboxkit.errors import ConfigurationError
from outboxkit.fleet.config import FleetSettings, parse_fleet

PAGE = Path(__file__).resolve().parents[2] / "docs" / "fleet.md"


def fleet_block() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", PAGE.read_text(), re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_example_parses_with_every_database() -> None:
    spec = parse_fleet(fleet_block())
    assert [o.tenant for o in spec.outboxes] == ["acme", "globex", "initech", "hooli"]
    globex = spec.by_tenant()["globex"]
    assert globex.topic_prefix == "globex." and globex.tenant_attribute and globex.weight == 2


def test_the_fleet_block_states_the_defaults() -> None:
    shown = tomllib.loads(fleet_block())["fleet"]
    defaults = dataclasses.asdict(FleetSettings())
    for name, value in shown.items():
        if name != "broker":
            assert defaults[name] == value, name


def test_the_bad_file_line_is_the_parsers() -> None:
    text = fleet_block().replace("weight = 2", "weight = 0")
    with pytest.raises(ConfigurationError) as caught:
        parse_fleet(text, name="fleet file fleet.toml")
    assert f"error: {caught.value}" in PAGE.read_text()
