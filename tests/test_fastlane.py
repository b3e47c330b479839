"""The publish fast lane takes only what the full path (marshmallow) takes, and loads it the same."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError, fields, validate

from workerrmq.api import schemas
from workerrmq.api.fastlane import Lane, plain_publish_request

KEYS = [
    "body",
    "body_base64",
    "content_type",
    "headers",
    "message_id",
    "correlation_id",
    "priority",
    "expiration",
    "persistent",
    "routing_key",
    "messages",
    "bogus",
    "",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 300),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 5.0, 255.0]),
    st.text(max_size=20),
    st.text(min_size=250, max_size=300),
    st.just("é" * 130),
    st.sampled_from(["a\r\nb", "\x00", "\x7f", "tab\there", "\x1f"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=130), inner, max_size=3),
    max_leaves=8,
)
messages = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)
requests = st.one_of(
    messages,
    st.builds(
        lambda batch, extra: {"messages": batch, **extra},
        st.lists(messages, max_size=3) | values,
        st.dictionaries(st.sampled_from(KEYS), values, max_size=2),
    ),
    values,
)


def assert_loaded_alike(fast: dict[str, Any], full: dict[str, Any]) -> None:
    """The fast lane loaded what the schema loads. For a batch, the messages and the routing
    key: the schema also fills a single message's defaults at the top, which a batch ignores."""
    if "messages" in fast or "messages" in full:
        assert fast.get("messages") == full.get("messages")
        assert fast.get("routing_key", "") == full.get("routing_key", "")
    else:
        assert fast == full


def _full_path(raw: bytes, routed: bool) -> dict[str, Any] | None:
    schema = schemas.ExchangePublishRequest() if routed else schemas.PublishRequest()
    try:
        return schema.load(json.loads(raw))
    except ValidationError:
        return None


@pytest.mark.parametrize("routed", [False, True])
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_the_fast_lane_takes_nothing_the_full_path_refuses(routed, request):
    raw = json.dumps(request).encode()  # stdlib: big integers too
    fast = plain_publish_request(raw, routed=routed)
    if fast is None:
        return  # the full path decides, with its own error messages
    full = _full_path(raw, routed)
    assert full is not None, f"the fast lane took what the schema refuses: {request!r}"
    assert_loaded_alike(fast, full)


@pytest.mark.parametrize(
    "body",
    [
        {"body": "hello"},
        {"body": {"order": 7}, "headers": {"tenant": "acme", "n": 3}, "priority": 5},
        {"body_base64": "aGk=", "message_id": "m-1", "persistent": False, "expiration": 60000},
        {"messages": [{"body": "a"}, {"body": "b", "correlation_id": "c"}]},
    ],
)
def test_plain_requests_take_the_fast_lane(body):
    fast = plain_publish_request(orjson.dumps(body), routed=False)
    full = _full_path(orjson.dumps(body), routed=False)
    assert fast is not None and full is not None
    assert_loaded_alike(fast, full)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"body": "x", "body_base64": "eA=="}',  # both bodies
        b'{"messages": []}',
        b'{"body": "x", "priority": 256}',
        b'{"body": "x", "priority": 5.0}',  # the schema takes it; the fast lane leaves it to the schema
        b'{"body": "x", "message_id": ""}',
        b'{"body": "x", "headers": {"n": 18446744073709551616}}',
        b'{"body": 18446744073709551616}',  # orjson would read it as a float
        b'{"body": "x", "headers": {"n": -9223372036854775809}}',  # below int64: a float too
        b'{"body": -9223372036854775809}',
        b'{"body": "\\ud800"}',  # a lone surrogate
        b'{"body": NaN}',
        b'{"body": "x", "routing_key": "k"}',  # only the exchange route takes a routing key
        b"[1, 2]",
        b'{"body": "x", "content_type": "text/plain\\r\\nX-Injected: 1"}',  # sent on as a header
        b'{"body": "x", "message_id": "m\\u0000"}',
        b'{"body": "x", "correlation_id": "c\\n"}',
        b'{"messages": [{"body": "x", "correlation_id": "c\\u007f"}]}',
    ],
)
def test_anything_unusual_takes_the_full_path(raw):
    assert plain_publish_request(raw, routed=False) is None


@pytest.mark.parametrize(
    "raw",
    [
        b'{"body": "x", "routing_key": "k\\r"}',
        b'{"messages": [{"body": "x"}], "routing_key": "k\\n"}',
        b'{"messages": [{"body": "x", "routing_key": "k\\u0000"}]}',
    ],
)
def test_control_characters_in_a_routing_key_take_the_full_path(raw):
    assert plain_publish_request(raw, routed=True) is None
    assert _full_path(raw, routed=True) is None


@pytest.mark.parametrize("field", ["content_type", "message_id", "correlation_id"])
@pytest.mark.parametrize("value", ["a\r", "a\n", "\x00", "a\x01b", "\x7f", "a\tb", "é"])
def test_both_paths_agree_on_control_characters(field, value):
    """The schema refuses what an HTTP header value cannot hold (tab aside); the fast lane
    takes exactly the values the schema takes."""
    raw = json.dumps({"body": "x", field: value}).encode()
    full = _full_path(raw, routed=False)
    assert (full is not None) == (value in ("a\tb", "é"))
    assert plain_publish_request(raw, routed=False) == full


def test_the_lane_takes_its_limits_from_the_schema():
    """A bound changed in the schema changes the lane: nothing in it restates one."""

    class Tighter(schemas.Message):
        priority = schemas.StrictInteger(validate=validate.Range(min=0, max=9))

    class TighterRequest(Tighter):
        messages = fields.List(fields.Nested(Tighter), validate=validate.Length(min=1, max=2))

    lane = Lane(TighterRequest(), Tighter())
    assert lane.load({"body": "x", "priority": 9}) == {"body": "x", "priority": 9, "persistent": True}
    assert lane.load({"body": "x", "priority": 10}) is None
    assert lane.load({"messages": [{"body": "x"}] * 2}) is not None
    assert lane.load({"messages": [{"body": "x"}] * 3}) is None


def test_a_field_the_lane_cannot_check_stops_it_being_built():
    class WithDate(schemas.Message):
        sent_at = fields.DateTime()

    with pytest.raises(TypeError, match="DateTime"):
        Lane(schemas.PublishRequest(), WithDate())
