"""The one retry loop (deploy/retry.py): a call is made again only as its policy says,
at most its attempts, waiting its backoff between them. time.sleep is patched in the
helper's own module: nothing here really waits."""

from unittest import mock

import pytest

from deploy import budgets, retry
from deploy.errors import AppError, UserError

POLICY = retry.Policy("test", attempts=4, backoff=retry.Doubling(1.0), retry_on=retry.transient)


@pytest.fixture
def slept():
    with mock.patch("deploy.retry.time.sleep", autospec=True) as sleep:
        yield sleep


def failing(*errors) -> mock.Mock:
    """A call that raises each of `errors` in turn, then answers "done"; it counts its calls."""
    return mock.Mock(side_effect=[*errors, "done"])


def test_it_stops_after_the_policys_attempts_and_raises_the_last_error(slept):
    call = failing(*[AppError("x", f"try {n}") for n in range(1, 10)])
    with pytest.raises(AppError, match="try 4"):
        retry.run(call, POLICY)
    assert call.call_count == 4 and slept.call_count == 3


def test_it_waits_longer_after_each_failed_attempt(slept):
    call = failing(AppError("x", "1"), AppError("x", "2"), AppError("x", "3"))
    assert retry.run(call, POLICY) == "done"
    assert [c.args[0] for c in slept.call_args_list] == [1.0, 2.0, 4.0]


def test_it_retries_only_the_errors_its_policy_names(slept):
    for error in (UserError("bad-dockerfile", "no"), AppError("revision-mismatch", "no", retryable=False),
                  ValueError("a bug")):
        call = failing(error)
        with pytest.raises(type(error)):
            retry.run(call, POLICY)
        assert call.call_count == 1
    assert slept.call_count == 0


def test_an_answer_the_policy_calls_failed_is_tried_again_and_the_last_one_returned(slept):
    policy = retry.Policy("answers", attempts=3, backoff=retry.Doubling(0.5), retry_result=lambda a: a >= 500)
    assert retry.run(mock.Mock(side_effect=[503, 502, 201]), policy) == 201
    assert retry.run(mock.Mock(side_effect=[503, 404, 201]), policy) == 404  # not worth another attempt
    assert retry.run(mock.Mock(side_effect=[503, 503, 503, 201]), policy) == 503  # out of attempts
    assert [c.args[0] for c in slept.call_args_list] == [0.5, 1.0, 0.5, 0.5, 1.0]


def test_each_retry_is_told_before_its_wait(slept):
    told = []
    call = failing(AppError("x", "first"))
    retry.run(call, POLICY, on_retry=lambda attempt, exc, delay: told.append((attempt, exc.message, delay,
                                                                                slept.call_count)))
    assert told == [(1, "first", 1.0, 0)]


def test_no_attempt_starts_that_could_end_past_the_deadline(slept):
    policy = POLICY.but(longest=5.0)
    with mock.patch("deploy.retry.time.monotonic", autospec=True, return_value=100.0):
        call = failing(AppError("x", "1"), AppError("x", "2"))
        with pytest.raises(AppError, match="1"):
            retry.run(call, policy, deadline=105.5)  # a 1 s wait and a 5 s attempt end at 106
        assert call.call_count == 1 and slept.call_count == 0
        assert retry.run(failing(AppError("x", "1")), policy, deadline=106.5) == "done"


def test_a_policy_without_backoff_tries_again_at_once(slept):
    policy = retry.Policy("once more", attempts=2, retry_on=lambda exc: isinstance(exc, OSError))
    assert retry.run(failing(OSError("cut")), policy) == "done"
    assert slept.call_count == 0


def test_jittered_backoff_stays_in_the_upper_half_of_its_doubling_and_under_its_cap():
    waits = {n: [retry.AWS_BACKOFF(n) for _ in range(50)] for n in range(1, 8)}
    assert all(0.25 <= w <= 0.5 for w in waits[1]) and all(1.0 <= w <= 2.0 for w in waits[3])
    assert all(4.0 <= w <= 8.0 for w in waits[7])  # 0.5 × 2⁶ = 32, capped at 8
    assert len(set(waits[3])) > 1  # jittered, not one fixed wait


def test_the_aws_classes_follow_their_budgets(monkeypatch):
    monkeypatch.setattr(budgets, "URGENT", budgets.Aws("urgent", connect=1.0, read=2.0, attempts=3))
    urgent, long = retry.urgent_aws(), retry.long_aws()
    assert (urgent.attempts, urgent.longest) == (3, 3.0)
    assert (long.attempts, long.longest) == (budgets.LONG.attempts, budgets.LONG.connect + budgets.LONG.read)
    assert urgent.retry_on(AppError("aws-unreachable", "x")) and not long.retry_on(UserError("lambda-x", "x"))


def test_a_step_shows_each_retry_of_a_docker_or_git_call_on_its_log(slept):
    from portal.deployments import recording

    lines = []
    push = failing(AppError("docker-unreachable", "the daemon did not answer"), AppError("x", "again"))
    assert recording.retrying("push", lines.append, push) == "done"
    assert lines == ["push: the daemon did not answer — retrying in 1 s (1/3)", "push: again — retrying in 2 s (2/3)"]
