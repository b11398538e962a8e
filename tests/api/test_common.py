"""Small helpers of the API layer."""

from __future__ import annotations

import datetime as dt

import pytest

from kai_inventory.api.common import rfc3339_ms


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
