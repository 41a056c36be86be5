"""``verify`` from a Connection's extra: a boolean written as text is a boolean, never a path."""

from __future__ import annotations

import pytest

from stationflow.connections import verify_setting


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        (" Yes ", True),
        ("", True),
        ("false", False),
        ("FALSE", False),
        ("0", False),
        ("no", False),
        ("/etc/ssl/private-ca.pem", "/etc/ssl/private-ca.pem"),
        (0, False),
        (1, True),
    ],
)
def test_verify_setting(value, expected):
    assert verify_setting(value) == expected
