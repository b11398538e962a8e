"""Small helpers of the API layer."""

from __future__ import annotations

import datetime as dt

import pytest
from aiohttp.test_utils import make_mocked_request

from kai_inventory.api.common import parse_query, rfc3339_ms
from kai_inventory.api.errors import ApiError
from kai_inventory.api.schemas import JourneyParams


@pytest.mark.parametrize(
    "epoch_ms",
    [0, 999, 1_766_195_400_000, 1_766_195_400_999, 1_766_195_401_001, 253_402_300_799_999],
)
def test_rfc3339_ms_is_utc_with_exact_milliseconds(epoch_ms: int) -> None:
    second, ms = divmod(epoch_ms, 1000)
    expected = dt.datetime.fromtimestamp(second, dt.UTC).replace(microsecond=ms * 1000)
    text = rfc3339_ms(epoch_ms)
    assert text.endswith("Z")
    assert len(text) == 24
    assert dt.datetime.fromisoformat(text) == expected


def test_a_remembered_query_is_matched_on_its_raw_text_not_its_decoded_form() -> None:
    plain = make_mocked_request("GET", "/v1/schedules/S/availability?from=GMR&to=CN")
    first = parse_query(plain, JourneyParams)
    assert (first.from_, first.to) == ("GMR", "CN")
    assert parse_query(plain, JourneyParams) is first  # the same text: the kept result
    encoded = make_mocked_request("GET", "/v1/schedules/S/availability?from=GMR%26to%3DCN")
    with pytest.raises(ApiError):  # one parameter "GMR&to=CN", not two
        parse_query(encoded, JourneyParams)


def test_kept_read_bodies_are_bounded_by_bytes_as_well_as_entries() -> None:
    from kai_inventory.api.reads import BodyCache

    cache = BodyCache()
    big = b"x" * (BodyCache.MAX_BYTES // 2 + 1)
    cache.put(("seatmap", "S", "L", 1, 0, 1), big)
    assert cache.get(("seatmap", "S", "L", 1, 0, 1)) is big
    cache.put(("seatmap", "S", "L", 2, 0, 1), big)  # both would pass the byte bound
    assert cache.get(("seatmap", "S", "L", 1, 0, 1)) is None
    assert cache.get(("seatmap", "S", "L", 2, 0, 1)) is big
    for version in range(BodyCache.MAX_ENTRIES + 1):
        cache.put(("availability", "S", "L", version, 0, 1), b"{}")
    assert cache.get(("availability", "S", "L", 0, 0, 1)) is None
    assert cache.get(("availability", "S", "L", BodyCache.MAX_ENTRIES, 0, 1)) == b"{}"
