"""Helpers for race tests: run a function in threads released together, wait for a condition, count lock waiters."""
import threading
import time

from django.db import connection, connections


def run_at_once(fn, count, timeout=60):
    """Call fn(i) for i in range(count), all threads starting together.

    Returns (results, errors): what the calls returned and what they raised. Each thread closes its
    database connections. A thread still running after `timeout` fails the test.
    """
    barrier = threading.Barrier(count)
    results, errors = [], []

    def worker(i):
        try:
            barrier.wait(timeout=timeout)
            results.append(fn(i))
        except Exception as exc:  # collected for the caller to assert on
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return results, errors


def wait_until(predicate, timeout, message):
    """predicate()'s first truthy value within `timeout` seconds; else the test fails naming `message`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for: {message}")


def backends_waiting_for_a_lock():
    """Other backends of this database waiting for a lock (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                       "WHERE NOT l.granted AND a.datname = current_database() AND l.pid <> pg_backend_pid()")
        return cursor.fetchone()[0]
