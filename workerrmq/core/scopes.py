"""API key scopes, weakest first; each allows what the ones before it allow."""

SCOPES = ("read", "publish", "admin")
