"""Unit tests for judgeval_async._delivery._endpoint and _aimd: deterministic clock, seeded random."""

from __future__ import annotations

import random

import pytest

from judgeval_async._delivery._aimd import AimdLimiter
from judgeval_async._delivery._endpoint import EndpointHealth, EndpointState, Permit, SendResult, Verdict
from judgeval_async._errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def health(clock: Clock, **kwargs: object) -> EndpointHealth:
    options: dict[str, object] = {"clock": clock, "rng": random.Random(7), "max_concurrent": 8}
    options.update(kwargs)
    return EndpointHealth(**options)  # type: ignore[arg-type]


def send(h: EndpointHealth, result: SendResult, key: str = "k", retry_after: float | None = None) -> Verdict:
    permit = h.admit()
    assert permit is not None
    return h.on_result(permit, result, payload_key=key, retry_after=retry_after)


def go_down(h: EndpointHealth, n: int = 3) -> None:
    """Fail requests one at a time until the endpoint is DOWN (at most n)."""
    for i in range(n):
        if h.state is EndpointState.DOWN:
            return
        p = h.admit()
        assert p is not None
        h.on_result(p, SendResult.FAILED, payload_key=f"outage{i}")


# ------------------------------------------------------------------ AIMD
def test_aimd_grows_additively_and_only_when_used() -> None:
    """+1 per window of successes while at least half used; idle single requests do not grow the limit."""
    a = AimdLimiter(max_limit=8, initial_limit=4)
    for _ in range(20):  # one at a time: 1 in flight of 4 is under half
        t = a.try_acquire()
        assert t is not None
        a.on_success(t)
    assert a.limit == 4
    for _ in range(3):  # saturate: every window of `limit` successes adds one
        tickets = [a.try_acquire() for _ in range(a.limit)]
        assert a.try_acquire() is None
        for t in tickets:
            assert t is not None
            a.on_success(t)
    assert a.limit == 7
    for _ in range(50):
        tickets = [a.try_acquire() for _ in range(a.limit)]
        for t in tickets:
            a.on_success(t)  # type: ignore[arg-type]
    assert a.limit == 8  # capped at max


def test_aimd_decreases_once_per_window_of_failures() -> None:
    """A burst of failures from requests in flight together halves the limit once; a later failure again."""
    a = AimdLimiter(max_limit=8, initial_limit=8)
    tickets = [a.try_acquire() for _ in range(8)]
    for t in tickets:
        a.on_failure(t)  # type: ignore[arg-type]
    assert a.limit == 4 and a.decreases == 1
    t = a.try_acquire()
    assert t is not None
    a.on_failure(t)
    assert a.limit == 2
    for _ in range(10):
        t = a.try_acquire()
        assert t is not None
        a.on_failure(t)
    assert a.limit == 1  # floor


def test_aimd_neutral_and_reset() -> None:
    """on_neutral releases without changing the limit; reset returns to the initial limit."""
    a = AimdLimiter(max_limit=8, initial_limit=2)
    t = a.try_acquire()
    assert t is not None and a.in_flight == 1
    a.on_neutral(t)
    assert a.in_flight == 0 and a.limit == 2
    for _ in range(30):
        ts = [a.try_acquire() for _ in range(a.limit)]
        for x in ts:
            a.on_success(x)  # type: ignore[arg-type]
    assert a.limit == 8
    a.reset()
    assert a.limit == 2


def test_aimd_bad_configuration() -> None:
    """Invalid limits raise ConfigError naming the field."""
    with pytest.raises(ConfigError, match="max_concurrent_exports"):
        AimdLimiter(max_limit=0)
    with pytest.raises(ConfigError, match="initial_limit"):
        AimdLimiter(max_limit=2, initial_limit=3)
    with pytest.raises(ConfigError, match="decrease_factor"):
        AimdLimiter(max_limit=2, decrease_factor=1.0)


# ------------------------------------------------------------------ health states
def test_consecutive_failures_mark_the_endpoint_down() -> None:
    """failure_threshold failures in a row with no success: DOWN, and nothing is admitted until the probe is due."""
    clock = Clock()
    h = health(clock, initial_concurrency=4)
    go_down(h, 3)
    assert h.state is EndpointState.DOWN
    assert h.admit() is None
    wait = h.wait_time()
    assert wait is not None and 0 <= wait <= 2.0  # full jitter up to wait_initial * base
    assert h.snapshot().down_events == 1


