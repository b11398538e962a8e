"""Bearer tokens: the verifier on its own, then every 401/403 path through the real app."""

from __future__ import annotations

import argparse
import base64
import json
import time

import jwt
import pytest

from kai_inventory.api.auth import TokenVerifier, issue_token, token_command
from kai_inventory.api.errors import ApiError
from kai_inventory.settings import Settings
from tests.api.conftest import (
    ADMIN,
    ADMIN_HEADERS,
    HOLD,
    READ,
    SECRET,
    auth,
    class_hold,
    create_schedule,
    problem,
    schedule_body,
    token,
)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def alg_none_token(sub: str = "mallory", scope: str = HOLD) -> str:
    header = _b64({"alg": "none", "typ": "JWT"})
    claims = _b64({"sub": sub, "scope": scope, "exp": int(time.time()) + 3600})
    return f"{header}.{claims}."


def test_verifier_accepts_a_valid_token_and_reads_scopes() -> None:
    principal = TokenVerifier(SECRET).verify(token("alice", f"{HOLD} {READ}"))
    assert principal.sub == "alice"
    assert principal.scopes == {HOLD, READ}
    assert not principal.is_admin
    assert principal.owner == "alice"


def test_admin_principal_has_no_owner_filter() -> None:
    assert TokenVerifier(SECRET).verify(token("ops", ADMIN)).owner is None


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(alg_none_token(), id="alg-none"),
        pytest.param(token("alice", secret="another-secret-0123456789abcdef-xyz"), id="forged"),
        pytest.param(
            jwt.encode({"sub": "a", "scope": HOLD}, SECRET, algorithm="HS256"), id="no-exp"
        ),
        pytest.param(
            jwt.encode({"scope": HOLD, "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"),
            id="no-sub",
        ),
        pytest.param(
            jwt.encode(
                {"sub": "a", "scope": HOLD, "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"
            ),
            id="hs512",
        ),
        pytest.param(issue_token(SECRET, "alice", HOLD, 10, now=time.time() - 100), id="expired"),
        pytest.param("not.a.token", id="garbage"),
    ],
)
def test_verifier_refuses(bad: str) -> None:
    with pytest.raises(ApiError) as caught:
        TokenVerifier(SECRET).verify(bad)
    assert caught.value.status == 401


def test_cached_token_is_refused_once_it_expires() -> None:
    verifier = TokenVerifier(SECRET)
    short = issue_token(SECRET, "alice", HOLD, 1)
    assert verifier.verify(short).sub == "alice"
    time.sleep(1.1)
    with pytest.raises(ApiError):
        verifier.verify(short)


def test_cache_is_bounded() -> None:
    verifier = TokenVerifier(SECRET, cache_size=3)
    for i in range(10):
        verifier.verify(token(f"user{i}"))
    assert len(verifier._cache) == 3


def test_token_command_prints_a_token_the_service_accepts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(jwt_secret=SECRET)
    args = argparse.Namespace(sub="budi", scope="inventory:hold  inventory:read", ttl=120)
    assert token_command(settings, args) == 0
    printed = capsys.readouterr().out.strip()
    principal = TokenVerifier(SECRET).verify(printed)
    assert principal.sub == "budi"
    assert principal.scopes == {HOLD, READ}
    assert 110 < principal.exp - time.time() <= 120


def test_token_command_refuses_unknown_scope(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(sub="budi", scope="inventory:everything", ttl=120)
    assert token_command(Settings(jwt_secret=SECRET), args) == 2
    assert "unknown scope" in capsys.readouterr().err


# --- through the app -----------------------------------------------------------------------


async def test_holds_need_a_token(client) -> None:  # type: ignore[no-untyped-def]
    response = await client.get("/v1/holds/x.y")
    body = await problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert body["detail"]


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(f"Bearer {alg_none_token()}", id="alg-none"),
        pytest.param(f"Bearer {token('a', secret='x' * 40)}", id="forged"),
        pytest.param(
            f"Bearer {issue_token(SECRET, 'a', HOLD, 10, now=time.time() - 100)}", id="expired"
        ),
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic-scheme"),
        pytest.param("Bearer", id="empty"),
    ],
)
async def test_bad_tokens_get_401_on_hold_endpoints(client, header: str) -> None:  # type: ignore[no-untyped-def]
    response = await client.post(
        "/v1/holds",
        json={"schedule_id": "x", "from": "GMR", "to": "YK", "class": "economy", "count": 1},
        headers={"Authorization": header},
    )
    await problem(response, 401, "unauthorized")


async def test_hold_endpoints_need_the_hold_scope(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    response = await client.post(
        "/v1/holds",
        json=class_hold(schedule_id),
        headers=auth("reader", READ),
    )
    await problem(response, 403, "forbidden")
    response = await client.get("/v1/bookings/KAI123", headers=auth("reader", READ))
    await problem(response, 403, "forbidden")


async def test_admin_endpoints_refuse_non_admin_tokens(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    for headers in (auth("alice", HOLD), auth("alice", f"{HOLD} {READ}")):
        response = await client.put(
            f"/v1/admin/schedules/{schedule_id}", json=schedule_body(), headers=headers
        )
        await problem(response, 403, "forbidden")
        response = await client.post(
            f"/v1/admin/schedules/{schedule_id}/status",
            json={"status": "cancelled"},
            headers=headers,
        )
        await problem(response, 403, "forbidden")
    response = await client.put(f"/v1/admin/schedules/{schedule_id}", json=schedule_body())
    await problem(response, 401, "unauthorized")
    # and nothing changed: still on sale
    status = await (await client.get(f"/v1/schedules/{schedule_id}")).json()
    assert status["status"] == "scheduled"


async def test_reads_are_anonymous_but_an_invalid_token_on_a_read_is_401(client) -> None:  # type: ignore[no-untyped-def]
    schedule_id = await create_schedule(client)
    url = f"/v1/schedules/{schedule_id}/availability"
    assert (await client.get(url)).status == 200
    assert (await client.get(url, headers=auth("anyone", HOLD))).status == 200
    response = await client.get(url, headers={"Authorization": f"Bearer {alg_none_token()}"})
    await problem(response, 401, "unauthorized")


async def test_reads_need_a_read_token_when_anonymous_reads_are_off(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(anonymous_reads=False)
    schedule_id = await create_schedule(client)
    url = f"/v1/schedules/{schedule_id}/availability"
    await problem(await client.get(url), 401, "unauthorized")
    await problem(await client.get(url, headers=auth("x", "")), 403, "forbidden")
    assert (await client.get(url, headers=auth("x", READ))).status == 200
    assert (await client.get(url, headers=auth("x", HOLD))).status == 200
    assert (await client.get(url, headers=ADMIN_HEADERS)).status == 200
