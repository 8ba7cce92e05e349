"""Serve the MCP server (brain_connectors/mcp/server.py, every app's tools) over stdio, or over streamable HTTP.

On stdio, stdout carries the protocol and nothing else: logs go to stderr.
"""
import gc
import logging
import os
import sys

from django.core.management.base import BaseCommand, CommandError

from brain_connectors.mcp.auth import VIA
from brain_connectors.mcp.server import build_server
from connectors import tokens


class Command(BaseCommand):
    help = "Serve the MCP server: stdio (default; token from BRAIN_MCP_TOKEN or --token-file) or streamable HTTP."

    def add_arguments(self, parser):
        parser.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio")
        parser.add_argument("--host", default="127.0.0.1", help="streamable-http only")
        parser.add_argument("--port", type=int, default=8765, help="streamable-http only")
        parser.add_argument("--token-file", help="stdio: read the API token from this file (else BRAIN_MCP_TOKEN)")

    def handle(self, *args, transport, host, port, token_file, **options):
        _logs_to_stderr()
        gc.freeze()  # start-up objects live as long as the server: keep full collections short
        if transport == "stdio":
            raw = _read_token(token_file)
            try:
                user, _ = tokens.authenticate(raw)
            except tokens.TokenRejected as exc:
                tokens.record_rejection(exc, VIA)
                raise CommandError(f"The API token is {exc.reason.replace('_', ' ')}: the MCP server will not start.")
            sys.stderr.write(f"MCP server on stdio, acting as {user.get_username()}.\n")
            build_server(stdio_token=raw).run("stdio")
        else:
            base = f"http://{host}:{port}"
            sys.stderr.write(f"MCP server on {base}/mcp (each request needs Authorization: Bearer <token>).\n")
            build_server(http_base_url=base).run("streamable-http", host=host, port=port)


def _read_token(token_file):
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                raw = handle.read().strip()
        except OSError as exc:
            raise CommandError(f"Cannot read --token-file {token_file}: {exc.strerror}.")
        if not raw:
            raise CommandError(f"--token-file {token_file} is empty.")
        return raw
    raw = os.environ.get("BRAIN_MCP_TOKEN", "").strip()
    if not raw:
        raise CommandError(
            "No API token: set BRAIN_MCP_TOKEN or pass --token-file (create one with "
            "`manage.py create_api_token <username>`)."
        )
    return raw


def _logs_to_stderr():
    """Every handler that writes to stdout now writes to stderr: stdout is the protocol."""
    for logger in [logging.getLogger(), *[logging.getLogger(name) for name in logging.root.manager.loggerDict]]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stdout:
                handler.setStream(sys.stderr)
