"""Unit tests for judgeval_async._retry: status classification, Retry-After parsing, backoff and the deadline."""

from __future__ import annotations

import dataclasses
import email.utils
import math
import random

import pytest

from judgeval_async._retry import RETRYABLE_STATUSES, Outcome, RetryPolicy, classify_status, parse_retry_after

NOW = 1_700_000_000.0  # a fixed "current unix time" so HTTP-date tests do not read the clock


# ------------------------------------------------------------------ classify_status
@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    """Every 2xx status means the item was delivered."""
    assert classify_status(status) is Outcome.DELIVERED


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    """408, 429 and the transient 5xx family are retried."""
    assert classify_status(status) is Outcome.RETRY
    assert status in RETRYABLE_STATUSES


@pytest.mark.parametrize("status", [401, 403])
def test_auth_statuses_open_the_circuit(status: int) -> None:
    """401 and 403 are auth failures."""
    assert classify_status(status) is Outcome.AUTH


def test_413_is_too_large() -> None:
    """413 asks the sender to split the payload."""
    assert classify_status(413) is Outcome.TOO_LARGE


@pytest.mark.parametrize("status", [400, 404, 405, 409, 410, 422, 451, 499, 501, 505, 599, 100, 301, 304])
def test_other_statuses_are_rejected(status: int) -> None:
    """Other 4xx, 501/505 and anything non-2xx outside the retry set is rejected, never retried."""
    assert classify_status(status) is Outcome.REJECTED


# ------------------------------------------------------------------ parse_retry_after
@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0.0), ("5", 5.0), (" 12 ", 12.0), ("1.5", 1.5), ("-3", 0.0), ("-0.5", 0.0)],
)
def test_retry_after_delta_seconds(value: str, expected: float) -> None:
    """Delta-seconds parse as a float; negative values clamp to 0."""
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_after_http_date_is_relative_to_now() -> None:
    """An HTTP-date in the future gives the seconds between ``now`` and that date."""
    header = email.utils.formatdate(NOW + 120, usegmt=True)
    assert parse_retry_after(header, now=NOW) == pytest.approx(120.0)


def test_retry_after_rfc_example_date() -> None:
    """The RFC 9110 example date parses against an explicit ``now``."""
    when = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=when - 30) == pytest.approx(30.0)


def test_retry_after_past_date_is_zero() -> None:
    """An HTTP-date in the past means "retry now"."""
    header = email.utils.formatdate(NOW - 3600, usegmt=True)
    assert parse_retry_after(header, now=NOW) == 0.0


@pytest.mark.parametrize(
    "value", [None, "", "   ", "garbage", "soon", "12abc", "Wed, 99 Foo 2015", "inf", "-inf", "nan"]
)
def test_retry_after_invalid_is_none(value: str | None) -> None:
    """Absent, unparseable or non-finite values give None (fall back to computed backoff)."""
    assert parse_retry_after(value, now=NOW) is None


# ------------------------------------------------------------------ backoff
@pytest.mark.parametrize("retry_number", [1, 2, 3, 4, 5, 6, 10])
def test_jitter_stays_within_the_cap(retry_number: int) -> None:
    """1000 jittered draws all fall in [0, min(wait_max, wait_initial * base**(n-1))]."""
    policy = RetryPolicy(wait_initial=0.5, wait_max=10.0, wait_exp_base=2.0, wait_jitter=True)
    cap = min(10.0, 0.5 * 2.0 ** (retry_number - 1))
    rng = random.Random(12345)
    draws = [policy.backoff(retry_number, rng) for _ in range(1000)]
    assert all(0.0 <= d <= cap for d in draws)
    # Full jitter: the draws actually spread over the interval rather than collapsing to one value.
    assert min(draws) < cap * 0.1
    assert max(draws) > cap * 0.9


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    """The same seed gives the same sequence of waits."""
    policy = RetryPolicy()
    a = [policy.backoff(n, random.Random(7)) for n in range(1, 6)]
    b = [policy.backoff(n, random.Random(7)) for n in range(1, 6)]
    assert a == b


@pytest.mark.parametrize(("retry_number", "expected"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0)])
def test_no_jitter_returns_the_cap_exactly(retry_number: int, expected: float) -> None:
    """Without jitter the wait is exactly min(wait_max, wait_initial * base**(n-1))."""
    policy = RetryPolicy(wait_initial=0.5, wait_max=10.0, wait_exp_base=2.0, wait_jitter=False)
    assert policy.backoff(retry_number) == expected


def test_retry_number_zero_is_treated_as_first() -> None:
    """A non-positive retry number never shrinks the wait below wait_initial."""
    policy = RetryPolicy(wait_initial=0.5, wait_jitter=False)
    assert policy.backoff(0) == 0.5


def test_backoff_for_a_very_late_retry_is_capped_not_an_error() -> None:
    """A large retry number (reachable with a large retry_attempts) gives wait_max instead of OverflowError."""
    policy = RetryPolicy(attempts=5000, wait_initial=0.5, wait_max=10.0, wait_jitter=False)
    assert policy.backoff(2000) == 10.0


def test_testing_mode_backoff_is_zero() -> None:
    """testing=True waits zero seconds for computed backoff."""
    policy = RetryPolicy(testing=True)
    assert [policy.backoff(n) for n in range(1, 10)] == [0.0] * 9


