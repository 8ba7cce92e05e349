"""Run one function in several threads released at the same moment, for race tests."""
import threading

from django.db import connections


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
