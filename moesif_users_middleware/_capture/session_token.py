"""Credentials from request headers: the session token and an (unverified) JWT claim.

- ``Authorization: Bearer <token>`` gives the token alone (scheme matched
  case-insensitively, surrounding whitespace stripped).
- ``Basic``, ``Digest``, ``Negotiate`` and ``NTLM`` credentials are ignored entirely: a
  password (or a per-request handshake) is never a session token and is never sent.
- Any other scheme (``Token abc`` as Django REST framework sends it, ``ApiKey abc``...)
  gives its credential part; a bare value without a scheme is taken as it is.
"""

from __future__ import annotations

import base64
import json
import threading

__all__ = ["MAX_TOKEN_LENGTH", "bearer_token", "jwt_claim", "token_from_authorization"]

MAX_TOKEN_LENGTH = 8192
_IGNORED_SCHEMES = frozenset({"basic", "digest", "negotiate", "ntlm"})
_CLAIM_CACHE_SIZE = 512

_claims: dict[tuple[str, str], str | None] = {}
_claims_lock = threading.Lock()


def token_from_authorization(value: str) -> str | None:
    """The session token carried by an ``Authorization`` header value, if any."""
    if value.startswith("Bearer "):  # the common case, without splitting
        return value[7:].strip() or None
    parts = value.split(None, 1)
    if not parts:
        return None
    if len(parts) == 1:
        bare = parts[0]
        scheme = bare.lower()
        return None if scheme == "bearer" or scheme in _IGNORED_SCHEMES else bare
    if parts[0].lower() in _IGNORED_SCHEMES:
        return None
    return parts[1].strip() or None


def bearer_token(value: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value; ``None`` for other schemes."""
    parts = value.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return None
    return parts[1].strip() or None


def jwt_claim(token: str, claim: str) -> str | None:
    """The claim ``claim`` of a JWT's payload as a string, WITHOUT verifying the signature.

    Anyone can mint a token with any claim: use this only where the token was verified
    upstream, or where an unverified id is acceptable. Malformed tokens, a missing claim
    or a claim that is not a string or integer give ``None``. Verdicts are cached per
    (token, claim) in a small bounded cache.
    """
    key = (token, claim)
    try:
        return _claims[key]
    except KeyError:
        pass
    value = _decode_claim(token, claim)
    with _claims_lock:
        if len(_claims) >= _CLAIM_CACHE_SIZE:
            del _claims[next(iter(_claims))]
        _claims[key] = value
    return value


def _decode_claim(token: str, claim: str) -> str | None:
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        data = json.loads(raw)
    except (ValueError, RecursionError):  # binascii.Error, JSONDecodeError are ValueErrors
        return None
    if not isinstance(data, dict):
        return None
    value = data.get(claim)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value
    return None
