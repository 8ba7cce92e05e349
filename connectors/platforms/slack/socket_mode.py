"""Socket Mode: Slack events over a websocket that `manage.py runconnectors` holds, under the connector's lease.

For a service with no public URL. slack_sdk's aiohttp SocketModeClient opens the connection (`apps.connections.open`
with the app-level token, then the websocket), pings it, and reconnects when Slack asks or the socket drops; both
its HTTP calls and its websocket go through the guarded aiohttp session. Each `events_api` envelope is parsed as an
Events API request is (connectors.platforms.slack.events), stored, and only then acknowledged: after a crash
before the acknowledgement, Slack sends the envelope again, and the message key (`channel:ts`) stores it once.

`hold_session` is the connector's `poll_once`: it holds one session until the poller is told to stop (connector
stopped, lease lost, process ending) or SESSION_SECONDS pass, after which the poller re-checks the lease and
comes back. Slack gives each app up to ten connections and spreads events over them, so a second holder would be
harmless, but the lease keeps it at one, as for Telegram polling.
"""
import asyncio
import logging

from django.db import close_old_connections
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.response import SocketModeResponse

from brain_connectors.shared.errors import Conflict
from brain_connectors.shared.guarded_aiohttp import guarded_session
from connectors.delivery.inbound import receive_message
from connectors.permissions import Principal
from connectors.platforms.base import ConnectorError, run_sync
from connectors.platforms.slack import api, events, interactions

logger = logging.getLogger(__name__)

SESSION_SECONDS = 300.0
STOP_CHECK_SECONDS = 0.2
SOCKET = Principal.system_actor("platform", via="socket_mode")


def open_connection_url(app_token, config) -> str:
    """apps.connections.open: checks the app-level token (start() calls it) and returns a websocket URL."""
    return api.call(app_token, config, lambda client: client.apps_connections_open(app_token=app_token))["url"]


def hold_session(platform, stop_event) -> int:
    """One Socket Mode session for `platform` (a SlackConnector); returns how many messages it stored."""
    app_token = platform.credentials.get("app_token", "")
    if not app_token:
        raise ConnectorError("Socket mode needs an app-level token (app_token, xapp-…).", permanent=True,
                             code="invalid_credentials")
    try:
        return run_sync(_session, platform, app_token, stop_event)
    except ConnectorError:
        raise
    except Exception as exc:
        raise api.translate(exc, app_token) from exc


async def _session(platform, app_token, stop_event) -> int:
    handled = 0
    bot_user = platform.bot_identity().get("user_id", "")
    channel_messages = bool(platform.config.get("channel_messages"))
    async with guarded_session(limit=4) as http:
        client = SocketModeClient(app_token=app_token, web_client=api.new_client(app_token, platform.config, http),
                                  logger=logger, ping_interval=10)
        await client.aiohttp_client_session.close()  # the SDK's own session would connect unguarded
        client.aiohttp_client_session = guarded_session(limit=4)

        async def on_request(socket_client, request):
            nonlocal handled
            if request.type in ("events_api", "interactive"):  # interactive: a button press (interactions.py)
                try:
                    created = await asyncio.to_thread(_store, platform.connector.id, request.payload, bot_user,
                                                      channel_messages, request.type == "interactive")
                except Conflict as exc:  # not running any more: unacknowledged, so Slack sends it again later
                    logger.warning("Slack event for %s not stored: %s", platform.connector.id, exc.message)
                    return
                handled += created
            # Everything else (slash commands, interactivity) is acknowledged so Slack does not resend it.
            await socket_client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))

        client.socket_mode_request_listeners.append(on_request)
        try:
            await client.connect()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SESSION_SECONDS
            while not stop_event.is_set() and loop.time() < deadline:
                await asyncio.sleep(STOP_CHECK_SECONDS)
        finally:
            await client.close()
    return handled


def _store(connector_id, payload, bot_user, channel_messages, interactive=False) -> int:
    """Store the message in one envelope's payload (a database write: run in a thread); 1 if it is new."""
    close_old_connections()
    try:
        if interactive:
            message = interactions.parse_block_actions(payload)
        else:
            message = events.parse_event(payload if isinstance(payload, dict) else {}, bot_user, channel_messages)
    except events.Ignored as exc:
        logger.info("Ignored Slack event for %s: %s", connector_id, exc)
        return 0
    _, created = receive_message(connector_id, message, principal=SOCKET)
    return int(created)
