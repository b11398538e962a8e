"""Ticket QR payloads a gate can check offline: ``base64url(json) + "." + base64url(hmac)``.

The MAC is HMAC-SHA256 under a key derived from ``KAI_JWT_SECRET`` (HMAC of a fixed label), so
the QR key is never the token key itself. A gate holding the derived key verifies a ticket with
no network; cancellations still need the gate's periodic sync of cancelled ticket numbers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import msgspec

from kai_inventory.settings import Settings

_LABEL = b"kai-inventory/ticket-qr/v1"
_ENCODER = msgspec.json.Encoder(order="sorted")


def qr_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _LABEL, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_qr(key: bytes, payload: dict[str, Any]) -> str:
    body = _b64(_ENCODER.encode(payload))
    mac = hmac.new(key, body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify_qr(settings: Settings, qr: str) -> dict[str, Any] | None:
    """The payload when the MAC checks, else None (tampered, foreign key, malformed)."""
    body, dot, mac = qr.partition(".")
    if not dot or not body or not mac:
        return None
    expected = hmac.new(qr_key(settings.jwt_secret), body.encode(), hashlib.sha256).digest()
    try:
        given = _unb64(mac)
        if not hmac.compare_digest(expected, given):
            return None
        payload = msgspec.json.decode(_unb64(body))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    return payload if isinstance(payload, dict) else None
