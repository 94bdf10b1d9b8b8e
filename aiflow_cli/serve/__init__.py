"""Serving: exported pairs across a real or emulated link on the KServe v2 protocol.

``device/``, ``link/`` and ``server/`` are the three roles; they share ``protocol`` (v2 messages),
``wire`` (what crosses the link), ``binding`` (tokens, where a server may listen) and ``launch``
(a server's settings and its child process). ``studies/`` measures all three together.
"""
