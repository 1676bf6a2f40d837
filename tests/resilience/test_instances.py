"""The private servers the fault tests restart: they come up, go down and come back on their own ports."""

from __future__ import annotations

import psycopg
import redis

from tests.resilience.instances import PrivatePostgres, PrivateRedis


def test_a_private_redis_restarts_and_loses_its_data() -> None:
    server = PrivateRedis()
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        server.restart()
        client = redis.Redis.from_url(server.url)
        assert client.get("k") is None  # no persistence: a restart is a clean start
    finally:
        server.stop()


def test_a_private_postgres_restarts_and_keeps_its_data() -> None:
    server = PrivatePostgres()
    server.init()
    server.start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (n int)")
            conn.execute("INSERT INTO t VALUES (1)")
        server.restart()
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT n FROM t").fetchall() == [(1,)]
    finally:
        server.remove()
