"""Commands: bootstrap, chat, tokens, runconnectors, rotate_keys and friends."""
