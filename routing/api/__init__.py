"""REST API of routing (/api/v1/…): identities, pairing codes, preferences and notifications; views parse, call one service, render."""
