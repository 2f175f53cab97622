"""Which Kubernetes API errors a reconcile step waits out (and how long), and which it does
not: an overloaded API server (429) or one that cannot reach etcd (5xx) or cannot be reached
is tried again after a short backoff; anything else is not a passing trouble."""

from __future__ import annotations

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from wtb_operator.kubeapi import KOPF_ERROR_BACKOFFS, MAX_API_BACKOFF_SECONDS, api_trouble


def _refusal(status: int, headers: dict[str, str] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.headers = headers
    return exc


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_is_tried_again_after_the_interval(status: int) -> None:
    trouble = api_trouble(_refusal(status), interval=2.0, retry=0)
    assert trouble is not None
    assert trouble.delay == 2.0
    assert f"answered {status}" in trouble.message


def test_the_backoff_doubles_with_each_failure_in_a_row_up_to_a_cap() -> None:
    delays = [api_trouble(_refusal(504), interval=2.0, retry=r) for r in range(8)]
    assert [t.delay for t in delays if t] == [2, 4, 8, 16, 30, 30, 30, 30]
    huge = api_trouble(_refusal(503), interval=2.0, retry=10_000)
    assert huge is not None
    assert huge.delay == MAX_API_BACKOFF_SECONDS


def test_throttling_waits_at_least_as_long_as_the_server_asks() -> None:
    asked = api_trouble(_refusal(429, {"Retry-After": "5"}), interval=0.5, retry=0)
    assert asked is not None
    assert asked.delay == 5.0
    assert "throttling" in asked.message
    # Our own backoff wins when it is longer; an absurd Retry-After is capped.
    assert (
        api_trouble(_refusal(429, {"retry-after": "1"}), interval=2.0, retry=1) or asked
    ).delay == 4.0
    capped = api_trouble(_refusal(429, {"Retry-After": "86400"}), interval=0.5, retry=0)
    assert capped is not None
    assert capped.delay == MAX_API_BACKOFF_SECONDS
    for header in ({}, {"Retry-After": "soon"}, {"Retry-After": "-3"}):
        plain = api_trouble(_refusal(429, header), interval=0.5, retry=0)
        assert plain is not None
        assert plain.delay == 0.5


def test_no_connection_is_a_passing_trouble() -> None:
    exc = urllib3.exceptions.MaxRetryError(None, "/apis", reason=ConnectionRefusedError())  # type: ignore[arg-type]
    trouble = api_trouble(exc, interval=1.0, retry=0)
    assert trouble is not None
    assert "does not answer (MaxRetryError)" in trouble.message


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_a_refusal_is_not_waited_out(status: int) -> None:
    assert api_trouble(_refusal(status), interval=1.0, retry=0) is None


def test_other_errors_are_not_waited_out() -> None:
    assert api_trouble(ValueError("a bug"), interval=1.0, retry=0) is None


def test_kopf_retries_its_own_requests_for_minutes_not_one() -> None:
    """Throttling that lasts longer than Kopf's default retries (54 s) would end the
    operator (seen in the 429 drill): its requests retry about 7 minutes, 30 s apart at most."""
    assert sum(KOPF_ERROR_BACKOFFS) >= 6 * 60
    assert max(KOPF_ERROR_BACKOFFS) <= MAX_API_BACKOFF_SECONDS
