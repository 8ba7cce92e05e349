"""What each connector setting means, in plain words, with an example: the admin form's help text.

A schema property's own "description" and "examples" win; these fill in for the platforms' schemas, which carry
neither. Keyed by (kind, name), then by name alone for settings several kinds share.
"""

TWILIO_SID = "AC0123456789abcdef0123456789abcdef"

BY_NAME = {
    "api_base_url": ("The platform's API address. Leave empty for the real service; set it only for a test double "
                     "or a proxy.", ""),
    "timeout": ("Seconds to wait for the platform's API before giving up on one call.", "10"),
    "account_sid": ("Your Twilio Account SID, from the Twilio console's dashboard.", TWILIO_SID),
    "auth_token": ("Your Twilio Auth Token, from the Twilio console's dashboard. It also checks Twilio's "
                   "signatures on what Twilio sends us.", ""),
    "greeting": ("The first thing the connector says to a new person.", "Hello! How can I help?"),
}

BY_KIND = {
    ("email", "from_address"): ("The address messages are sent from.", "BRAIN <brain@example.org>"),
    ("email", "subject"): ("The subject line of messages sent (one line).", "A message from BRAIN"),
    ("email", "reply_to"): ("Where replies go, if not to the From address.", "support@example.org"),
    ("locmem", "fail_with"): ("Make every send fail this way (for tests).", ""),
    ("locmem", "health"): ("What the health check reports (for tests).", ""),
    ("locmem", "api_key"): ("Any value: the in-memory outbox checks nothing.", "test-key"),
    ("slack", "mode"): ("How Slack reaches us: 'events' (Slack calls our inbound URL) or 'socket' (we hold a "
                        "Socket Mode connection; needs the app token).", ""),
    ("slack", "channel_messages"): ("Answer messages in channels the bot is in, not only direct messages.", ""),
    ("slack", "thread_dm_replies"): ("Reply in a thread under the person's direct message.", ""),
    ("slack", "bot_token"): ("The Bot User OAuth Token, under OAuth & Permissions.", "xoxb-…"),
    ("slack", "signing_secret"): ("The Signing Secret, under Basic Information → App Credentials.", ""),
    ("slack", "app_token"): ("The app-level token (connections:write), for Socket Mode only.", "xapp-…"),
    ("sms", "from_number"): ("The Twilio number (E.164), short code or alphanumeric sender id messages come from.",
                             "+15550100"),
    ("sms", "max_segments"): ("Refuse a message longer than this many SMS segments.", "5"),
    ("telegram", "mode"): ("'webhook': Telegram calls our inbound URL (needs PUBLIC_BASE_URL); 'polling': we ask "
                           "Telegram for updates (works behind a firewall).", ""),
    ("telegram", "poll_timeout"): ("Seconds one long poll waits for updates (polling mode).", "30"),
    ("telegram", "bot_token"): ("The token @BotFather gave you.", "123456789:AAE…"),
    ("voice", "from_number"): ("The Twilio phone number calls come from and go to (E.164).", "+15550100"),
    ("voice", "filler"): ("Said while BRAIN thinks.", "One moment."),
    ("voice", "goodbye"): ("Said before hanging up.", "Goodbye."),
    ("voice", "voice"): ("The Twilio text-to-speech voice.", "Polly.Joanna"),
    ("voice", "language"): ("The language spoken and understood (BCP 47).", "en-US"),
    ("voice", "ask_ack"): ("Say the filler while waiting for BRAIN's answer.", ""),
    ("voice", "reply_wait_seconds"): ("Seconds to wait for BRAIN in each round before saying the filler.", "3"),
    ("voice", "max_wait_rounds"): ("How many rounds to wait for BRAIN before giving up.", "5"),
    ("voice", "gather_timeout"): ("Seconds of silence before the caller's turn ends.", "5"),
    ("webhook", "url"): ("Where messages are POSTed, signed (Standard Webhooks).", "https://example.org/hooks/brain"),
    ("webhook", "signing_secret"): ("The shared secret that signs each request (at least 16 characters; "
                                    "whsec_… base64 works too).", ""),
    ("webhook", "previous_signing_secret"): ("The old secret while the receiver switches over: requests carry "
                                             "both signatures.", ""),
    ("whatsapp", "from_number"): ("Your WhatsApp sender number in Twilio (E.164).", "whatsapp:+15550100"),
    ("whatsapp", "template_content_sid"): ("A Content Template (HX…) used outside WhatsApp's 24-hour window.",
                                           "HX0123456789abcdef0123456789abcdef"),
    ("whatsapp", "template_variable"): ("The template variable the message text goes into.", "1"),
    ("cli", "greeting"): ("Printed when `manage.py chat` starts.", "Hello!"),
}


def help_for(kind, name, spec):
    """(description, example) for one setting; the example is '' where none helps (secrets, choices)."""
    description, example = BY_KIND.get((kind, name)) or BY_NAME.get(name) or ("", "")
    if "description" in spec:
        description = spec["description"]
    if spec.get("examples"):
        example = str(spec["examples"][0])
    return description, example
