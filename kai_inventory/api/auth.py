"""Bearer tokens: HS256 JWTs signed with ``KAI_JWT_SECRET``; scopes; the ``token`` command.

Verification pins the algorithm (``alg: none`` and every other algorithm are refused) and
requires ``exp`` and ``sub``. A verified token is cached until its ``exp`` in a small LRU keyed
by the raw token, so a client's repeated calls do not pay for HMAC and JSON parsing each time.
Tokens are never logged.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import time
from typing import Any

import jwt
from aiohttp import web

from kai_inventory.api.errors import ApiError
from kai_inventory.settings import Settings

SCOPE_READ = "inventory:read"
SCOPE_HOLD = "inventory:hold"
SCOPE_ADMIN = "inventory:admin"
SCOPES = (SCOPE_READ, SCOPE_HOLD, SCOPE_ADMIN)
ALGORITHM = "HS256"
MAX_SUB_LENGTH = 128
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="kai-inventory"'}


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. ``sub`` is None for an anonymous reader."""

    sub: str | None
    scopes: frozenset[str]
    exp: float = 0.0

    @property
    def is_admin(self) -> bool:
        return SCOPE_ADMIN in self.scopes

    @property
    def owner(self) -> str | None:
        """The owner filter for holds and bookings: None (any owner) for admins."""
        return None if self.is_admin else self.sub

    @property
    def user(self) -> str:
        """The user id of an authenticated caller."""
        if self.sub is None:
            raise ApiError("unauthorized", "a bearer token is required", headers=_CHALLENGE)
        return self.sub


ANONYMOUS = Principal(None, frozenset())


def unauthorized(detail: str) -> ApiError:
    return ApiError("unauthorized", detail, headers=_CHALLENGE)


class TokenVerifier:
    """Verifies bearer tokens; remembers verified ones until they expire (LRU, bounded)."""

    def __init__(self, secret: str, cache_size: int = 10_000) -> None:
        self._secret = secret
        self._cache: collections.OrderedDict[str, Principal] = collections.OrderedDict()
        self._cache_size = cache_size

    def verify(self, token: str) -> Principal:
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.exp > now:
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
            raise unauthorized("the token has expired")
        principal = self._decode(token)
        self._cache[token] = principal
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"the token is not valid ({type(exc).__name__})") from None
        sub = claims.get("sub")
        scope = claims.get("scope", "")
        exp = claims.get("exp")
        if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUB_LENGTH or not sub.isprintable():
            raise unauthorized(f"the token's sub must be 1..{MAX_SUB_LENGTH} printable characters")
        if not isinstance(scope, str):
            raise unauthorized("the token's scope must be a space-separated string")
        if not isinstance(exp, int | float):
            raise unauthorized("the token's exp must be a number")
        return Principal(sub, frozenset(scope.split()), float(exp))


def bearer_token(request: web.Request) -> str | None:
    """The raw token of an ``Authorization: Bearer`` header; None when there is no header."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    return token


def authenticate(
    request: web.Request,
    verifier: TokenVerifier,
    *,
    any_of: tuple[str, ...],
    anonymous_ok: bool = False,
) -> Principal:
    """The caller, checked for one of ``any_of`` scopes (admin passes every check).

    With ``anonymous_ok`` a request without a token is let through as ``ANONYMOUS``; a token
    that is present is verified all the same (an invalid one is 401, never silently ignored).
    """
    token = bearer_token(request)
    if token is None:
        if anonymous_ok:
            return ANONYMOUS
        raise unauthorized("a bearer token is required")
    principal = verifier.verify(token)
    if anonymous_ok or principal.is_admin or not principal.scopes.isdisjoint(any_of):
        return principal
    raise ApiError("forbidden", f"the token lacks the scope {' or '.join(any_of)}")


def issue_token(secret: str, sub: str, scope: str, ttl_s: int, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "scope": scope, "iat": issued, "exp": issued + ttl_s}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def token_command(settings: Settings, args: argparse.Namespace) -> int:
    """``kai-inventory token --sub USER --scope "SCOPES" [--ttl S]``: print a signed token."""
    import sys

    sub: str = args.sub
    scope: str = " ".join(args.scope.split())
    ttl: int = args.ttl
    unknown = [s for s in scope.split() if s not in SCOPES]
    if unknown:
        print(
            f"kai-inventory token: unknown scope {unknown[0]!r} (known: {', '.join(SCOPES)})",
            file=sys.stderr,
        )
        return 2
    if not 1 <= len(sub) <= MAX_SUB_LENGTH:
        print(f"kai-inventory token: --sub must be 1..{MAX_SUB_LENGTH} characters", file=sys.stderr)
        return 2
    if ttl < 1:
        print("kai-inventory token: --ttl must be at least 1 second", file=sys.stderr)
        return 2
    print(issue_token(settings.jwt_secret, sub, scope, ttl))
    return 0
