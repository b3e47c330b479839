"""One consumer inside a worker: take messages from its queue, deliver, then ack.

A message is acked only after its endpoint answered 2xx, or after it was
republished with a confirm to a delay queue (retry) or to the dead-letter
queue. If anything dies before that, the broker delivers it again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiormq
from aiolimiter import AsyncLimiter
from aiormq.abc import DeliveredMessage

from workerrmq import metrics
from workerrmq.broker.republish import Republisher, RepublishFailed
from workerrmq.core.consumer import ConsumerSpec
from workerrmq.core.filter import PROPERTIES, CompiledFilter, FilterError, FilterEvalError, compile_filter
from workerrmq.core.policy import Verdict, classify, compute_backoff, pick_tier, retry_floor
from workerrmq.core.status import CircuitState, RunnerStatus
from workerrmq.store.consumers import StatsReport
from workerrmq.worker.acks import Settler
from workerrmq.worker.attempt_log import AttemptLog
from workerrmq.worker.batch import Batcher, prefetch
from workerrmq.worker.circuit import CircuitBreaker
from workerrmq.worker.delivery import Attempt, DeliveryResult, Http, Target
from workerrmq.worker.ordered import (
    HOLD_LIMIT,
    AttemptLedger,
    Progress,
    message_key,
    single_active_queues,
)

__all__ = ["ConsumerRunner"]

log = logging.getLogger(__name__)
#: A consumer whose filter keeps failing on messages logs it at most this often (seconds).
FILTER_ERROR_LOG_EVERY = 60.0


class _Metrics:
    """One consumer's Prometheus series (labelled children are made once, not per message)."""

    def __init__(self, consumer: str) -> None:
        self.outcomes = {
            outcome: metrics.DELIVERIES.labels(consumer, outcome) for outcome in metrics.OUTCOMES
        }
        self.duration = metrics.DELIVERY_DURATION.labels(consumer)
        self.in_flight = metrics.IN_FLIGHT.labels(consumer)
        self.circuit_open = metrics.CIRCUIT_OPEN.labels(consumer)


