"""Frames the hub writes straight to daphne connections are valid WebSocket frames a client reads back."""

from __future__ import annotations

import functools

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from consumers.wire import raw_writer, text_frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("the frame was incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_text_frame_round_trips_at_every_length_encoding(size: int) -> None:
    text = ("安否" * size)[:size]
    frame = parse(text_frame(text))
    assert frame.opcode is Opcode.TEXT and frame.fin
    assert frame.data.decode("utf-8") == text


class FakeDaphneProtocol:
    STATE_OPEN = 1
    STATE_CLOSING = 2

    def __init__(self) -> None:
        self.state = self.STATE_OPEN
        self.written: list[bytes] = []
        self.transport = self

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def sendMessage(self, payload: bytes, binary: bool = False) -> None:
        raise AssertionError("the raw path must not go through autobahn")


class Server:
    async def handle_reply(self, protocol: object, message: object) -> None:
        raise AssertionError("the raw path must not go through daphne's reply hop")


class SessionWrapper:
    def __init__(self, send: object) -> None:
        self.real_send = send

    async def send(self, message: object) -> None:
        raise AssertionError("unused")


def test_raw_writer_finds_the_connection_behind_the_session_wrapper_and_stops_when_it_closes() -> None:
    protocol = FakeDaphneProtocol()
    send = SessionWrapper(functools.partial(Server().handle_reply, protocol)).send
    write = raw_writer(send)
    assert write is not None
    assert write(b"frame") is True
    assert protocol.written == [b"frame"]
    protocol.state = protocol.STATE_CLOSING
    assert write(b"late") is False  # the consumer falls back to the ASGI send, which daphne drops
    assert protocol.written == [b"frame"]


def test_anything_but_daphne_keeps_the_asgi_send() -> None:
    async def communicator_send(message: object) -> None:
        return None

    assert raw_writer(communicator_send) is None
    assert raw_writer(functools.partial(communicator_send)) is None