def test_an_outage_never_spends_a_payloads_attempts() -> None:
    """Hundreds of failed probes of one payload during an outage never make it poison; it is delivered after."""
    clock = Clock()
    h = health(clock)
    go_down(h)
    for _ in range(300):
        clock.now += 1000
        assert send(h, SendResult.FAILED, key="p") is Verdict.RETRY
        assert h.state is EndpointState.DOWN
    clock.now += 1000
    assert send(h, SendResult.SUCCESS, key="p") is Verdict.DELIVERED
    assert h.state is EndpointState.UP and h.snapshot().poisoned == 0


def test_one_probe_at_a_time_and_recovery_starts_small() -> None:
    """While DOWN exactly one probe is in flight; its success brings the endpoint UP at the initial AIMD limit."""
    clock = Clock()
    h = health(clock, initial_concurrency=2)
    for _ in range(20):  # grow the limit first
        ps = [h.admit() for _ in range(h.aimd.limit)]
        for p in ps:
            assert p is not None
            h.on_result(p, SendResult.SUCCESS, payload_key="x")
    assert h.aimd.limit == 8
    go_down(h, 3)
    clock.now += 100
    probe = h.admit()
    assert probe is not None and probe.probe
    assert h.state is EndpointState.PROBING
    assert h.admit() is None and h.wait_time() is not None
    assert h.on_result(probe, SendResult.SUCCESS, payload_key="p") is Verdict.DELIVERED
    assert h.state is EndpointState.UP
    assert h.aimd.limit == 2  # no thundering herd
    permits = [h.admit() for _ in range(3)]
    assert permits[2] is None


def test_probe_backoff_grows_with_full_jitter_and_is_capped() -> None:
    """The wait before each probe is uniform in [0, min(cap, initial * base**n)]; never above the cap."""
    clock = Clock()
    h = health(clock, probe_wait_initial=1.0, probe_wait_max=30.0)
    go_down(h)
    waits = []
    for _ in range(40):
        w = h.wait_time()
        assert w is not None
        waits.append(w)
        clock.now += w
        assert send(h, SendResult.FAILED, key="p") is Verdict.RETRY
    assert max(waits) <= 30.0
    assert max(waits[:3]) <= 8.0  # 2, 4, 8 caps for the first probes
    assert max(waits[10:]) > 8.0  # grown (seeded rng: deterministic)
    assert h.snapshot().probe_failures == 40


def test_a_hung_probe_is_replaced_after_probe_timeout() -> None:
    """A probe that never answers does not keep the endpoint half-open forever: after probe_timeout another goes."""
    clock = Clock()
    h = health(clock, probe_timeout=10.0)
    go_down(h)
    clock.now += 100
    hung = h.admit()
    assert hung is not None and hung.probe
    clock.now += 9
    assert h.admit() is None
    assert h.wait_time() == pytest.approx(1.0)
    clock.now += 2
    second = h.admit()
    assert second is not None and second.probe


def test_poison_payload_is_dropped_after_bounded_strikes_while_others_succeed() -> None:
    """A payload that fails while others get through is POISON after max_payload_strikes; the endpoint stays UP."""
    clock = Clock()
    h = health(clock, max_payload_strikes=3, initial_concurrency=2)
    verdicts = []
    for _ in range(10):
        verdicts.append(send(h, SendResult.FAILED, key="poison"))
        assert send(h, SendResult.SUCCESS, key="healthy") is Verdict.DELIVERED
        if verdicts[-1] is Verdict.POISON:
            break
    assert verdicts[-1] is Verdict.POISON
    assert len(verdicts) == 4  # the first failure has no success before it to compare with
    assert h.state is EndpointState.UP and h.snapshot().poisoned == 1


def test_concurrent_poison_strikes_when_others_succeed_during_its_flight() -> None:
    """With requests in flight together, another's success during the poison's flight counts a strike."""
    clock = Clock()
    h = health(clock, max_payload_strikes=2, initial_concurrency=4)
    for _ in range(2):
        bad = h.admit()
        good = h.admit()
        assert bad is not None and good is not None
        h.on_result(good, SendResult.SUCCESS, payload_key="g")
        verdict = h.on_result(bad, SendResult.FAILED, payload_key="bad")
    assert verdict is Verdict.POISON


def test_rejected_is_the_payloads_fault_and_proves_the_endpoint_reachable() -> None:
    """REJECTED (a 4xx about the payload) returns REJECTED, resets the failure streak and recovers a down endpoint."""
    clock = Clock()
    h = health(clock)
    send(h, SendResult.FAILED, key="a")
    send(h, SendResult.FAILED, key="b")
    assert send(h, SendResult.REJECTED, key="c") is Verdict.REJECTED
    send(h, SendResult.FAILED, key="d")
    assert h.state is EndpointState.UP  # the streak was broken
    go_down(h)
    assert h.state is EndpointState.DOWN
    clock.now += 100
    assert send(h, SendResult.REJECTED, key="e") is Verdict.REJECTED
    assert h.state is EndpointState.UP