# ------------------------------------------------------------------ next_wait and the deadline
def test_next_wait_gives_up_when_attempts_are_exhausted() -> None:
    """After ``attempts`` tries there is no next wait."""
    policy = RetryPolicy(attempts=3, wait_jitter=False)
    assert policy.next_wait(attempt=1, elapsed=0.0) == 0.5
    assert policy.next_wait(attempt=2, elapsed=0.0) == 1.0
    assert policy.next_wait(attempt=3, elapsed=0.0) is None
    assert policy.next_wait(attempt=4, elapsed=0.0) is None


@pytest.mark.parametrize("elapsed", [30.0, 30.5, 1e9])
def test_next_wait_gives_up_at_the_deadline(elapsed: float) -> None:
    """Once elapsed reaches the overall timeout, give up even with attempts left."""
    policy = RetryPolicy(attempts=100, timeout=30.0)
    assert policy.next_wait(attempt=1, elapsed=elapsed) is None


def test_next_wait_gives_up_when_backoff_would_cross_the_deadline() -> None:
    """A computed backoff that would end past the deadline means give up now."""
    policy = RetryPolicy(attempts=100, timeout=10.0, wait_initial=4.0, wait_jitter=False)
    assert policy.next_wait(attempt=1, elapsed=5.0) == 4.0
    assert policy.next_wait(attempt=1, elapsed=6.0) is None


def test_retry_after_replaces_backoff() -> None:
    """A server's Retry-After is used instead of the computed backoff."""
    policy = RetryPolicy(wait_initial=0.5, wait_jitter=False)
    assert policy.next_wait(attempt=1, elapsed=0.0, retry_after=7.0) == 7.0
    assert policy.next_wait(attempt=1, elapsed=0.0, retry_after=0.0) == 0.0


def test_retry_after_past_the_deadline_gives_up() -> None:
    """A Retry-After that would land past the deadline gives up instead of sleeping into failure."""
    policy = RetryPolicy(timeout=30.0)
    assert policy.next_wait(attempt=1, elapsed=10.0, retry_after=19.9) == 19.9
    assert policy.next_wait(attempt=1, elapsed=10.0, retry_after=20.0) is None
    assert policy.next_wait(attempt=1, elapsed=10.0, retry_after=3600.0) is None


def test_retry_after_is_honoured_in_testing_mode() -> None:
    """testing=True zeroes computed backoff but still honours a server's Retry-After."""
    policy = RetryPolicy(testing=True)
    assert policy.next_wait(attempt=1, elapsed=0.0) == 0.0
    assert policy.next_wait(attempt=1, elapsed=0.0, retry_after=2.5) == 2.5


def test_testing_mode_keeps_the_attempt_and_deadline_bounds() -> None:
    """testing=True changes only the waits, not when to give up."""
    policy = RetryPolicy(attempts=2, timeout=5.0, testing=True)
    assert policy.next_wait(attempt=2, elapsed=0.0) is None
    assert policy.next_wait(attempt=1, elapsed=5.0) is None


def test_next_wait_with_jitter_is_bounded() -> None:
    """With jitter, next_wait is within the backoff cap for that attempt."""
    policy = RetryPolicy(attempts=10, timeout=1000.0, wait_initial=1.0, wait_max=5.0)
    rng = random.Random(3)
    for attempt in range(1, 10):
        cap = min(5.0, 2.0 ** (attempt - 1))
        wait = policy.next_wait(attempt=attempt, elapsed=0.0, rng=rng)
        assert wait is not None
        assert 0.0 <= wait <= cap


def test_policy_is_frozen() -> None:
    """RetryPolicy is an immutable value."""
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.attempts = 3  # type: ignore[misc]
    assert math.isclose(policy.timeout, 30.0)


# ------------------------------------------------------------------ after a read timeout
@pytest.mark.parametrize("retry_number", [1, 2, 3, 6])
def test_backoff_after_timeout_is_the_upper_half_of_a_doubled_range(retry_number: int) -> None:
    """After a timeout the wait is drawn from [cap/2, cap] of the next step's cap: never near zero."""
    policy = RetryPolicy(wait_initial=0.5, wait_max=10.0, wait_exp_base=2.0)
    cap = min(10.0, 0.5 * 2.0**retry_number)
    rng = random.Random(7)
    waits = [policy.backoff_after_timeout(retry_number, rng) for _ in range(500)]
    assert all(cap / 2 <= w <= cap for w in waits)
    plain = [policy.backoff(retry_number, rng) for _ in range(500)]
    assert min(waits) > min(plain)


def test_next_wait_after_timeout_backs_off_harder_but_keeps_the_deadline() -> None:
    """next_wait(after_timeout=True) waits at least half the doubled cap, and still gives up at the deadline."""
    policy = RetryPolicy(attempts=5, timeout=30.0, wait_initial=1.0, wait_max=10.0)
    wait = policy.next_wait(attempt=1, elapsed=0.0, rng=random.Random(1), after_timeout=True)
    assert wait is not None and 1.0 <= wait <= 2.0
    assert policy.next_wait(attempt=3, elapsed=29.0, after_timeout=True) is None
    assert dataclasses.replace(policy, testing=True).next_wait(attempt=1, elapsed=0.0, after_timeout=True) == 0.0
    assert dataclasses.replace(policy, wait_jitter=False).backoff_after_timeout(1) == 2.0
