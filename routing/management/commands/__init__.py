"""Commands: invite (a person by email, to choose their own password)."""
