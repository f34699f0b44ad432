"""The bad-input catalogue's server rows (filled in with the server hardening)."""

SERVER_CASES: list = []
