"""The Schemathesis run's surroundings (tests/project/test_api_schemathesis.py uses these autouse fixtures): the
test's transaction survives the WSGI handler, 4xx lines stay out of the log, and nothing leaves the machine."""

import logging
import socket

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections


@pytest.fixture(autouse=True)
def _keep_the_test_transaction():
    """Django's WSGI handler closes "old" database connections around each request, which would
    end the test's transaction; Django's own test client lifts that hook the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _no_request_warnings():
    """Django logs every 4xx as "Not Found: <path>". A fuzzer's path parameters are random strings
    that may equal a message content sent earlier in the run, which the suite's log guard would
    report as content in the logs although it is the client's own input. Thousands of such lines
    say nothing here anyway: errors (5xx) are still logged, and fail the checks."""
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


# --- nothing leaves the machine --------------------------------------------------------------


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch, settings):
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host, port, *args, **kwargs):
        return real_getaddrinfo("127.0.0.1", port, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise ConnectionRefusedError(f"test refuses a connection to {address[0]}: loopback only")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    settings.BRAIN_ALLOW_PRIVATE_URLS = True  # every name resolves to 127.0.0.1 here
