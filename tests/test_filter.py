"""The filter expression: compiled with the position of a mistake, evaluated on a message.

Pure: no broker, no database. The end-to-end behaviour (filtered messages acked and
counted, a failing expression counted apart) is in tests/test_formats.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workerrmq.core.filter import (
    MAX_EXPRESSION,
    MAX_JSON_BODY,
    PROPERTIES,
    FilterError,
    FilterEvalError,
    compile_filter,
    decode_body,
)

PROPS = {"content_type": "application/json", "message_id": "m-1", "priority": 3}


def matches(expression: str, *, routing_key: str = "order.created", headers=None, props=None, body=b"{}"):
    return compile_filter(expression).matches(routing_key, headers or {}, props or PROPS, body)


@pytest.mark.parametrize(
    ("expression", "line", "column"),
    [
        ("routing_key == ", 1, 16),
        ('headers["a"] == 1 &&& x', 1, 21),
        ('routing_key == "a" &&\n  body.x ==', 2, 12),
        ("msg.body == 1", 1, 1),  # not a variable
        ('routing_key == "a" ||\n  payload.x == 1', 2, 3),
        ('body.items.all(i, i.tags.exists(t, t == "a"))', 1, 26),  # a comprehension in another
    ],
)
def test_a_bad_expression_names_its_position(expression: str, line: int, column: int) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(expression)
    assert isinstance(caught.value, ValueError)  # the API schema turns ValueErrors into 400s
    assert (caught.value.line, caught.value.column) == (line, column)
    assert f"line {line}, column {column}" in str(caught.value)


@pytest.mark.parametrize("expression", ["", "   ", "x" * (MAX_EXPRESSION + 1)])
def test_empty_and_too_long_are_refused(expression: str) -> None:
    with pytest.raises(FilterError):
        compile_filter(expression)


def test_routing_key_headers_properties_and_json_body() -> None:
    expression = (
        'routing_key.startsWith("order.") && headers.region == "eu" '
        '&& properties.content_type == "application/json" && body.amount > 100'
    )
    assert matches(expression, headers={"region": "eu"}, body=b'{"amount": 150}')
    assert not matches(expression, headers={"region": "us"}, body=b'{"amount": 150}')
    assert not matches(expression, headers={"region": "eu"}, body=b'{"amount": 50}')
    assert not matches(expression, routing_key="invoice.x", headers={"region": "eu"}, body=b'{"amount": 150}')


def test_comprehensions_and_absent_properties() -> None:
    assert matches('body.items.exists(i, i.sku == "b")', body=b'{"items": [{"sku": "a"}, {"sku": "b"}]}')
    assert matches('"region" in headers', headers={"region": "eu"})
    assert not matches('"region" in headers', headers={})
    assert matches("properties.reply_to == null")


def test_a_body_that_is_not_json_is_bytes() -> None:
    binary = b"\x00\xffbinary"
    assert decode_body(binary) == binary
    assert matches('body == b"\\x00\\xffbinary"', body=binary)  # NUL bytes kept whole
    assert matches("size(body) == 8", body=binary)
    big = b'"' + b"a" * MAX_JSON_BODY + b'"'
    assert decode_body(big) == big  # over the limit: not decoded


def test_amqp_header_types() -> None:
    headers = {
        "price": decimal.Decimal("12.5"),
        "at": dt.datetime(2024, 5, 1, 12, 0),  # AMQP timestamps come without a zone
        "nested": {"list": [1, "two", b"three"]},
        "raw": b"bytes",
    }
    expression = (
        'headers.price > 12.0 && headers.at == timestamp("2024-05-01T12:00:00Z") '
        '&& headers.nested.list[1] == "two" && headers.raw == b"bytes"'
    )
    assert matches(expression, headers=headers)
    props = {"timestamp": dt.datetime(2024, 5, 1, 12, 0)}
    assert matches('properties.timestamp < timestamp("2025-01-01T00:00:00Z")', props=props)


@pytest.mark.parametrize(
    ("expression", "body"),
    [
        ("body.amount > 100", b'{"amount": "lots"}'),  # string against int
        ("body.amount > 100", b"\x00not json"),  # a field of bytes
        ('headers["absent"] == "x"', b"{}"),  # no such key
        ("body.amount", b'{"amount": 1}'),  # not a bool
    ],
)
def test_an_expression_that_fails_on_a_message_raises_filter_eval_error(expression: str, body: bytes) -> None:
    with pytest.raises(FilterEvalError):
        matches(expression, body=body)


def test_only_the_variables_named_are_built() -> None:
    compiled = compile_filter('routing_key == "a"')
    assert compiled.uses == {"routing_key"}
    # No JSON decoding of a body the expression does not read: a huge body costs nothing.
    assert compiled.matches("a", None, None, b"[" * 10_000_000) is True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.sampled_from(
            list("()[]{}.,!?:-+*/%<>=&|\"'\\ \nabxyz019") + ["all(", ".map(", "body", '"""', "b'"]
        ),
        max_size=2000,
    )
)
def test_compile_of_hostile_input_ends_with_a_result_or_a_filter_error(parts: list[str]) -> None:
    expression = "".join(parts)[:MAX_EXPRESSION]
    with contextlib.suppress(FilterError):
        compile_filter(expression)


