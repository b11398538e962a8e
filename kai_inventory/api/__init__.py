"""HTTP API v1: thin aiohttp handlers over the engine (holds, reads) and sales (the rest).

``setup_api(app, settings)`` installs the middleware, the routes and the OpenAPI document.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from kai_inventory.api import admin, bookings, holds, ops, reads
from kai_inventory.api.auth import TokenVerifier
from kai_inventory.api.common import MAX_BODY_BYTES, VERIFIER
from kai_inventory.api.middleware import api_middleware
from kai_inventory.api.openapi import build_openapi
from kai_inventory.api.waiting_room import setup_waiting_room
from kai_inventory.settings import Settings

__all__ = ["MAX_BODY_BYTES", "registered_paths", "setup_api"]


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", ops.healthz)
    r.add_get("/readyz", ops.readyz)
    r.add_get("/metrics", ops.metrics_endpoint)
    r.add_get("/v1/openapi.json", ops.openapi_endpoint)
    r.add_get("/v1/schedules", reads.search)
    r.add_get("/v1/schedules/{schedule_id}", reads.get_schedule)
    r.add_get("/v1/schedules/{schedule_id}/availability", reads.get_availability)
    r.add_get("/v1/schedules/{schedule_id}/seatmap", reads.get_seatmap)
    r.add_post("/v1/availability/query", reads.query_availability)
    r.add_put("/v1/admin/schedules/{schedule_id}", admin.put_schedule)
    r.add_post("/v1/admin/schedules/{schedule_id}/status", admin.set_status)
    r.add_post("/v1/holds", holds.create_hold)
    r.add_get("/v1/holds/{hold_id}", holds.get_hold)
    r.add_delete("/v1/holds/{hold_id}", holds.release_hold)
    r.add_post("/v1/holds/{hold_id}/confirm", holds.confirm_hold)
    r.add_get("/v1/bookings/{booking_number}", bookings.get_booking)
    r.add_post("/v1/bookings/{booking_number}/cancel", bookings.cancel_booking)


def registered_paths(app: web.Application) -> dict[str, set[str]]:
    """Route template -> methods (HEAD and static file routes left out)."""
    paths: dict[str, set[str]] = {}
    for route in app.router.routes():
        resource = route.resource
        if resource is None or isinstance(resource, web.StaticResource):
            continue
        if route.method in ("HEAD", "*"):
            continue
        paths.setdefault(resource.canonical, set()).add(route.method.lower())
    return paths


def setup_api(app: web.Application, settings: Settings) -> None:
    app.middlewares.append(api_middleware)
    app[VERIFIER] = TokenVerifier(settings.jwt_secret)
    reads.setup_reads(app)
    setup_routes(app)
    setup_waiting_room(app)  # peak-sale waiting room: its routes and admission loop

    document: dict[str, bytes] = {}
    app[ops.OPENAPI_DOCUMENT] = document

    async def build_document(app: web.Application) -> None:
        # Built at start-up, when every part (ws, waiting room) has registered its routes.
        document["body"] = msgspec.json.encode(build_openapi(settings, registered_paths(app)))

    app.on_startup.append(build_document)
