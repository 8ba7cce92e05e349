"""What apps contribute to the MCP server: the tools and resources their `mcp_tools` modules register.

Each installed app may have an `mcp_tools` module; `discover()` imports them all (as the admin
autodiscovers `admin` modules), in INSTALLED_APPS order, which is the order clients list the tools
in. Adding a tool is a decorated function in the app's mcp_tools.py:

    @tool("Say what it does, for the model.", readOnlyHint=True)
    def my_tool(principal: Principal, connector_id: ConnectorId) -> dict:
        return ...

Tools are thin: each receives the principal from the token, calls services (which check object
permissions and write the audit row, with `via: mcp`), and returns plain JSON. A ServiceError
becomes a tool error carrying the service's message, so a denied or invalid call has no side
effect beyond its audit row, and the server keeps serving.
"""
import functools
import inspect
from dataclasses import dataclass
from typing import Callable

from django.db import close_old_connections
from django.utils.module_loading import autodiscover_modules
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from brain_connectors.shared.errors import ServiceError


def reasons(exc) -> str:
    """A validation error's reasons, for the model to correct its call (" content: must not be empty")."""
    said = [f"{name}: {reason}" for name, reason in exc.details.items()
            if isinstance(reason, str) and reason not in exc.message]
    return (" " + "; ".join(said)) if said else ""


class Unauthenticated(Exception):
    """The call carries no live API token (the message says why, for the model)."""


# Who is calling: brain_connectors.mcp.auth checks the token, and the server hands that check in here
# (use_principal_resolver), so this registry, which every app's mcp_tools imports, never imports the
# token service of an app.
_resolve_principal = None


def use_principal_resolver(resolve):
    """Set by build_server(): a function returning the calling Principal or raising Unauthenticated."""
    global _resolve_principal
    _resolve_principal = resolve


def current_principal():
    """The calling Principal, checked now (a revoked token stops working mid-session)."""
    if _resolve_principal is None:
        raise Unauthenticated("The MCP server is not set up: build_server() was not called.")
    return _resolve_principal()


@dataclass(frozen=True)
class ToolSpec:
    run: Callable  # takes the tool's arguments; the principal is resolved inside
    description: str
    annotations: dict


@dataclass(frozen=True)
class ResourceSpec:
    uri_template: str
    name: str
    description: str
    mime_type: str
    read: Callable  # takes the template's parameters; the principal is resolved inside
    listing: Callable  # () -> the caller's concrete resources, for resources/list


TOOLS: list[ToolSpec] = []  # registered on every server build_server() makes
RESOURCES: list[ResourceSpec] = []


def discover():
    """Import every installed app's `mcp_tools` module (once: a second import registers nothing)."""
    autodiscover_modules("mcp_tools")


def without_principal(run, fn):
    """`run`, presenting `fn`'s signature minus its first (principal) parameter, which the SDK
    turns into the JSON schema of what the client passes."""
    functools.update_wrapper(run, fn)
    signature = inspect.signature(fn)
    run.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    del run.__wrapped__
    return run


def tool(description, **annotations):
    """Register a sync tool. Its first parameter receives the calling Principal; the others
    become the tool's JSON schema (use Annotated + Field for limits and descriptions)."""

    def register(fn):
        def run(**arguments):
            close_old_connections()  # SDK worker threads get no request signals
            try:
                return fn(current_principal(), **arguments)
            except Unauthenticated as exc:
                raise ToolError(str(exc))
            except ServiceError as exc:
                raise ToolError(f"{exc.message}{reasons(exc)} (code: {exc.code})")
            finally:
                close_old_connections()

        TOOLS.append(ToolSpec(without_principal(run, fn), description, annotations))
        return fn

    return register


def resource(uri_template, *, name, description, mime_type, listing):
    """Register a resource template read by the decorated `fn(principal, **parameters) -> str`;
    `listing(principal)` returns the caller's concrete resources (mcp.types.Resource)."""

    def register(fn):
        def read(**parameters):
            close_old_connections()
            try:
                return fn(current_principal(), **parameters)
            except (Unauthenticated, ServiceError) as exc:
                raise ResourceError(getattr(exc, "message", str(exc)))
            finally:
                close_old_connections()

        def listed():
            close_old_connections()
            try:
                return list(listing(current_principal()))
            except Unauthenticated:
                return []
            finally:
                close_old_connections()

        RESOURCES.append(ResourceSpec(uri_template, name, description, mime_type, without_principal(read, fn), listed))
        return fn

    return register
