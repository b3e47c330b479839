"""Pure delivery rules, no I/O: outcomes, backoff, delay tiers, Retry-After, the circuit
breaker, Standard Webhooks signatures and the headers an endpoint receives."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import random
import statistics
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from workerrmq.core.consumer import ConsumerSpec
from workerrmq.core.policy import (
    DEFAULT_RETRY_ON,
    DELAY_TIERS,
    RetryPolicy,
    Verdict,
    classify,
    compute_backoff,
    parse_retry_after,
    pick_tier,
    retry_floor,
)
from workerrmq.core.protocol import HTTP_PREFIX
from workerrmq.core.signing import secret_bytes, sign, signature_headers
from workerrmq.core.status import CircuitState
from workerrmq.worker.circuit import CircuitBreaker
from workerrmq.worker.delivery import USER_AGENT, Attempt, Target

# -- classify ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status):
    assert classify(status, None, DEFAULT_RETRY_ON) is Verdict.DELIVERED


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_default_retryable_statuses_retry(status):
    assert classify(status, f"HTTP {status}", DEFAULT_RETRY_ON) is Verdict.RETRY


@pytest.mark.parametrize(
    "status", [300, 301, 302, 304, 307, 308, 400, 401, 403, 404, 409, 410, 413, 422, 451]
)
def test_redirects_and_other_4xx_dead_letter_at_once(status):
    assert classify(status, f"HTTP {status}", DEFAULT_RETRY_ON) is Verdict.DEAD_LETTER


@pytest.mark.parametrize("error", ["connection", "timeout"])
def test_transport_errors_retry_by_default(error):
    assert classify(None, error, DEFAULT_RETRY_ON) is Verdict.RETRY


@pytest.mark.parametrize("error", ["client", None, "something else"])
def test_other_transport_errors_are_permanent(error):
    assert classify(None, error, DEFAULT_RETRY_ON) is Verdict.DEAD_LETTER


def test_custom_retry_on_list():
    retry_on = ("404", "503")
    assert classify(404, "HTTP 404", retry_on) is Verdict.RETRY
    assert classify(503, "HTTP 503", retry_on) is Verdict.RETRY
    # Not listed: "5xx" is absent, so other server errors are permanent, and so is 429.
    assert classify(500, "HTTP 500", retry_on) is Verdict.DEAD_LETTER
    assert classify(429, "HTTP 429", retry_on) is Verdict.DEAD_LETTER
    assert classify(None, "timeout", retry_on) is Verdict.DEAD_LETTER
    assert classify(None, "connection", retry_on) is Verdict.DEAD_LETTER
    assert classify(200, None, retry_on) is Verdict.DELIVERED


def test_empty_retry_on_dead_letters_everything_but_success():
    assert classify(503, "HTTP 503", ()) is Verdict.DEAD_LETTER
    assert classify(None, "connection", ()) is Verdict.DEAD_LETTER
    assert classify(204, None, ()) is Verdict.DELIVERED


def test_5xx_token_covers_every_server_error_but_no_client_error():
    retry_on = ("5xx",)
    assert all(classify(s, "x", retry_on) is Verdict.RETRY for s in (500, 501, 503, 511, 599))
    assert classify(499, "x", retry_on) is Verdict.DEAD_LETTER
    assert classify(408, "x", retry_on) is Verdict.DEAD_LETTER


# -- compute_backoff ----------------------------------------------------------------------


def test_backoff_doubles_from_initial_delay_and_is_capped():
    policy = RetryPolicy(initial_delay=1.0, max_delay=20.0, jitter=0.0)
    waits = [compute_backoff(n, policy) for n in range(1, 8)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


def test_backoff_defaults_match_the_spec():
    policy = RetryPolicy(jitter=0.0)
    assert policy.max_attempts == 8
    assert compute_backoff(1, policy) == 1.0
    assert compute_backoff(2, policy) == 2.0
    assert compute_backoff(13, policy) == 3600.0  # 2**12 s would be beyond the one-hour cap


def test_backoff_from_a_short_initial_delay():
    policy = RetryPolicy(initial_delay=0.05, max_delay=0.3, jitter=0.0)
    assert [compute_backoff(n, policy) for n in (1, 2, 3, 4, 5)] == pytest.approx([0.05, 0.1, 0.2, 0.3, 0.3])


def test_jitter_stays_within_bounds_and_varies():
    policy = RetryPolicy(initial_delay=10.0, max_delay=3600.0, jitter=0.2)
    rng = random.Random(1234)
    waits = [compute_backoff(1, policy, rng=rng) for _ in range(2000)]
    assert all(8.0 <= w <= 12.0 for w in waits)
    assert min(waits) < 8.4 and max(waits) > 11.6  # the whole band is used
    assert statistics.mean(waits) == pytest.approx(10.0, abs=0.1)


def test_jitter_is_reproducible_with_a_seeded_rng():
    policy = RetryPolicy(initial_delay=4.0, jitter=0.5)
    first = [compute_backoff(n, policy, rng=random.Random(7)) for n in (1, 2, 3)]
    again = [compute_backoff(n, policy, rng=random.Random(7)) for n in (1, 2, 3)]
    assert first == again


def test_jitter_never_exceeds_max_delay():
    policy = RetryPolicy(initial_delay=1.0, max_delay=30.0, jitter=0.5)
    rng = random.Random(99)
    waits = [compute_backoff(20, policy, rng=rng) for _ in range(1000)]
    assert all(15.0 <= w <= 30.0 for w in waits)


def test_retry_after_raises_the_wait():
    policy = RetryPolicy(initial_delay=1.0, max_delay=3600.0, jitter=0.0)
    assert compute_backoff(1, policy, retry_after=120.0) == 120.0
    # A shorter Retry-After than the backoff does not shorten it.
    assert compute_backoff(5, policy, retry_after=1.0) == 16.0


def test_retry_after_never_beyond_max_delay():
    policy = RetryPolicy(initial_delay=1.0, max_delay=60.0, jitter=0.2)
    rng = random.Random(5)
    assert compute_backoff(1, policy, retry_after=86_400.0, rng=rng) == 60.0


# -- pick_tier ----------------------------------------------------------------------------


def test_tiers_are_sorted_and_cover_the_default_range():
    assert list(DELAY_TIERS) == sorted(DELAY_TIERS)
    assert DELAY_TIERS[-1] >= RetryPolicy().max_delay
    assert DELAY_TIERS[0] <= 0.05


@pytest.mark.parametrize("delay", [0.0, 0.001, DELAY_TIERS[0]])
def test_waits_below_the_range_use_the_shortest_tier(delay):
    rng = random.Random(0)
    assert {pick_tier(delay, rng=rng) for _ in range(50)} == {DELAY_TIERS[0]}


@pytest.mark.parametrize("delay", [DELAY_TIERS[-1], DELAY_TIERS[-1] + 1, 1e9])
def test_waits_above_the_range_use_the_longest_tier(delay):
    rng = random.Random(0)
    assert {pick_tier(delay, rng=rng) for _ in range(50)} == {DELAY_TIERS[-1]}


@pytest.mark.parametrize("tier", DELAY_TIERS)
def test_exact_tiers_always_pick_themselves(tier):
    rng = random.Random(42)
    assert {pick_tier(tier, rng=rng) for _ in range(200)} == {tier}


@pytest.mark.parametrize("delay", [0.07, 0.3, 1.5, 3.0, 5.0, 45.0, 1000.0, 2500.0])
def test_tier_is_a_neighbour_and_the_mean_is_the_wanted_delay(delay):
    rng = random.Random(2024)
    picks = [pick_tier(delay, rng=rng) for _ in range(20_000)]
    low = max(t for t in DELAY_TIERS if t <= delay)
    high = min(t for t in DELAY_TIERS if t >= delay)
    assert set(picks) == {low, high}
    # Randomised rounding keeps the expectation: the mean is the wanted wait.
    assert statistics.fmean(picks) == pytest.approx(delay, rel=0.02)


def test_pick_tier_with_custom_tiers():
    rng = random.Random(3)
    picks = [pick_tier(2.5, (1, 2, 4), rng=rng) for _ in range(10_000)]
    assert set(picks) == {2, 4}
    assert statistics.fmean(picks) == pytest.approx(2.5, rel=0.02)


@pytest.mark.parametrize("retry_after", [1.0, 3.0, 5.0, 7.0, 45.0, 1000.0])
def test_retry_after_is_a_minimum_never_rounded_down(retry_after):
    """A wait between two tiers still goes to either, except below a Retry-After."""
    policy = RetryPolicy(initial_delay=0.05, max_delay=3600.0)
    rng = random.Random(11)
    for attempt in range(1, 6):
        delay = compute_backoff(attempt, policy, retry_after=retry_after, rng=rng)
        floor = retry_floor(retry_after, policy)
        picks = {pick_tier(delay, at_least=floor, rng=rng) for _ in range(500)}
        assert min(picks) >= retry_after, (attempt, sorted(picks))


def test_retry_after_of_five_seconds_waits_eight_not_four():
    rng = random.Random(17)
    picks = {pick_tier(5.0, at_least=5.0, rng=rng) for _ in range(1000)}
    assert picks == {8}


def test_backoff_above_retry_after_keeps_its_weighted_rounding():
    # A 45 s backoff with a 20 s Retry-After: both neighbours (30, 60) are >= 20.
    rng = random.Random(5)
    picks = [pick_tier(45.0, at_least=20.0, rng=rng) for _ in range(20_000)]
    assert set(picks) == {30, 60}
    assert statistics.fmean(picks) == pytest.approx(45.0, rel=0.02)


def test_retry_after_beyond_every_tier_takes_the_longest():
    assert pick_tier(9000.0, (1, 2, 4), at_least=9000.0) == 4


def test_retry_floor_is_capped_like_the_backoff():
    policy = RetryPolicy(max_delay=60.0)
    assert retry_floor(None, policy) == 0.0
    assert retry_floor(5.0, policy) == 5.0
    assert retry_floor(86_400.0, policy) == 60.0


# -- parse_retry_after --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds", [("0", 0.0), ("5", 5.0), ("120", 120.0), (" 30 ", 30.0), ("86400", 86400.0)]
)
def test_retry_after_seconds(value, seconds):
    assert parse_retry_after(value) == seconds


def test_retry_after_http_date_relative_to_now():
    now = dt.datetime(2015, 10, 21, 7, 28, 0, tzinfo=dt.UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 08:28:00 GMT", now=now) == 3600.0
    # A date in the past means "now", never a negative wait.
    assert parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=now) == 0.0


def test_retry_after_http_date_with_an_offset():
    now = dt.datetime(2015, 10, 21, 7, 28, 0, tzinfo=dt.UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 09:29:00 +0200", now=now) == 60.0


@pytest.mark.parametrize(
    "value", [None, "", "   ", "soon", "-5", "1.5", "later today", "Wed, 99 Foo 2015", "²", "5s"]
)
def test_retry_after_garbage_is_none(value):
    assert parse_retry_after(value) is None


# -- circuit breaker ----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_circuit_opens_after_threshold_consecutive_failures():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown=10.0, clock=clock)
    assert breaker.state is CircuitState.CLOSED
    breaker.record(False)
    breaker.record(False)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.remaining() == 0.0
    breaker.record(False)
    assert breaker.state is CircuitState.OPEN
    assert breaker.remaining() == 10.0


def test_success_resets_the_failure_count():
    breaker = CircuitBreaker(threshold=3, cooldown=10.0, clock=FakeClock())
    for _ in range(5):
        breaker.record(False)
        breaker.record(False)
        breaker.record(True)
        assert breaker.failures == 0
        assert breaker.state is CircuitState.CLOSED


def test_circuit_half_opens_after_the_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=10.0, clock=clock)
    breaker.record(False)
    breaker.record(False)
    clock.now += 9.5
    assert breaker.state is CircuitState.OPEN
    assert breaker.remaining() == pytest.approx(0.5)
    clock.now += 0.5
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.remaining() == 0.0


def test_failure_in_half_open_reopens_for_a_full_cooldown():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=2, cooldown=10.0, clock=clock)
    breaker.record(False)
    breaker.record(False)
    clock.now += 11
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.record(False)  # the probe failed
    assert breaker.state is CircuitState.OPEN
    assert breaker.remaining() == 10.0
    clock.now += 10
    assert breaker.state is CircuitState.HALF_OPEN


def test_one_failure_in_half_open_reopens_even_with_a_high_threshold():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown=5.0, clock=clock)
    for _ in range(3):
        breaker.record(False)
    clock.now += 5
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.record(True)
    assert breaker.state is CircuitState.CLOSED
    # Closed again: it takes the full threshold to open once more.
    breaker.record(False)
    breaker.record(False)
    assert breaker.state is CircuitState.CLOSED


def test_success_in_half_open_closes():
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown=3.0, clock=clock)
    breaker.record(False)
    assert breaker.state is CircuitState.OPEN
    clock.now += 3
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.record(True)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.failures == 0
    assert breaker.remaining() == 0.0


# -- signing ------------------------------------------------------------------------------

RAW_KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(RAW_KEY).decode()


def test_signature_verifies_with_the_standard_webhooks_library():
    body = json.dumps({"order": 42, "lines": ["a", "b"], "note": "café"}).encode()
    headers = signature_headers(secret_bytes(SECRET), "msg_2Lk8", int(time.time()), body)
    assert headers["webhook-id"] == "msg_2Lk8"
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body.decode(), headers) == json.loads(body)


def test_a_wrong_secret_or_changed_body_does_not_verify():
    body = b'{"n": 1}'
    headers = signature_headers(secret_bytes(SECRET), "msg_1", int(time.time()), body)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body.decode(), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify('{"n": 2}', headers)


def test_known_answer_from_the_standard_webhooks_spec():
    # The worked example of the Standard Webhooks / Svix documentation.
    key = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_known_answer_computed_with_hmac():
    key = b"a plain secret key"
    body = b"hello world"
    expected = base64.b64encode(
        hmac.new(key, b"msg_abc.1700000000.hello world", hashlib.sha256).digest()
    ).decode()
    assert sign(key, "msg_abc", 1700000000, body) == f"v1,{expected}"


def test_non_utf8_bodies_are_signed_over_the_raw_bytes():
    body = b"\xff\xfe\x00\x80binary\xc3"
    signature = sign(RAW_KEY, "msg_bin", 1700000001, body)
    expected = hmac.new(RAW_KEY, b"msg_bin.1700000001." + body, hashlib.sha256).digest()
    assert signature == "v1," + base64.b64encode(expected).decode()
    lossy = body.decode("utf-8", "replace").encode()
    assert signature != sign(RAW_KEY, "msg_bin", 1700000001, lossy)


def test_secret_bytes():
    assert secret_bytes(SECRET) == RAW_KEY
    assert secret_bytes("not-a-whsec-secret") == b"not-a-whsec-secret"
    with pytest.raises(ValueError):
        secret_bytes("whsec_!!!not base64!!!")


def test_unpadded_whsec_secret_is_accepted_like_the_reference_library():
    key = b"sixteen byte key"  # 16 bytes: standard base64 ends in "=="
    unpadded = "whsec_" + base64.b64encode(key).decode().rstrip("=")
    assert secret_bytes(unpadded) == key
    body = b'{"ok": true}'
    headers = signature_headers(secret_bytes(unpadded), "msg_u", int(time.time()), body)
    assert Webhook(unpadded).verify(body.decode(), headers) == {"ok": True}


# -- the request headers ---------------------------------------------------------------------


def build_headers(spec: ConsumerSpec, attempt: Attempt, queue: str, now: int) -> dict[str, str]:
    return Target(spec, queue).headers(attempt, now)


def make_spec(**overrides) -> ConsumerSpec:
    values = {
        "id": "c0ffee",
        "name": "orders",
        "queue": "orders",
        "target_url": "http://127.0.0.1:9/hook",
        "headers": {"Authorization": "Bearer abc", "X-Team": "payments"},
    }
    values.update(overrides)
    return ConsumerSpec(**values)


def make_attempt(**overrides) -> Attempt:
    values = {
        "message_id": "m-1",
        "number": 3,
        "body": b'{"a": 1}',
        "content_type": "application/json",
        "headers": {},
        "correlation_id": "corr-9",
        "routing_key": "orders",
        "redelivered": True,
    }
    values.update(overrides)
    return Attempt(**values)


def test_prefix_headers_describe_the_message():
    headers = build_headers(make_spec(), make_attempt(), "orders", 1700000000)
    assert headers["Content-Type"] == "application/json"
    assert headers[f"{HTTP_PREFIX}Message-Id"] == "m-1"
    assert headers[f"{HTTP_PREFIX}Correlation-Id"] == "corr-9"
    assert headers[f"{HTTP_PREFIX}Queue"] == "orders"
    assert headers[f"{HTTP_PREFIX}Routing-Key"] == "orders"
    assert headers[f"{HTTP_PREFIX}Attempt"] == "3"
    assert headers[f"{HTTP_PREFIX}Redelivered"] == "true"
    # The consumer's own extra headers are sent too.
    assert headers["Authorization"] == "Bearer abc"
    assert headers["X-Team"] == "payments"
    assert headers["User-Agent"] == USER_AGENT


def test_a_consumer_may_send_its_own_user_agent():
    spec = make_spec(headers={"User-Agent": "orders-relay/2"})
    assert build_headers(spec, make_attempt(), "orders", 0)["User-Agent"] == "orders-relay/2"


def test_defaults_without_content_type_or_correlation_id():
    attempt = make_attempt(content_type=None, correlation_id=None, redelivered=False, number=1)
    headers = build_headers(make_spec(), attempt, "orders", 1700000000)
    assert headers["Content-Type"] == "application/octet-stream"
    assert f"{HTTP_PREFIX}Correlation-Id" not in headers
    assert headers[f"{HTTP_PREFIX}Redelivered"] == "false"
    assert headers[f"{HTTP_PREFIX}Attempt"] == "1"


def test_amqp_headers_are_forwarded_under_the_prefix():
    amqp_headers = {
        "tenant": "acme",
        "count": 5,
        "flag": True,
        "nested": {"a": 1},
        "raw": b"bytes value",
        "tenant.region": "eu",
    }
    headers = build_headers(make_spec(), make_attempt(headers=amqp_headers), "orders", 0)
    prefix = f"{HTTP_PREFIX}Header-"
    assert headers[prefix + "tenant"] == "acme"
    assert headers[prefix + "count"] == "5"
    assert headers[prefix + "flag"] == "true"
    assert json.loads(headers[prefix + "nested"]) == {"a": 1}
    assert headers[prefix + "raw"] == "bytes value"
    assert headers[prefix + "tenant_region"] == "eu"  # names are made token-safe


def test_internal_and_dead_letter_headers_are_not_forwarded():
    amqp_headers = {
        "x-workerrmq-attempts": 2,
        "x-workerrmq-message-id": "ours",
        "x-death": [{"count": 1, "queue": "workerrmq.delay.1000ms"}],
        "x-first-death-queue": "workerrmq.delay.1000ms",
        "x-first-death-reason": "expired",
        "x-last-death-exchange": "workerrmq.delay.1000ms",
        "kept": "yes",
    }
    headers = build_headers(make_spec(), make_attempt(headers=amqp_headers), "orders", 0)
    forwarded = {k for k in headers if k.startswith(f"{HTTP_PREFIX}Header-")}
    assert forwarded == {f"{HTTP_PREFIX}Header-kept"}
    assert not any("death" in k.lower() for k in headers)


def test_header_values_are_printable_ascii():
    amqp_headers = {"city": "Zürich", "multi": "line one\r\nline two", "tab": "a\tb", "emoji": "ok 👍"}
    headers = build_headers(make_spec(), make_attempt(headers=amqp_headers), "orders", 0)
    for name, value in headers.items():
        assert value.isascii() and value.isprintable(), (name, value)
    prefix = f"{HTTP_PREFIX}Header-"
    # Escaped, not mangled: the original text can be recovered.
    assert json.loads(headers[prefix + "city"]) == "Zürich"
    assert json.loads(headers[prefix + "multi"]) == "line one\r\nline two"
    assert json.loads(headers[prefix + "emoji"]) == "ok 👍"


def test_signature_headers_only_with_a_secret():
    plain = build_headers(make_spec(), make_attempt(), "orders", int(time.time()))
    assert not {"webhook-id", "webhook-timestamp", "webhook-signature"} & plain.keys()

    now = int(time.time())
    attempt = make_attempt()
    signed = build_headers(make_spec(signing_secret=SECRET), attempt, "orders", now)
    assert signed["webhook-id"] == attempt.message_id
    assert signed["webhook-timestamp"] == str(now)
    assert Webhook(SECRET).verify(attempt.body.decode(), signed) == {"a": 1}


def test_webhook_id_is_stable_across_attempts():
    spec = make_spec(signing_secret=SECRET)
    now = int(time.time())
    first = build_headers(spec, make_attempt(number=1), "orders", now)
    later = build_headers(spec, make_attempt(number=5, redelivered=True), "orders", now + 60)
    assert first["webhook-id"] == later["webhook-id"] == "m-1"
    assert first["webhook-signature"] != later["webhook-signature"]  # new timestamp, new MAC
