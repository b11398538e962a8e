"""Every message on ``/v1/ws``, as msgspec Structs (contract: "WebSocket: GET /v1/ws").

Client messages form one tagged union (tag field ``op``) decoded by one ``Decoder`` built once.
Server messages are encoded with one ``Encoder``. Update frames are the hot path: their common
body is encoded once per view and the per-subscription head is spliced on as bytes
(:func:`update_frame`), so no subscriber costs a JSON encode.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from kai_inventory.domain import SCHEDULE_ID_PATTERN, STATION_PATTERN
from kai_inventory.engine.views import ClassAvailability
from kai_inventory.ws.queue_watch import QueueOp

ScheduleId = Annotated[str, msgspec.Meta(pattern=SCHEDULE_ID_PATTERN)]
Station = Annotated[str, msgspec.Meta(pattern=STATION_PATTERN)]
SubId = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
SeatState = Literal["free", "held", "sold"]


# ---- client -> server ------------------------------------------------------------------------


class Subscribe(
    msgspec.Struct,
    tag_field="op",
    tag="subscribe",
    forbid_unknown_fields=True,
    rename={"from_": "from"},
):
    schedule_id: ScheduleId
    from_: Station | None = None  # default: the first stop
    to: Station | None = None  # default: the last stop
    seats: bool = False


class Unsubscribe(msgspec.Struct, tag_field="op", tag="unsubscribe", forbid_unknown_fields=True):
    sub: SubId


class Ping(msgspec.Struct, tag_field="op", tag="ping", forbid_unknown_fields=True):
    pass


class Auth(msgspec.Struct, tag_field="op", tag="auth", forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


ClientMessage = Subscribe | Unsubscribe | Ping | Auth | QueueOp  # QueueOp: waiting room

_DECODER = msgspec.json.Decoder(ClientMessage)


class ProtocolError(Exception):
    """A client message that cannot be acted on; ``code`` goes into the error frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_client(data: str | bytes) -> ClientMessage:
    try:
        message: ClientMessage = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise ProtocolError("invalid_message", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("malformed_json", str(exc)) from None
    return message


# ---- server -> client ------------------------------------------------------------------------


class Subscribed(msgspec.Struct, tag_field="type", tag="subscribed", rename={"from_": "from"}):
    sub: str
    schedule_id: str
    from_: str
    to: str
    seats: bool


class Unsubscribed(msgspec.Struct, tag_field="type", tag="unsubscribed"):
    sub: str


class Authenticated(msgspec.Struct, tag_field="type", tag="authenticated"):
    user: str


class Snapshot(
    msgspec.Struct, tag_field="type", tag="snapshot", rename={"from_": "from"}, omit_defaults=True
):
    sub: str
    schedule_id: str
    from_: str
    to: str
    version: int
    classes: list[ClassAvailability]
    seats: dict[str, str] | None = None


class UpdateBody(msgspec.Struct, omit_defaults=True):
    """An update without its ``type`` and ``sub``: encoded once per view and tick."""

    schedule_id: str
    version: int
    classes: list[ClassAvailability]
    seats: dict[str, str] | None = None


class Update(msgspec.Struct, tag_field="type", tag="update", omit_defaults=True):
    """The full update message (what :func:`update_frame` produces, as a Struct for clients)."""

    sub: str
    schedule_id: str
    version: int
    classes: list[ClassAvailability]
    seats: dict[str, str] | None = None


class ScheduleStatus(msgspec.Struct, tag_field="type", tag="schedule_status"):
    schedule_id: str
    status: str
    delay_minutes: int
    reason: str | None


class Pong(msgspec.Struct, tag_field="type", tag="pong"):
    pass


class Error(msgspec.Struct, tag_field="type", tag="error"):
    code: str
    message: str


ServerMessage = (
    Subscribed | Unsubscribed | Authenticated | Snapshot | Update | ScheduleStatus | Pong | Error
)

_ENCODER = msgspec.json.Encoder()
encode = _ENCODER.encode

PONG_FRAME = encode(Pong())
UPDATE_HEAD = b'{"type":"update","sub":"'


def update_tail(body: UpdateBody) -> bytes:
    """``body`` encoded once, without its opening brace, ready to follow a subscription head."""
    return encode(body)[1:]


def update_frame(sub_head: bytes, tail: bytes) -> bytes:
    """One subscription's update: ``sub_head`` from :func:`sub_head`, ``tail`` shared per view."""
    return sub_head + tail


def sub_head(sub: str) -> bytes:
    """The per-subscription prefix; sub ids are server-made ``[a-z0-9]`` so need no escaping."""
    return UPDATE_HEAD + sub.encode() + b'",'


def error_frame(code: str, message: str) -> bytes:
    return encode(Error(code, message))
