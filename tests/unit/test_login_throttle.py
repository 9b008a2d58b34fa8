"""The login throttle: an attempt counts from its start, a success takes back only its own."""

from __future__ import annotations

from edu_migrate.web.throttle import LoginLimits, LoginThrottle


def test_parallel_attempts_count_before_they_are_checked() -> None:
    throttle = LoginThrottle(LoginLimits(per_username=3, per_client=100, window_seconds=60))
    # Three attempts under way at once, none finished: the fourth is refused already.
    assert [throttle.attempt("Ali", "10.0.0.1") for _ in range(3)] == [None] * 3
    wait = throttle.attempt("Ali", "10.0.0.2")
    assert wait is not None and 0 < wait <= 60


def test_a_success_clears_its_username_and_only_its_own_client_attempt() -> None:
    throttle = LoginThrottle(LoginLimits(per_username=2, per_client=3, window_seconds=60))
    assert throttle.attempt("victim", "attacker") is None
    assert throttle.attempt("victim", "attacker") is None
    assert throttle.attempt("victim", "attacker") is not None
    # The attacker's own account signs in: its username is cleared, the client count is not.
    assert throttle.attempt("mine", "attacker") is None
    throttle.succeeded("mine", "attacker")
    assert throttle.attempt("other", "attacker") is None
    assert throttle.attempt("third", "attacker") is not None


def test_a_busy_attempt_counts_neither_way() -> None:
    """No password was checked: the username's failures stay, the attempt itself goes."""
    throttle = LoginThrottle(LoginLimits(per_username=2, per_client=100, window_seconds=60))
    assert throttle.attempt("ali", "10.0.0.1") is None  # a failure
    assert throttle.attempt("ali", "10.0.0.1") is None
    throttle.abandoned("ali", "10.0.0.1")  # busy
    assert throttle.attempt("ali", "10.0.0.1") is None
    assert throttle.attempt("ali", "10.0.0.1") is not None
