"""The circuit breaker state machine, with a fake clock: no sleeping, no I/O."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.upstream.circuit import CircuitBreaker, CircuitState

CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(failures: int = 3, reset_s: float = 30.0) -> tuple[CircuitBreaker, Clock, list]:
    clock = Clock()
    changes: list[CircuitState] = []
    return CircuitBreaker(failures, reset_s, clock, changes.append), clock, changes


def fail(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert b.allow()
        b.record_failure()


def test_closed_allows_and_counts_consecutive_failures_only():
    b, _, changes = breaker(3)
    fail(b, 2)
    assert b.state is CLOSED and b.consecutive_failures == 2
    assert b.allow()
    b.record_success()  # a success in between starts the count over
    fail(b, 2)
    assert b.state is CLOSED and changes == []
    fail(b, 1)
    assert b.state is OPEN and changes == [OPEN]


def test_open_refuses_until_reset_then_lets_exactly_one_trial_through():
    b, clock, _ = breaker(1, reset_s=30)
    fail(b, 1)
    assert not b.allow()
    assert b.retry_after() == 30
    clock.now += 29.9
    assert not b.allow() and b.state is OPEN
    clock.now += 0.1
    assert b.state is HALF_OPEN and b.retry_after() == 0
    assert b.allow()  # the trial
    assert not b.allow() and not b.allow()  # everyone else still fails fast
    assert b.retry_after() == 30


def test_trial_success_closes():
    b, clock, changes = breaker(2, reset_s=5)
    fail(b, 2)
    clock.now += 5
    assert b.allow()
    b.record_success()
    assert b.state is CLOSED and b.consecutive_failures == 0
    assert changes == [OPEN, HALF_OPEN, CLOSED]
    fail(b, 1)
    assert b.state is CLOSED  # the count starts from zero again


def test_trial_failure_reopens_for_another_full_period():
    b, clock, changes = breaker(2, reset_s=5)
    fail(b, 2)
    clock.now += 7
    assert b.allow()
    clock.now += 1
    b.record_failure()
    assert b.state is OPEN and not b.allow()
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()
    assert changes == [OPEN, HALF_OPEN, OPEN, HALF_OPEN]


def test_a_released_trial_frees_the_slot():
    b, clock, _ = breaker(1, reset_s=5)
    fail(b, 1)
    clock.now += 5
    assert b.allow() and not b.allow()
    b.release()  # cancelled: neither success nor failure
    assert b.state is HALF_OPEN
    assert b.allow()


def test_a_trial_that_never_reports_does_not_wedge_the_circuit():
    b, clock, _ = breaker(1, reset_s=5)
    fail(b, 1)
    clock.now += 5
    assert b.allow()
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()


def test_late_failure_of_a_call_let_through_before_opening_does_not_extend_the_wait():
    b, clock, _ = breaker(2, reset_s=10)
    assert b.allow() and b.allow() and b.allow()  # three calls in flight
    b.record_failure()
    b.record_failure()
    assert b.state is OPEN
    clock.now += 6
    b.record_failure()  # the third, late
    clock.now += 4
    assert b.state is HALF_OPEN


def test_late_success_while_open_closes():
    b, _, _ = breaker(1)
    assert b.allow() and b.allow()
    b.record_failure()
    assert b.state is OPEN
    b.record_success()  # the upstream answered after all
    assert b.state is CLOSED and b.allow()


def test_release_in_closed_and_open_changes_nothing():
    b, _, changes = breaker(2)
    b.release()
    fail(b, 1)
    b.release()
    assert b.consecutive_failures == 1 and b.state is CLOSED
    fail(b, 1)
    b.release()
    assert b.state is OPEN and changes == [OPEN]


def test_zero_failures_disables_it():
    b, clock, changes = breaker(0)
    for _ in range(100):
        assert b.allow()
        b.record_failure()
    assert b.state is CLOSED and changes == [] and b.retry_after() == 0
    assert not b.enabled


def test_threshold_one_opens_at_the_first_failure():
    b, _, _ = breaker(1)
    fail(b, 1)
    assert b.state is OPEN


# -- properties over random histories -------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.sampled_from([("allow",), ("allow",), ("success",), ("failure",), ("failure",),
                         ("release",), ("reset",)]),
        st.tuples(st.just("tick"), st.floats(min_value=0, max_value=20)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(failures=st.integers(min_value=1, max_value=4), reset=st.floats(0.5, 10), history=ops)
def test_invariants_hold_for_any_history(failures, reset, history):
    """Whatever happens (outcomes only for calls that were let through, as the client does):
    - closed always allows; open never allows before its reset time;
    - at most one call is let through per half-open period, until an outcome arrives, the
      slot is released, or reset_s passes;
    - a success always leaves the circuit closed; `failures` consecutive failures while
      closed always open it; transitions are reported exactly when the state changes."""
    b, clock, changes = breaker(failures, reset)
    in_flight = 0
    trials_since_outcome = 0
    trial_started = None
    opened_at = None
    streak = 0
    last_state = b.state
    for op in history:
        name = op[0]
        before = b.state
        if name in ("tick", "reset"):
            clock.now += op[1] if name == "tick" else reset  # "reset": exactly reset_s later
        elif name == "allow":
            allowed = b.allow()
            if before is CLOSED:
                assert allowed
            if before is OPEN:
                assert clock.now < opened_at + reset and not allowed
            if allowed:
                in_flight += 1
                if b.state is HALF_OPEN:
                    if trial_started is not None and clock.now < trial_started + reset:
                        raise AssertionError("a second trial while one is in flight")
                    trial_started = clock.now
                    trials_since_outcome += 1
        elif in_flight:
            in_flight -= 1
            if name == "success":
                b.record_success()
                assert b.state is CLOSED
                streak = 0
                trial_started = None
            elif name == "failure":
                was = b.state
                b.record_failure()
                streak += 1
                if was is HALF_OPEN or (was is CLOSED and streak >= failures):
                    assert b.state is OPEN
                    opened_at = clock.now
                    trial_started = None
                if b.state is OPEN and was is not OPEN:
                    opened_at = clock.now
            else:
                b.release()
                if b.state is HALF_OPEN:
                    trial_started = None
        now_state = b.state
        if now_state is OPEN and opened_at is None:
            raise AssertionError("opened without a recorded failure")
        if now_state is not last_state:
            assert changes and changes[-1] is now_state
        last_state = now_state
    assert all(a is not b_ for a, b_ in zip(changes, changes[1:], strict=False))