def test_retry_after_pauses_admission_capped() -> None:
    """A 429 with Retry-After pauses every request for min(retry_after, max_retry_after) seconds."""
    clock = Clock()
    h = health(clock, max_retry_after=20.0, initial_concurrency=4)
    assert send(h, SendResult.FAILED, key="a", retry_after=5.0) is Verdict.RETRY
    assert h.state is EndpointState.UP
    assert h.admit() is None and h.wait_time() == pytest.approx(5.0)
    clock.now += 5.0
    assert h.admit() is not None
    send_after = h.admit()
    assert send_after is not None
    h.on_result(send_after, SendResult.FAILED, payload_key="b", retry_after=3600.0)
    assert h.wait_time() == pytest.approx(20.0)  # capped
    assert h.snapshot().paused_for_seconds == pytest.approx(20.0)


def test_retry_after_delays_the_next_probe() -> None:
    """A probe answered 429 Retry-After: 25 waits at least 25 s (capped by max_retry_after) before the next probe."""
    clock = Clock()
    h = health(clock, max_retry_after=60.0, probe_wait_max=2.0)
    go_down(h)
    clock.now += 100
    assert send(h, SendResult.FAILED, key="p", retry_after=25.0) is Verdict.RETRY
    assert h.wait_time() == pytest.approx(25.0)


def test_failure_of_a_request_started_before_the_outage_does_not_fail_the_probe() -> None:
    """A stale non-probe failure arriving while a probe is in flight leaves the probe in charge."""
    clock = Clock()
    h = health(clock, initial_concurrency=8)
    stale = h.admit()
    go_down(h)
    clock.now += 100
    probe = h.admit()
    assert stale is not None and probe is not None and probe.probe
    h.on_result(stale, SendResult.FAILED, payload_key="s")
    assert h.state is EndpointState.PROBING
    h.on_result(probe, SendResult.SUCCESS, payload_key="p")
    assert h.state is EndpointState.UP


def test_a_late_success_recovers_a_down_endpoint() -> None:
    """Any success (even of a request admitted before the outage was declared) brings the endpoint UP."""
    clock = Clock()
    h = health(clock, initial_concurrency=8)
    slow = h.admit()
    go_down(h)
    assert slow is not None
    h.on_result(slow, SendResult.SUCCESS, payload_key="s")
    assert h.state is EndpointState.UP


def test_forget_clears_a_payloads_strikes() -> None:
    """forget() drops a payload's failure record (expired or spilled elsewhere): its strikes start over."""
    clock = Clock()
    h = health(clock, max_payload_strikes=2)
    send(h, SendResult.SUCCESS, key="g")
    send(h, SendResult.FAILED, key="p")  # strike 1 (a success happened since it was sent? no: sent after)
    send(h, SendResult.SUCCESS, key="g")
    h.forget("p")
    assert send(h, SendResult.FAILED, key="p") is Verdict.RETRY


def test_health_bad_configuration() -> None:
    """Invalid knobs raise ConfigError naming the field."""
    for kwargs, name in [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"max_payload_strikes": 0}, "max_payload_strikes"),
        ({"probe_wait_initial": 0.0}, "probe_wait_initial"),
        ({"probe_timeout": 0.0}, "probe_timeout"),
        ({"max_retry_after": -1.0}, "max_retry_after"),
    ]:
        with pytest.raises(ConfigError) as info:
            EndpointHealth(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == name


def test_recovery_drains_without_a_thundering_herd() -> None:
    """Simulated drain after recovery: in-flight never exceeds the AIMD limit, which climbs from 1 to the max."""
    clock = Clock()
    h = health(clock, initial_concurrency=1, max_concurrent=8)
    go_down(h)
    clock.now += 100
    assert send(h, SendResult.SUCCESS, key="probe") is Verdict.DELIVERED
    in_flight: list[Permit] = []
    peak = []
    for _ in range(60):  # rounds: admit what the limit allows, then all succeed
        while (p := h.admit()) is not None:
            in_flight.append(p)
        peak.append(len(in_flight))
        assert len(in_flight) <= h.aimd.limit
        for p in in_flight:
            h.on_result(p, SendResult.SUCCESS, payload_key="b")
        in_flight.clear()
    assert peak[0] == 1 and peak[-1] == 8
    assert peak == sorted(peak)  # a ramp, never a burst
