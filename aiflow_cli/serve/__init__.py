"""Serving: exported pairs across a real or emulated link on the KServe v2 protocol."""
