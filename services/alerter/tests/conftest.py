"""Fixtures for the alerter's evaluator tests: one private real Redis per test file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from podpulse.common.testing import redis_server


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server for this test file."""
    with redis_server() as url:
        yield url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on the file's Redis."""
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own, so tests sharing a Redis never see each other."""
    return f"t{uuid.uuid4().hex[:8]}:"
