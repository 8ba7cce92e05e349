"""Fixtures for the outbound-URL guard's tests: production's strict settings, and a DNS stub so a
name can "resolve" to any address without a packet leaving the machine."""
import socket

import pytest

PUBLIC_ADDRESS = "93.184.216.34"


@pytest.fixture
def strict(settings):
    """Production defaults (the test settings allow private addresses for the loopback fakes)."""
    settings.BRAIN_ALLOW_PRIVATE_URLS = False
    settings.BRAIN_URL_ALLOWED_HOSTS = []
    return settings


@pytest.fixture
def dns(monkeypatch):
    """dns["name"] = ["addr", …]: what getaddrinfo answers for that name, changeable at any time.
    IP literals resolve as usual (numerically); other names fail, as they do without a network."""
    answers = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)) if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers
