"""Each consumer field's default and bounds are written once, in workerrmq.core.consumer:
the database, the API's schema, the command line, apply's file schema and the README's
table follow it. No broker needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from marshmallow import validate

from workerrmq.api.consumer_schemas import ConsumerFields
from workerrmq.client.declared import schema as apply_schema
from workerrmq.core.consumer import DEFAULTS, FIELDS, ConsumerSpec, dead_letter_queue_for
from workerrmq.core.policy import RETRY_ON_PATTERN, RetryPolicy
from workerrmq.store.models import ConsumerDef

README = Path(__file__).resolve().parent.parent / "README.md"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def test_the_database_defaults_are_the_core_defaults():
    for column in ConsumerDef.__table__.columns:
        if column.name in DEFAULTS and column.default is not None and not column.default.is_callable:
            assert column.default.arg == DEFAULTS[column.name], column.name


def test_the_retry_policy_defaults_are_the_consumer_defaults():
    assert ConsumerSpec(id="c", name="c", queue="q", target_url="http://x/").retry_policy() == RetryPolicy()


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_the_api_schema_takes_its_bounds_and_defaults_from_core(name):
    field = ConsumerFields().fields[name]
    rule = FIELDS[name]
    validators = field.validators + (field.inner.validators if hasattr(field, "inner") else [])
    ranges = [v for v in field.validators if isinstance(v, validate.Range)]
    if rule.minimum is not None:
        assert [(r.min, r.max) for r in ranges] == [(rule.minimum, rule.maximum)]
    lengths = [v.max for v in field.validators if isinstance(v, validate.Length)]
    if rule.max_length is not None:
        assert lengths == [rule.max_length]
    if rule.choices is not None:
        [one_of] = [v for v in validators if isinstance(v, validate.OneOf)]
        assert list(one_of.choices) == list(rule.choices)
    if name in DEFAULTS and DEFAULTS[name] not in ("", None):
        assert field.metadata["default"] == _plain(DEFAULTS[name])


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_the_apply_file_schema_agrees_with_core(name):
    properties = apply_schema()["$defs"]["consumer"]["properties"]
    if name not in properties or "$ref" in properties[name]:
        return  # queue and dead_letter_queue: a queue name, checked as such
    described, rule = properties[name], FIELDS[name]
    if name in DEFAULTS and DEFAULTS[name] != "":
        assert described.get("default") == _plain(DEFAULTS[name])
    assert described.get("minimum") == rule.minimum
    assert described.get("maximum") == rule.maximum
    assert described.get("maxLength", described.get("maxItems")) == rule.max_length
    if rule.choices is not None:
        assert described["enum"] == list(rule.choices)
    if name == "retry_on":
        assert described["items"]["pattern"] == RETRY_ON_PATTERN


def _readme_rows() -> list[tuple[list[str], str]]:
    text = README.read_text()
    table = text[text.index("| field | default | meaning |") :]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        names, default = (cell.strip() for cell in line.strip("|").split("|")[:2])
        rows.append((re.findall(r"`([a-z_]+)`", names), default))
    return rows


def _readme_value(text: str) -> Any:
    text = text.strip()
    if text in ("none", "false", "true"):
        return {"none": None, "false": False, "true": True}[text]
    if text.startswith("`"):
        return text.strip("`")
    return float(text.removesuffix(" s"))


def test_the_readme_table_gives_the_core_defaults():
    shown: dict[str, Any] = {}
    for names, default in _readme_rows():
        names = [name for name in names if name in FIELDS]
        if not names or default.startswith("required"):
            continue
        if len(names) == 1 and default.count("`") > 2:
            shown[names[0]] = re.findall(r"`([^`]+)`", default)
            continue
        values = default.split(", ")
        assert len(values) == len(names), (names, default)
        shown.update((name, _readme_value(value)) for name, value in zip(names, values, strict=True))
    expected = {name: _plain(value) for name, value in DEFAULTS.items()}
    expected["headers"] = None  # "none"
    expected["dead_letter_queue"] = dead_letter_queue_for("<queue>")
    assert shown == expected
