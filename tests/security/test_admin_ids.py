"""Issue 12, low: authenticated admin calls with huge ids answered 500 (OverflowError)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.anyio

Runner = Any  # the `b24` fixture of conftest.py
ADMIN = {"Authorization": "Bearer admin-secret"}
HUGE = "999999999999999999999"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", f"/admin/jobs/{HUGE}", 404),
        ("POST", f"/admin/dead-letters/{HUGE}/replay", 404),
        ("GET", "/admin/jobs/9223372036854775808", 404),
        ("GET", "/admin/jobs/²", 422),
        ("GET", "/admin/dead-letters?limit=²", 422),
    ],
)
async def test_out_of_range_ids_in_paths(b24: Runner, method: str, path: str, status: int) -> None:
    async with b24() as s:
        response = await s.h.client.request(method, path, headers=ADMIN)
        assert response.status_code == status, response.text
        assert "error" in response.json()


@pytest.mark.parametrize(
    "body",
    [
        '{"job_ids": [1e30]}',
        f'{{"job_ids": [{HUGE}]}}',
        '{"job_ids": [9223372036854775808]}',
        '{"job_ids": [-1]}',
    ],
)
async def test_out_of_range_ids_in_bodies(b24: Runner, body: str) -> None:
    async with b24() as s:
        response = await s.h.client.post(
            "/admin/replay",
            content=body,
            headers={**ADMIN, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, response.text  # the admin API's bad-input status
        assert response.json()["error"]
