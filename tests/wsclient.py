"""Talking to a real daphne over HTTP and WebSocket, as a browser would: sign in, call the REST API, open
the live socket and read its frames.

Cookies are kept by hand (a plain dict) rather than in an aiohttp cookie jar: the jar refuses cookies from
IP-address hosts such as 127.0.0.1, and a test wants to see exactly which cookies it sends."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import aiohttp
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

Frame = dict[str, Any]

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=60)


def cookie_header(cookies: Mapping[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


def ws_url(base_url: str, path: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url.removeprefix("https://") + path
    return "ws://" + base_url.removeprefix("http://") + path


def _response_cookies(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {name: morsel.value for name, morsel in response.cookies.items()}


async def sign_in(base_url: str, slug: str, login_id: str, password: str) -> dict[str, str]:
    """Sign in through the login form; returns the `sessionid` and `csrftoken` cookies."""
    url = f"{base_url}/{slug}/"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=HTTP_TIMEOUT) as http:
        async with http.get(url, allow_redirects=False) as response:
            assert response.status == 200, f"GET {url}: {response.status} {(await response.text())[:500]}"
            cookies = _response_cookies(response)
        assert "csrftoken" in cookies, f"GET {url} set no csrftoken cookie: {list(cookies)}"
        form = {"csrfmiddlewaretoken": cookies["csrftoken"], "login_id": login_id, "password": password}
        async with http.post(
            url,
            data=form,
            headers={"Cookie": cookie_header(cookies), "Origin": base_url, "Referer": url},
            allow_redirects=False,
        ) as response:
            body = await response.text()
            assert response.status == 302, f"sign-in as {login_id!r} on {url}: {response.status} {body[:500]}"
            cookies.update(_response_cookies(response))
    assert "sessionid" in cookies, f"sign-in as {login_id!r} set no sessionid cookie: {list(cookies)}"
    return {"sessionid": cookies["sessionid"], "csrftoken": cookies["csrftoken"]}


async def api_post(base_url: str, path: str, cookies: Mapping[str, str], body: Any) -> tuple[int, Any]:
    """POST JSON to the REST API as the signed-in person (CSRF header and cookie); returns (status, JSON)."""
    headers = {
        "Cookie": cookie_header(cookies),
        "X-CSRFToken": cookies["csrftoken"],
        "Origin": base_url,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=HTTP_TIMEOUT) as http,
        http.post(f"{base_url}{path}", data=json.dumps(body), headers=headers) as response,
    ):
        text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


async def post_notice(base_url: str, slug: str, cookies: Mapping[str, str], title: str, body: str = "") -> Frame:
    """Post a notice through the REST API (no web push); returns the created notice."""
    status, data = await api_post(
        base_url, f"/{slug}/api/notices/", cookies, {"title": title, "body": body, "push": False}
    )
    assert status == 201, f"POST notice: {status} {str(data)[:500]}"
    assert isinstance(data, dict)
    return data


def connect(
    base_url: str,
    slug: str,
    cookies: Mapping[str, str],
    origin: str | None = None,
    **kwargs: Any,
) -> ws_connect:
    """Open the live socket `/<slug>/ws/` with the session cookie and an Origin header (the site's own by
    default). Use as `async with connect(...) as ws:` or `ws = await connect(...)`; extra keyword arguments
    go to `websockets.connect` (ping_interval, open_timeout, ...)."""
    headers = {"Origin": origin if origin is not None else base_url}
    if cookies:
        headers["Cookie"] = cookie_header(cookies)
    return ws_connect(ws_url(base_url, f"/{slug}/ws/"), additional_headers=headers, **kwargs)


async def recv_json(ws: ClientConnection, timeout: float) -> Frame:
    text = await asyncio.wait_for(ws.recv(), timeout)
    frame = json.loads(text)
    assert isinstance(frame, dict), f"not a JSON object frame: {text!r}"
    return frame


async def recv_until(ws: ClientConnection, predicate: Callable[[Frame], bool], timeout: float = 10) -> Frame:
    """Read JSON frames until one matches `predicate`, and return it. Fails with the frames seen when none
    matches within `timeout` seconds; the connection closing raises websockets' ConnectionClosed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: list[Frame] = []
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no matching frame within {timeout}s; saw {seen[-10:]}")
        try:
            frame = await recv_json(ws, remaining)
        except TimeoutError:
            raise AssertionError(f"no matching frame within {timeout}s; saw {seen[-10:]}") from None
        if predicate(frame):
            return frame
        seen.append(frame)


def of_type(kind: str, **fields: Any) -> Callable[[Frame], bool]:
    """A predicate: the frame's type is `kind` and its other fields equal `fields`."""
    return lambda frame: frame.get("type") == kind and all(frame.get(k) == v for k, v in fields.items())


async def subscribe(ws: ClientConnection, stream: str, last_seq: int | None = None, timeout: float = 10) -> Frame:
    """Wait for `hello`, subscribe to `stream`, and return the snapshot (last_seq None) or `subscribed` frame."""
    await recv_until(ws, of_type("hello"), timeout)
    await ws.send(json.dumps({"type": "subscribe", "stream": stream, "last_seq": last_seq}))
    first = await recv_until(
        ws, lambda f: f.get("stream") == stream and f.get("type") in ("snapshot", "subscribed", "error"), timeout
    )
    assert first["type"] != "error", f"subscribe {stream}: {first}"
    if first["type"] == "snapshot":
        await recv_until(ws, of_type("subscribed", stream=stream), timeout)
    return first


def run_then_flush(scenario: Coroutine[Any, Any, None]) -> None:
    """Run a socket scenario in its own event loop, then drop this run's channel-layer keys from Redis
    (only those under the test run's own prefix) so no stale group outlives the test."""

    async def scenario_then_flush() -> None:
        try:
            await scenario
        finally:
            from channels.layers import channel_layers

            # A layer of its own: the shared one may hold connections of the publisher's send loop (another
            # event loop), which cannot be closed from this one.
            await channel_layers.make_backend("default").flush()

    asyncio.run(scenario_then_flush())


def usable_by_daphne(user: Any) -> Any:
    """The test settings hash passwords with MD5 for speed, but daphne runs the base settings, which do not
    know that hasher; store a hash it can verify."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password

    from tests import factories

    user.password = make_password(factories.PASSWORD, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    return user
