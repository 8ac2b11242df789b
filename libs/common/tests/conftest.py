"""Fixtures shared by podpulse.common's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from podpulse.common.testing import redis_server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the whole session, on a free loopback port."""
    with redis_server() as url:
        yield url