@pytest.mark.timeout(30)  # a hang fails here instead of stalling the run
def test_compile_of_deep_nesting_is_refused_not_hung() -> None:
    for expression in ("(" * 2000 + "1" + ")" * 2000, "!" * MAX_EXPRESSION, "[" * 2000 + "]" * 2000):
        with pytest.raises(FilterError):
            compile_filter(expression)


@pytest.mark.parametrize(
    ("expression", "built"),
    [
        ('properties.content_type == "application/json"', ("content_type",)),
        ('has(properties.reply_to) || properties["type"] == "x"', ("reply_to", "type")),
        ('"priority" in properties', PROPERTIES),  # the map as a whole: every property
        ('routing_key == "a"', ()),  # not read at all
    ],
)
def test_only_the_properties_read_by_name_are_built(expression: str, built: tuple[str, ...]) -> None:
    assert set(compile_filter(expression).properties) == set(built)


def test_an_absent_property_read_by_name_is_null() -> None:
    assert matches("properties.reply_to == null && properties.priority == 3")
    assert matches('!("reply_to" in properties) || properties.reply_to == null')


# The library has no cost limit and holds the GIL while it evaluates, on the worker's event
# loop: an expression whose cost grows faster than the message is refused when it is saved.
# Each of these ran for more than 30 s on a message of at most 1 MiB before (map() over 3,000
# items took 1 s; filter(x, x in body) over 150,000 never ended).
@pytest.mark.parametrize(
    ("expression", "column", "why"),
    [
        ("body.items.map(i, i.sku).size() > 0", 12, "map() is not allowed"),
        ('size(body.items.filter(i, i.sku == "a")) > 1', 17, "filter() is not allowed"),
        ("body.items.all(i, i in body.items)", 24, "body inside a comprehension"),
        ('body.items.exists(i, headers.x == "a")', 22, "headers inside a comprehension"),
        (" || ".join(["body.l.size() < 0"] * 33), 1 + 32 * 21, "more than 32 mentions"),
        (" && ".join(["[1].all(x, x > 0)"] * 5), 4 * 21 + 5, "more than 4 comprehensions"),
        ("size(" + " + ".join(["body.s"] * 18) + ") > 0", 5 + 16 * 9 + 8, "more than 16 '+'"),
    ],
)
def test_an_expression_whose_cost_grows_faster_than_the_message_is_refused(
    expression: str, column: int, why: str
) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(expression)
    assert (caught.value.line, caught.value.column) == (1, column), str(caught.value)
    assert why in str(caught.value)


def test_the_cost_rules_leave_ordinary_expressions_alone() -> None:
    items = b'{"items": [{"sku": "a", "n": 2}, {"sku": "b", "n": 1}], "total": 3}'
    for expression in (
        'body.items.exists(i, i.sku == "b" && i.n + 1 > 1) && body.total == 3',
        'body.items.all(i, i.n > 0) && body.items.exists_one(i, i.sku == "a") && routing_key != ""',
        " || ".join(["body.total == 3"] * 32),
        "body.total + 1 + 1 == 5",
    ):
        assert matches(expression, body=items), expression


# The library compiles a matches() pattern again at every message, holding the GIL:
# routing_key.matches("\\w{150}") took 0.26 s a message, 110 of them 31 s.
@pytest.mark.parametrize(
    ("expression", "column", "why"),
    [
        ('routing_key.matches("\\\\w{150}")', 13, "ms to compile"),
        ("routing_key.matches(headers.pattern)", 13, "string literal"),
        ('routing_key.matches("a" + body.p)', 13, "string literal"),
        ('routing_key.matches("(")', 13, "not a valid regex"),
        (" || ".join(['routing_key.matches("^a")'] * 5), 1 + 4 * 29 + 12, "more than 4 matches()"),
    ],
)
def test_a_costly_or_broken_pattern_is_refused(expression: str, column: int, why: str) -> None:
    with pytest.raises(FilterError) as caught:
        compile_filter(expression)
    assert (caught.value.line, caught.value.column) == (1, column), str(caught.value)
    assert why in str(caught.value)


def test_literal_patterns_still_match() -> None:
    assert matches(
        'routing_key.matches("^order\\\\.(created|updated)$") && body.s.matches(r"^x+$")', body=b'{"s": "xx"}'
    )
    assert not matches('routing_key.matches("^invoice")')
