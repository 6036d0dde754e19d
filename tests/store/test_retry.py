"""The one retry helper: bounded, jittered, and a failure is a typed error, never a drop."""

from __future__ import annotations

import pytest

from models.errors import StoreUnavailableError
from store.retry import AGAIN, Again, ContentionError, retry


def test_returns_the_first_result_that_is_not_again() -> None:
    pauses: list[float] = []

    def attempt(n: int) -> str | Again:
        return AGAIN if n < 3 else f"done at {n}"

    assert retry(attempt, what="x", sleep=pauses.append) == "done at 3"
    assert len(pauses) == 3
    # Full jitter under an exponential cap.
    assert all(0 <= p <= min(0.01, 0.0005 * 2**i) for i, p in enumerate(pauses))


def test_a_falsy_result_is_a_result() -> None:
    assert retry(lambda n: None, what="x") is None
    assert retry(lambda n: 0, what="x") == 0


def test_the_last_attempt_raises_a_typed_error() -> None:
    calls: list[int] = []

    def attempt(n: int) -> int | Again:
        calls.append(n)
        return AGAIN

    with pytest.raises(ContentionError) as err:
        retry(attempt, what="the profile of u1", attempts=4, sleep=lambda _: None)
    assert calls == [0, 1, 2, 3]
    assert isinstance(err.value, StoreUnavailableError) and err.value.attempts == 4
    assert "the profile of u1" in str(err.value)


def test_errors_of_an_attempt_are_not_retried() -> None:
    def attempt(n: int) -> int | Again:
        raise KeyError(n)

    with pytest.raises(KeyError):
        retry(attempt, what="x", sleep=lambda _: None)
    with pytest.raises(ValueError):
        retry(lambda n: 1, what="x", attempts=0)
