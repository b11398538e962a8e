"""Tokens on the WebSocket front, by the API's rules (``kai_inventory.api.auth``).

A subscription reads, so it needs a token with ``inventory:read`` or ``inventory:hold`` (as the
REST reads; admin passes every check), unless ``KAI_ANONYMOUS_READS=1``. A token that is present
is verified all the same. The waiting room's ``queue`` op needs ``inventory:hold``, as its REST
twin. In demo mode the page fetches a token for a demo user from ``GET /v1/demo/token``.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from kai_inventory.api.auth import (
    SCOPE_HOLD,
    SCOPE_READ,
    Principal,
    TokenVerifier,
    issue_token,
)
from kai_inventory.api.errors import PROBLEM_CONTENT_TYPE, ApiError, problem_body

DEMO_SCOPES = f"{SCOPE_READ} {SCOPE_HOLD}"
DEMO_TTL_S = 3600


READ_SCOPES = frozenset({SCOPE_READ, SCOPE_HOLD})  # as the REST reads (``api.common.reader``)


def check_read(verifier: TokenVerifier, token: str) -> Principal:
    """The token's principal, or ApiError unauthorized (401) / forbidden (403)."""
    principal = verifier.verify(token)
    if principal.is_admin or not principal.scopes.isdisjoint(READ_SCOPES):
        return principal
    raise ApiError("forbidden", f"the token lacks the scope {SCOPE_READ} or {SCOPE_HOLD}")


def may_hold(principal: Principal) -> bool:
    return principal.is_admin or SCOPE_HOLD in principal.scopes


def problem_response(error: ApiError) -> web.Response:
    return web.Response(
        status=error.status,
        body=problem_body(error.problem()),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=error.headers,
    )


def demo_user(requested: str | None) -> str:
    """Keep a page's remembered demo user id when it is one; else make a new one."""
    if (
        requested
        and requested.startswith("demo-")
        and 6 <= len(requested) <= 40
        and (requested[5:].isalnum())
    ):
        return requested
    return "demo-" + secrets.token_hex(6)


def demo_token(secret: str, user: str) -> str:
    return issue_token(secret, user, DEMO_SCOPES, DEMO_TTL_S)
