"""The lock order every transaction of the queue keeps (portal/deployments/queue.py): the
function row, then the environment row, then deployment rows. Two transactions that
take them in one order never deadlock (Postgres: real row locks; SQLite locks nothing)."""

from __future__ import annotations

import threading

import pytest

from portal.models import Deployment, Environment, Function


def _nowait(model, pk: int) -> bool:
    """From a connection of its own: could a row lock on `model` `pk` be taken right now?"""
    from django.db import DatabaseError, connection, transaction

    result = []

    def attempt():
        try:
            with transaction.atomic():
                model.objects.select_for_update(nowait=True).get(pk=pk)
            result.append(True)
        except DatabaseError:
            result.append(False)
        finally:
            connection.close()

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(10)
    return result[0]


def _in_thread(work) -> tuple[threading.Thread, list]:
    from django.db import connection

    done: list = []

    def run():
        try:
            done.append(work())
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done


@pytest.fixture
def postgres():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("select_for_update locks nothing on SQLite")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_request_holds_the_function_row_while_it_waits_for_the_environment_row(postgres, function, sent):
    from django.db import transaction

    from portal.deployments import queue

    environment = function.first_environment
    with transaction.atomic():
        Environment.objects.select_for_update().get(pk=environment.pk)  # another transaction holds the environment
        thread, done = _in_thread(lambda: queue.request(function, trigger="cli", ref="main"))
        thread.join(1.0)
        assert thread.is_alive() and done == [], "the request did not wait for the environment's row"
        assert not _nowait(Function, function.pk), "the waiting request does not hold the function's row"
        assert not Deployment.objects.exists()  # no deployment row is written before both are held
    thread.join(10)
    assert [d.environment_id for d in done] == [environment.pk]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_claim_takes_no_environment_or_deployment_row_before_the_function_row(postgres, function, sent):
    from django.db import transaction

    from portal.deployments import queue

    queued = Deployment.objects.create(function=function, trigger="cli", ref="main")
    with transaction.atomic():
        Function.objects.select_for_update().get(pk=function.pk)  # another transaction holds the function
        thread, done = _in_thread(lambda: queue.claim(queued, Deployment.Status.SOURCE, "task-1"))
        thread.join(1.0)
        assert thread.is_alive() and done == [], "the claim did not wait for the function's row"
        # It waits on the function row holding nothing after it: the environment and the
        # deployment rows are free.
        assert _nowait(Environment, function.first_environment.pk)
        assert _nowait(Deployment, queued.pk)
    thread.join(10)
    assert done == [True] and Deployment.objects.get(pk=queued.pk).status == Deployment.Status.SOURCE
