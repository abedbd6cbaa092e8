"""The retrieval server's read deadlines (slow loris) and Host allow-list (DNS rebinding), on real sockets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from helpers.overlap import WordOverlap
from sagegen.config import ServerConfig
from sagegen.server import create_app, running_server
from sagegen.server.guard import host_name, is_loopback_name

FAST = ServerConfig(header_timeout=1.0, body_timeout=1.0)
KEY = "guard-test-key-0123456789"


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with running_server(create_app(WordOverlap(), FAST), limits=FAST) as url:
        yield url


def _addr(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``sock``, sending ``trickle`` a byte at a time meanwhile."""
    t0 = time.monotonic()
    sock.settimeout(0.2)
    i = 0
    while time.monotonic() - t0 < seconds:
        try:
            if sock.recv(4096) == b"":
                return time.monotonic() - t0
        except TimeoutError:
            pass
        except ConnectionError:
            return time.monotonic() - t0
        if i < len(trickle):
            try:
                sock.send(trickle[i : i + 1])
            except OSError:
                return time.monotonic() - t0
            i += 1
    raise AssertionError(f"the server kept the connection open for {seconds} s")


def test_slow_headers_are_cut_off(base: str) -> None:
    head = b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    with socket.create_connection(_addr(base)) as s:
        assert _closed_within(s, 8, trickle=head) < 4


def test_an_idle_new_connection_is_cut_off(base: str) -> None:
    with socket.create_connection(_addr(base)) as s:
        assert _closed_within(s, 8) < 4


def test_a_slow_body_is_cut_off(base: str) -> None:
    body = json.dumps({"queries": ["paris"] * 20}).encode()
    head = (
        f"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(_addr(base)) as s:
        s.sendall(head)
        assert _closed_within(s, 10, trickle=body) < 5


def test_many_half_sent_connections_are_all_closed(base: str) -> None:
    socks = [socket.create_connection(_addr(base)) for _ in range(100)]
    try:
        for s in socks:
            s.sendall(b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(3.5)
        closed = 0
        for s in socks:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except (TimeoutError, ConnectionError):
                closed += 0
        assert closed == len(socks)
        # ... and the server still answers.
        r = httpx.post(base + "/retrieve", json={"queries": ["capital of France"]})
        assert r.status_code == 200
    finally:
        for s in socks:
            s.close()


def test_keep_alive_and_normal_requests_still_work(base: str) -> None:
    with httpx.Client(base_url=base) as c:
        for _ in range(3):
            body = {"queries": ["capital of Germany"], "topk": 1, "return_scores": True}
            r = c.post("/retrieve", json=body)
            assert r.status_code == 200 and r.json()["result"][0][0]["document"]["id"] == "p2"
            time.sleep(0.3)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "localhost."])
def test_loopback_host_names_are_served(base: str, host: str) -> None:
    port = _addr(base)[1]
    r = httpx.post(base + "/retrieve", json={"queries": ["paris"]}, headers={"Host": f"{host}:{port}"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("host", ["rebind.attacker.example", "192.168.1.5", "example.com:80"])
def test_a_keyless_server_refuses_other_host_names(base: str, host: str) -> None:
    r = httpx.post(base + "/retrieve", json={"queries": ["paris"]}, headers={"Host": host})
    assert r.status_code == 421 and "no API key" in r.json()["error"]
    assert httpx.get(base + "/health", headers={"Host": host}).status_code == 421


def test_a_keyed_server_serves_any_host_name() -> None:
    with running_server(create_app(WordOverlap(), FAST, api_key=KEY), limits=FAST) as url:
        r = httpx.post(
            url + "/retrieve",
            json={"queries": ["paris"]},
            headers={"Host": "search.cluster.internal", "Authorization": f"Bearer {KEY}"},
        )
        assert r.status_code == 200


def test_host_parsing() -> None:
    assert host_name("LocalHost:8000") == "localhost" and host_name("[::1]:8000") == "::1"
    assert host_name("::1") == "::1" and is_loopback_name("127.0.0.2")
    assert not is_loopback_name("localhost.evil")
