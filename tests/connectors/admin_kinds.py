"""What a person types into the admin's add form for each kind: valid values, and the fields the kind requires."""

TWILIO = {"credentials__account_sid": "AC" + "fedcba9876543210" * 2, "credentials__auth_token": "a" * 32}

# kind -> (config fields, credential fields, what the stored connector then holds as (config, credentials))
VALID = {
    "cli": ({"config__greeting": "Hello there"}, {}, ({"greeting": "Hello there"}, {})),
    "email": ({"config__from_address": "brain@example.org", "config__subject": "From BRAIN"}, {},
              ({"from_address": "brain@example.org", "subject": "From BRAIN"}, {})),
    "locmem": ({"config__health": "ok"}, {"credentials__api_key": "local-key"}, ({"health": "ok"}, {"api_key": "local-key"})),
    "slack": ({"config__mode": "events", "config__timeout": "15", "config__channel_messages": "true"},
              {"credentials__bot_token": "xoxb-1234567890-abcdef", "credentials__signing_secret": "s1gn1ngS3cret0123"},
              ({"mode": "events", "timeout": 15.0, "channel_messages": True},
               {"bot_token": "xoxb-1234567890-abcdef", "signing_secret": "s1gn1ngS3cret0123"})),
    "sms": ({"config__from_number": "+15550100", "config__max_segments": "3"}, TWILIO,
            ({"from_number": "+15550100", "max_segments": 3},
             {"account_sid": TWILIO["credentials__account_sid"], "auth_token": "a" * 32})),
    "telegram": ({"config__mode": "polling"}, {"credentials__bot_token": "123456:" + "A" * 30},
                 ({"mode": "polling"}, {"bot_token": "123456:" + "A" * 30})),
    "voice": ({"config__from_number": "+15550100", "config__language": "en-US"}, TWILIO,
              ({"from_number": "+15550100", "language": "en-US"},
               {"account_sid": TWILIO["credentials__account_sid"], "auth_token": "a" * 32})),
    "webhook": ({"config__url": "https://hooks.example/in"}, {"credentials__signing_secret": "whsec-signing-secret-123"},
                ({"url": "https://hooks.example/in"}, {"signing_secret": "whsec-signing-secret-123"})),
    "whatsapp": ({"config__from_number": "whatsapp:+15550100"}, TWILIO,
                 ({"from_number": "whatsapp:+15550100"},
                  {"account_sid": TWILIO["credentials__account_sid"], "auth_token": "a" * 32})),
}

# kind -> the labels of its required fields, as the form names them
REQUIRED = {
    "cli": [],
    "email": ["From address"],
    "locmem": [],
    "slack": ["Bot token", "Signing secret"],
    "sms": ["From number", "Account SID", "Auth token"],
    "telegram": ["Mode", "Bot token"],
    "voice": ["From number", "Account SID", "Auth token"],
    "webhook": ["URL", "Signing secret"],
    "whatsapp": ["From number", "Account SID", "Auth token"],
}
