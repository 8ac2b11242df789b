"""The test helpers: a real throwaway Redis and free ports."""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path

import pytest
import redis

from podpulse.common.testing import RestartableRedis, free_port, redis_server


def test_redis_server_serves_then_goes_away() -> None:
    """Inside the block the URL answers PING and stores data; after it, nothing listens."""
    with redis_server() as url:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        assert client.ping() is True
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.close()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()


def test_missing_redis_server_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without redis-server on PATH the error says so and how to install it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with (
        pytest.raises(RuntimeError, match="redis-server is not on PATH; install Redis"),
        redis_server(),
    ):
        pass


def test_free_port_can_be_bound() -> None:
    """free_port() returns a loopback port that is free to bind."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        assert sock.getsockname()[1] == port


def test_restartable_redis_keeps_its_port_and_data_across_a_restart(tmp_path: Path) -> None:
    """Stopped (SIGTERM) and started again: the same URL answers with what was written, from
    the append-only file; after close() nothing listens."""
    server = RestartableRedis(tmp_path)
    server.start()
    try:
        client = redis.Redis.from_url(server.url, socket_connect_timeout=0.5)
        client.set("kept", "yes")
        server.restart()
        assert client.get("kept") == b"yes"
        client.close()
    finally:
        server.close()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()


def test_the_logger_registry_can_be_walked_while_a_logger_is_added() -> None:
    """pytest walks every logger around each test phase; a logger a test's thread creates
    meanwhile must not break that walk (it failed a test in CI with "dictionary changed size
    during iteration")."""
    walked = 0
    for _ in logging.Logger.manager.loggerDict.values():
        if walked == 0:
            logging.getLogger(f"podpulse.test.{uuid.uuid4().hex}")  # a new one, mid-walk
        walked += 1
    assert walked >= 1