class ConsumerRunner:
    """Runs one :class:`ConsumerSpec` on one AMQP channel, which :meth:`start` is given."""

    _republisher: Republisher  # the one of the channel's connection, given by start()

    def __init__(
        self,
        spec: ConsumerSpec,
        *,
        http: Http,
        stats: StatsReport | None = None,
        on_trouble: Callable[[], None] = lambda: None,
        guard: bool = False,
        attempt_log: AttemptLog | None = None,
    ) -> None:
        self.spec = spec
        self._attempt_log = attempt_log
        self._on_trouble = on_trouble
        self._target = Target(spec, spec.queue, guard=guard)
        self._http = http
        self._policy = spec.retry_policy()
        self._filter = _compiled(spec.filter)
        self._filter_error_logged: float | None = None  # when a failing filter was last logged
        self._circuit = CircuitBreaker(spec.circuit_threshold, spec.circuit_cooldown)
        self._limiter = AsyncLimiter(1, 1 / spec.rate_limit) if spec.rate_limit else None
        self._prefetch = 1 if spec.ordered else prefetch(spec)
        self._batcher = Batcher(spec, send=self._try_batch) if spec.batch else None
        # aiormq's channel, without aio-pika's wrapper: 7 KB less per consumer, which
        # counts with thousands of consumers on every engine.
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._settler: Settler | None = None
        self._tag: str | None = None
        self._accepting = False
        self._ledger: AttemptLedger | None = None  # an ordered consumer's, opened at first use
        self._halt = asyncio.Event()  # set at stop: an ordered consumer's wait ends early
        # Set once start() has declared the dead-letter queue, which it does after the consume:
        # a delivery waits for it, so that no message is dead-lettered before its queue exists.
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()  # deliveries in flight
        self._background: set[asyncio.Task[None]] = set()
        self._reopen: asyncio.TimerHandle | None = None
        self._status = RunnerStatus.STARTING
        self.stats = stats or StatsReport(consumer_id=spec.id)
        self._metrics: _Metrics | None = None  # made at the first delivery: idle consumers cost none
        self._latencies: collections.deque[float] | None = None  # made at the first delivery
        self._latencies_new = False  # a latency was added since report() last read them

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def status(self) -> RunnerStatus:
        """What the runner is doing; only the runner changes it."""
        return self._status

    async def start(self, channel: aiormq.abc.AbstractChannel, republisher: Republisher) -> bool:
        """Consume on *channel* (the runner's from now on: :meth:`stop` closes it), sending
        failed messages through *republisher*; False (status ``queue_missing``) if the queue
        is absent."""
        self._republisher = republisher
        channel.on_consumer_cancel_callbacks.add(self._on_broker_cancel)
        self._channel = channel
        self._settler = Settler(channel)
        try:
            # No passive declare of the queue first: the consume fails on a queue that does
            # not exist (and closes the channel, as the declare did), and the dead-letter queue
            # is declared after it, so none is made for a missing queue. One round trip and one
            # broker operation less per consumer, which count with thousands at start.
            try:
                await self._consume(self._prefetch)
            except aiormq.exceptions.ChannelNotFoundEntity:
                self._accepting = False
                self._status = RunnerStatus.QUEUE_MISSING
                return False
            dlq = self.spec.dead_letter_queue
            if dlq not in republisher.unavailable:
                try:
                    await channel.queue_declare(dlq, durable=True)
                except aiormq.exceptions.ChannelNotFoundEntity as exc:
                    republisher.note_unavailable(dlq, exc)  # its node is down
                    raise
        except BaseException:
            self._accepting = False  # the deliveries held meanwhile are not made: the broker has them back
            raise
        finally:
            self._ready.set()
        channel.closing.add_done_callback(self._on_channel_closed)
        return True

    def refuse(self, reason: str) -> None:
        """Record that no channel could be had: the runner does not run, and its status
        (``no_capacity``) and last error say why."""
        self._status = RunnerStatus.NO_CAPACITY
        self.stats.last_error = f"cannot run: {reason}"[:500]
        self.stats.last_error_at = dt.datetime.now(dt.UTC)

    async def stop(self, *, grace: float | None = None, close_channel: bool = True) -> None:
        """Stop taking messages, let in-flight deliveries finish (up to *grace* s), close.

        With *close_channel* False the channel is left open for its connection's close, which
        closes all its channels in one exchange with the broker (the engine's stop: closing
        10,000 channels one by one took most of half a minute); the acks and requeues of the
        deliveries are handed to the connection all the same.
        """
        self._status = RunnerStatus.STOPPING
        if self._reopen is not None:
            self._reopen.cancel()
        if self.spec.ordered:
            # Hold the queue until the channel closes, which hands the message held here
            # back to the head of the queue: cancelling first would let the next consumer
            # take the messages behind it.
            self._accepting = False
            self._halt.set()
        elif close_channel or self._tasks:
            await self._cancel_consumer()
        else:
            # Idle, and the connection's close comes next, which cancels every consumer on
            # it (a Basic.Cancel each took seconds with thousands): a message that arrives
            # meanwhile is held, and that close hands it back to its queue.
            self._accepting = False
        if self._batcher is not None:
            self._batcher.flush()  # a partial batch goes now, not after its wait
        if self._tasks:
            timeout = grace if grace is not None else self.spec.timeout + 5
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
        if self._settler is not None:
            with contextlib.suppress(Exception):
                await self._settler.flush()
        if close_channel and self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def adopt(self, spec: ConsumerSpec) -> None:
        """Take *spec*, a version of this consumer that differs only in how many
        deliveries may be in flight (or in nothing the runner uses), without a restart."""
        changed = spec.concurrency != self.spec.concurrency
        self.spec = spec
        self._prefetch = 1 if spec.ordered else prefetch(spec)
        if self._batcher is not None:
            self._batcher.in_flight = spec.concurrency
        if changed and self._status is RunnerStatus.CONSUMING:
            await self._reconsume(self._prefetch)

    def start_failed(self, reason: str) -> None:
        """Record that the broker refused the start (the engine tries again): status
        ``start_failed``, and the last error says why."""
        self._status = RunnerStatus.START_FAILED
        self.stats.last_error = f"cannot start: {reason}"[:500]
        self.stats.last_error_at = dt.datetime.now(dt.UTC)

    def invalid(self, problem: str) -> None:
        """Record that the definition cannot be delivered with: the runner takes no
        message (they stay in the queue), and its status and last error say why."""
        self._status = RunnerStatus.INVALID_DEFINITION
        self.stats.last_error = f"invalid definition: {problem}"[:500]
        self.stats.last_error_at = dt.datetime.now(dt.UTC)

    @property
    def healthy(self) -> bool:
        """False once the channel is gone and the runner needs restarting."""
        if self._status is RunnerStatus.INVALID_DEFINITION:
            return True  # nothing to restart: a new version of the definition replaces it
        return (
            self._channel is not None
            and not self._channel.is_closed
            and self._status is not RunnerStatus.QUEUE_MISSING
        )

    def report(self) -> StatsReport:
        self.stats.in_flight = len(self._tasks)
        if self._metrics is not None:
            self._metrics.in_flight.set(len(self._tasks))
            self._metrics.circuit_open.set(0 if self._circuit.state is CircuitState.CLOSED else 1)
        self.stats.circuit = self._circuit.state.value
        self.stats.status = self._status
        if self._latencies and self._latencies_new:
            # Only when something was delivered since: an idle consumer's figures stand.
            self._latencies_new = False
            ordered = sorted(self._latencies)
            self.stats.latency_p50_ms = statistics.median(ordered) * 1000
            self.stats.latency_p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
        return self.stats

    # -- consuming --------------------------------------------------------------------------

    async def _consume(self, prefetch: int, status: RunnerStatus = RunnerStatus.CONSUMING) -> None:
        assert self._channel is not None
        await self._channel.basic_qos(prefetch_count=prefetch)
        self._status = status
        self._accepting = True
        # aiormq's own consumer: it runs each delivery in a task of its own, and
        # the delivery is handled in that task without an aio-pika message around it.
        if self.spec.ordered:
            ok = await self._consume_alone()
        else:
            ok = await self._channel.basic_consume(self.spec.queue, self._on_message, no_ack=False)
        self._tag = ok.consumer_tag

    async def _consume_alone(self) -> aiormq.spec.Basic.ConsumeOk:
        """Consume as the queue's only consumer (see :mod:`workerrmq.worker.ordered`): the
        broker refuses this while another consumer holds the queue, and the engine retries."""
        assert self._channel is not None
        queue = self.spec.queue
        if queue in single_active_queues:
            return await self._channel.basic_consume(queue, self._on_message, no_ack=False)
        declared = await self._channel.queue_declare(queue, passive=True)
        try:
            return await self._channel.basic_consume(queue, self._on_message, no_ack=False, exclusive=True)
        except aiormq.exceptions.ChannelAccessRefused:
            if declared is not None and declared.consumer_count == 0:
                single_active_queues.add(queue)  # refused with nobody there: a single-active queue
            self._status = RunnerStatus.WAITING_FOR_QUEUE
            raise

    async def _cancel_consumer(self) -> None:
        self._accepting = False
        tag, self._tag = self._tag, None
        if tag and self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.basic_cancel(tag)

    def _on_broker_cancel(self, _frame: object) -> None:
        # The broker cancels consumers of a deleted queue; the engine restarts us.
        self._accepting = False
        self._tag = None
        self._status = RunnerStatus.QUEUE_MISSING
        self._on_trouble()

    def _on_channel_closed(self, *_: object) -> None:
        # E.g. the broker's consumer timeout: unacked messages go back to the queue. An
        # ordered consumer refused its queue waits for the engine's next round instead.
        if self._status not in (RunnerStatus.STOPPING, RunnerStatus.WAITING_FOR_QUEUE):
            self._accepting = False
            self._status = RunnerStatus.CHANNEL_CLOSED
            self._on_trouble()

    async def _on_message(self, message: DeliveredMessage) -> None:
        settler, tag = self._settler, message.delivery_tag
        assert settler is not None and tag is not None
        settler.track(tag)
        if not self._ready.is_set():
            await self._ready.wait()  # start() declares the dead-letter queue after the consume
        if not self._accepting:
            if self._status is RunnerStatus.STOPPING and (self.spec.ordered or self._tag is not None):
                # Still subscribed (an ordered consumer, or a stop that leaves the cancel to
                # the connection's close): the channel's close hands it back, in place.
                return
            # Arrived after we stopped consuming: hand it back once, untouched.
            settler.requeue(tag)
            return
        # Remember the task aiormq runs this delivery in, so that a stop can wait for it.
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if await self._handle(message):
                settler.ack(tag)
            else:
                settler.requeue(tag)
        finally:
            self._tasks.discard(task)

    # -- one message -------------------------------------------------------------------------

    async def _handle(self, message: DeliveredMessage) -> bool:
        """Deliver, retry or dead-letter *message*; False if it must go back to its queue."""
        try:
            if self._filter is not None and not self._passes(self._filter, message):
                return True  # acked, not delivered
            if self.spec.ordered:
                return await self._deliver_in_order(message)
            if self._batcher is not None and self._batcher.takes(message):
                await self._deliver_batched(message, self._batcher)
            else:
                await self._deliver(message)
        except RepublishFailed as exc:
            # The broker is in trouble; the message comes back when it recovers.
            log.warning("consumer %s: %s; the message goes back to the queue", self.spec.name, exc)
            return False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug of ours that this message triggers would trigger again: dead-letter it
            # rather than requeue it into a hot loop.
            log.exception("consumer %s: unexpected error; dead-lettering the message", self.spec.name)
            return await self._dead_letter_now(message, f"internal error: {type(exc).__name__}: {exc}")
        return True

    def _passes(self, compiled: CompiledFilter, message: DeliveredMessage) -> bool:
        """Whether *message* passes the consumer's filter. One that does not is counted as
        ``filtered``; one the expression fails on (a type mismatch, say) as ``filter_errors``,
        logged at most every :data:`FILTER_ERROR_LOG_EVERY` seconds: neither is delivered."""
        properties = message.header.properties
        given = _filter_properties(properties) if "properties" in compiled.uses else None
        try:
            if compiled.matches(message.routing_key or "", properties.headers, given, message.body):
                return True
        except FilterEvalError as exc:
            self._count("filter_errors")
            now = time.monotonic()
            if self._filter_error_logged is None or now - self._filter_error_logged >= FILTER_ERROR_LOG_EVERY:
                self._filter_error_logged = now
                log.warning(
                    "consumer %s: the filter failed on message %s (%s); counted in filter_errors, "
                    "not delivered (logged at most once a minute)",
                    self.spec.name,
                    properties.message_id,
                    exc,
                )
            return False
        self._count("filtered")
        return False

    async def _dead_letter_now(self, message: DeliveredMessage, reason: str) -> bool:
        """Dead-letter *message* without an attempt; False if even that failed."""
        try:
            await self._republisher.dead_letter(
                message,
                dlq=self.spec.dead_letter_queue,
                source_queue=self.spec.queue,
                message_id=str(message.header.properties.message_id or ""),
                attempts=0,
                status=None,
                error=reason,
                consumer=self.spec.name,
            )
        except Exception:  # noqa: BLE001 - last resort: let the broker keep it
            return False
        self._count("dead_lettered")
        return True

    async def _deliver(self, message: DeliveredMessage) -> None:
        """Deliver *message* once; on failure schedule its retry in a delay queue or dead-letter it;
        the caller then acks it."""
        attempt = Attempt.of(message)
        result, verdict = await self._try(attempt)
        if verdict is Verdict.DELIVERED:
            await self._reply(message, result)
            return
        await self._after_failure(message, attempt, result, verdict)

    async def _deliver_batched(self, message: DeliveredMessage, batcher: Batcher) -> None:
        """Deliver *message* in a batch; if the batch failed, send it alone through the
        retry path whatever the failure was (its own delivery decides what it means)."""
        attempt, result, verdict = await batcher.deliver(message)
        if verdict is not Verdict.DELIVERED:
            await self._after_failure(message, attempt, result, Verdict.RETRY)

    async def _try_batch(self, request: Attempt, size: int) -> tuple[DeliveryResult, Verdict]:
        """Make one batch request of *size* messages and account for it: one request for
        the circuit, *size* deliveries for the statistics."""
        result, verdict = await self._try(request)
        if verdict is Verdict.DELIVERED and size > 1:
            self.stats.delivered += size - 1
            self._series().outcomes["delivered"].inc(size - 1)
        return result, verdict

    async def _reply(self, message: DeliveredMessage, result: DeliveryResult) -> None:
        """With ``reply``, publish the endpoint's answer to the message's ``reply_to``; a
        reply no queue takes is counted and logged (the message is acked all the same)."""
        properties = message.header.properties
        if not self.spec.reply or not properties.reply_to:
            return
        routed = await self._republisher.reply(
            properties.reply_to,
            result.answer or b"",
            content_type=result.answer_type,
            correlation_id=properties.correlation_id,
        )
        self._count("replies" if routed else "replies_unroutable")
        if not routed:
            log.warning("consumer %s: no queue took the reply to %r", self.spec.name, properties.reply_to)

    async def _after_failure(
        self, message: DeliveredMessage, attempt: Attempt, result: DeliveryResult, verdict: Verdict
    ) -> None:
        """Retry *message* through a delay queue, or dead-letter it once its attempts are used up
        or the failure is permanent."""
        if verdict is Verdict.RETRY and attempt.number < self._policy.max_attempts:
            delay = compute_backoff(attempt.number, self._policy, retry_after=result.retry_after)
            self._count("retried")
            await self._republisher.retry(
                message,
                queue=self.spec.queue,
                message_id=attempt.message_id,
                attempts=attempt.number,
                tier=pick_tier(delay, at_least=retry_floor(result.retry_after, self._policy)),
            )
            return
        reason = "attempts exhausted" if verdict is Verdict.RETRY else "permanent failure"
        await self._dead_letter(
            message,
            attempt.message_id,
            attempt.number,
            result.status,
            f"{reason}: {result.error}: {result.detail}",
        )

    async def _deliver_in_order(self, message: DeliveredMessage) -> bool:
        """Deliver *message*, retrying in place with every attempt counted in the attempt
        ledger first; True when it is done with (delivered or dead-lettered), False to hand it
        back to the head of the queue (a wait beyond :data:`HOLD_LIMIT`, or a stop)."""
        ledger = await self._open_ledger()
        attempt = Attempt.of(message)
        key = message_key(message)
        known = ledger.last if ledger.last is not None else await ledger.read()
        progress = Progress.resume(known, key, attempt.number - 1)
        while True:
            number = progress.attempts + 1
            if number > self._policy.max_attempts:
                # Counted out on earlier deliveries, e.g. by workers that died meanwhile.
                await self._dead_letter(
                    message,
                    attempt.message_id,
                    progress.attempts,
                    progress.status,
                    f"attempts exhausted: {progress.error}",
                )
                return True
            if not await self._hold(progress.wait()):
                return False
            progress = dataclasses.replace(progress, attempts=number, due=0.0)
            await ledger.write(progress)  # counted before it is made
            attempt = dataclasses.replace(attempt, number=number)
            result, verdict = await self._try(attempt)
            if verdict is Verdict.DELIVERED:
                await self._reply(message, result)
                return True
            error = f"{result.error}: {result.detail}"
            if verdict is not Verdict.RETRY or number >= self._policy.max_attempts:
                reason = "attempts exhausted" if verdict is Verdict.RETRY else "permanent failure"
                await self._dead_letter(
                    message, attempt.message_id, number, result.status, f"{reason}: {error}"
                )
                return True
            delay = compute_backoff(number, self._policy, retry_after=result.retry_after)
            progress = dataclasses.replace(
                progress, due=time.time() + delay, status=result.status, error=error[:300]
            )
            await ledger.write(progress)
            self._count("retried")

    async def _open_ledger(self) -> AttemptLedger:
        if self._ledger is None:
            ledger = AttemptLedger(self._republisher.channel, self.spec.id)
            await ledger.declare()
            self._ledger = ledger
        return self._ledger

    async def _hold(self, seconds: float) -> bool:
        """Wait *seconds* in place; False if the wait is longer than :data:`HOLD_LIMIT` (after
        waiting that long) or the runner stops meanwhile: the message is then handed back."""
        if seconds <= 0:
            return not self._halt.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halt.wait(), timeout=min(seconds, HOLD_LIMIT))
        return not self._halt.is_set() and seconds <= HOLD_LIMIT

    async def _try(self, attempt: Attempt) -> tuple[DeliveryResult, Verdict]:
        """Make one attempt and account for it (circuit, statistics)."""
        result = await self._attempt(attempt)
        verdict = classify(result.status, result.error, self._policy.retry_on)
        self._circuit.record(verdict is Verdict.DELIVERED)
        self._after_circuit_change()
        if verdict is Verdict.DELIVERED:
            self._count("delivered")
        else:
            self._note_failure(result)
        if self._attempt_log is not None:
            self._log_attempt(attempt, result, verdict)
        return result, verdict

    def _log_attempt(self, attempt: Attempt, result: DeliveryResult, verdict: Verdict) -> None:
        """Note *attempt* in the attempt log, with what becomes of its message."""
        assert self._attempt_log is not None
        if verdict is Verdict.DELIVERED:
            outcome = "delivered"
        elif verdict is Verdict.RETRY and attempt.number < self._policy.max_attempts:
            outcome = "retry"
        else:
            outcome = "dead_lettered"
        self._attempt_log.note(
            consumer_id=self.spec.id,
            consumer=self.spec.name,
            message_id=attempt.message_id,
            attempt=attempt.number,
            seconds=result.seconds,
            status=result.status,
            error=result.error,
            outcome=outcome,
            response=result.detail,
        )

    async def _dead_letter(
        self, message: DeliveredMessage, message_id: str, attempts: int, status: int | None, error: str
    ) -> None:
        await self._republisher.dead_letter(
            message,
            dlq=self.spec.dead_letter_queue,
            source_queue=self.spec.queue,
            message_id=message_id,
            attempts=attempts,
            status=status,
            error=error.strip(": "),
            consumer=self.spec.name,
        )
        self._count("dead_lettered")

    async def _attempt(self, attempt: Attempt) -> DeliveryResult:
        if self._limiter is not None:
            await self._limiter.acquire()
        result = await self._target.send(self._http, attempt)
        if result.status is not None and 200 <= result.status < 300:
            if self._latencies is None:
                self._latencies = collections.deque(maxlen=2048)
            self._latencies.append(result.seconds)
            self._latencies_new = True
            self._series().duration.observe(result.seconds)
        return result

    def _count(self, outcome: str) -> None:
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        self._series().outcomes[outcome].inc()

    def _series(self) -> _Metrics:
        if self._metrics is None:
            self._metrics = _Metrics(self.spec.name)
        return self._metrics

    def _note_failure(self, result: DeliveryResult) -> None:
        self.stats.failed += 1
        self.stats.last_error = f"{result.error}: {result.detail}"[:500]
        self.stats.last_error_at = dt.datetime.now(dt.UTC)

    # -- circuit breaker -----------------------------------------------------------------------

    def _after_circuit_change(self) -> None:
        state = self._circuit.state
        if state is CircuitState.OPEN and self._accepting:
            log.warning(
                "consumer %s: circuit open after %d failures; pausing %.0fs",
                self.spec.name,
                self._circuit.failures,
                self._circuit.cooldown,
            )
            self._status = RunnerStatus.CIRCUIT_OPEN
            self._spawn(self._cancel_consumer())
            self._schedule_probe()
        elif state is CircuitState.CLOSED and self._tag is not None and self._status is RunnerStatus.PROBING:
            self._status = RunnerStatus.CONSUMING
            self._spawn(self._reconsume(self._prefetch))

    def _schedule_probe(self) -> None:
        loop = asyncio.get_running_loop()
        self._reopen = loop.call_later(self._circuit.remaining(), lambda: self._spawn(self._probe()))

    async def _probe(self) -> None:
        """Half-open: take one message at a time until one is delivered."""
        if self._status is not RunnerStatus.CIRCUIT_OPEN or self._channel is None or self._channel.is_closed:
            return
        await self._consume(1, status=RunnerStatus.PROBING)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run *coro* in the background, holding a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reconsume(self, prefetch: int) -> None:
        """Consume again with another prefetch: RabbitMQ applies basic.qos only to
        consumers started after it, so the running consumer is replaced."""
        if self._channel is None or self._channel.is_closed or self._tag is None:
            return
        with contextlib.suppress(Exception):
            await self._cancel_consumer()
            await self._consume(prefetch)


def _compiled(expression: str | None) -> CompiledFilter | None:
    """The consumer's filter, compiled; None without one. One that does not compile (stored
    before today's rules) never gets here: the engine marks the definition invalid first."""
    if not expression:
        return None
    try:
        return compile_filter(expression)
    except FilterError:
        return None


def _filter_properties(properties: Any) -> dict[str, Any]:
    """A message's properties as a filter's ``properties`` sees them."""
    found = {name: getattr(properties, name, None) for name in PROPERTIES if name != "type"}
    found["type"] = properties.message_type
    return found
