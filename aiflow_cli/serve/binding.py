"""Where a server may listen: loopback by default; any other address needs a bearer token file, so
that an export is never served to a network without a password."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from aiflow_cli.errors import InputError

__all__ = ["MIN_TOKEN_CHARS", "is_loopback", "read_token", "check_bind"]

MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> str:
    from aiflow_cli.schemas.loading import read_text

    token = read_text(Path(path), "token file", max_bytes=4096).strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise InputError(f"{path}: a token is one line of at least {MIN_TOKEN_CHARS} characters without spaces",
                         "for example: python -c 'import secrets; print(secrets.token_urlsafe(32))' > token")
    return token


def check_bind(host: str, token_file: Path | None) -> str | None:
    """The token to require, or None on loopback without one; binding elsewhere needs a token."""
    if not is_loopback(host) and token_file is None:
        raise InputError(f"--host {host} is not loopback: serving to a network needs --token-file",
                         "write a secret token to a file and pass --token-file FILE (clients send it as a bearer token)")
    return read_token(token_file) if token_file is not None else None
