"""Edges of the protocol the real server cannot be made to show on cue, against a scripted peer on
loopback: refusals of a call's start, server messages the client cannot read, a call another
client carried, a connection that stops carrying a call. Each asserts what the pipeline sees."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from voicemeter import CallEnded, CallNotSettled, CallRejected, VoiceMeter

Script = Callable[[ServerConnection, list[dict[str, Any]]], Awaitable[None]]


@asynccontextmanager
async def scripted_peer(script: Script) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A WebSocket server running SCRIPT on each connection; yields its URL and every message
    the client sent, in order."""
    received: list[dict[str, Any]] = []

    async def handler(connection: ServerConnection) -> None:
        await script(connection, received)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v1/stream", received


async def messages(connection: ServerConnection, received: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async for text in connection:
        message = json.loads(text)
        received.append(message)
        yield message


async def answer(connection: ServerConnection, **message: Any) -> None:
    await connection.send(json.dumps(message))


async def test_a_rate_limited_start_is_sent_again() -> None:
    async def script(connection: ServerConnection, received: list[dict[str, Any]]) -> None:
        starts = 0
        async for message in messages(connection, received):
            if message["type"] == "call.start":
                starts += 1
                if starts == 1:
                    await answer(connection, type="error", code="rate_limited", message="slow down", call_id=message["call_id"])
                else:
                    await answer(connection, type="call.accepted", call_id=message["call_id"], call_limit="10", month_spent="0", month_limit="100")

    async with scripted_peer(script) as (url, received):
        vm = VoiceMeter(url=url, token="t")
        call = await vm.start_call(call_id="CA1", user_id="u1")
        await vm.close()
    assert [message["type"] for message in received] == ["call.start", "call.start"]
    assert call.accepted["call_limit"] == 10


async def test_a_start_refused_with_an_error_raises_it() -> None:
    async def script(connection: ServerConnection, received: list[dict[str, Any]]) -> None:
        async for message in messages(connection, received):
            await answer(connection, type="error", code="invalid_timestamp", message="call.start ts is outside the window", call_id=message["call_id"])

    async with scripted_peer(script) as (url, _):
        vm = VoiceMeter(url=url, token="t", start_timeout=5)
        with pytest.raises(CallRejected, match="outside the window") as rejected:
            await vm.start_call(call_id="CA1", user_id="u1")
        await vm.close()
    assert rejected.value.reason == "invalid_timestamp"


async def test_messages_the_client_cannot_read_do_not_stop_it() -> None:
    async def script(connection: ServerConnection, received: list[dict[str, Any]]) -> None:
        async for message in messages(connection, received):
            call_id = message["call_id"]
            if message["type"] == "call.start":
                await connection.send("[1, 2]")
                await answer(connection, type="ack", call_id=call_id, seq=None)
                await answer(connection, type="call.summary", call_id=call_id, cost="x", by_service=[])
                await answer(connection, type="call.accepted", call_id=call_id)
            elif message["type"] == "usage":
                await answer(connection, type="ack", call_id=call_id, seq=message["seq"])
            elif message["type"] == "call.end":
                await answer(connection, type="call.summary", call_id=call_id, cost="0.5", by_service={"x": "0.5"})

    async with scripted_peer(script) as (url, _):
        vm = VoiceMeter(url=url, token="t", settle_timeout=5)
        async with vm.call(call_id="CA1", user_id="u1") as call:
            await call.usage("x", "op", "requests", 1)
        await vm.close()
    assert call.summary is not None and str(call.summary.cost) == "0.5"


async def test_a_call_another_client_carried_is_not_continued_silently() -> None:
    async def script(connection: ServerConnection, received: list[dict[str, Any]]) -> None:
        async for message in messages(connection, received):
            if message["type"] == "call.start":
                await answer(connection, type="call.accepted", call_id=message["call_id"])
                # The server holds seqs 1 to 5 of this call, which this client never sent.
                await answer(connection, type="ack", call_id=message["call_id"], seq=5)

    async with scripted_peer(script) as (url, _):
        vm = VoiceMeter(url=url, token="t", settle_timeout=5)
        call = await vm.start_call(call_id="CA1", user_id="u1")
        with contextlib.suppress(CallEnded):  # once the ack is read, the call takes nothing more
            await call.usage("x", "op", "requests", 1)
        with pytest.raises(CallNotSettled, match="another client"):
            await call.end()
        await vm.close()


async def test_a_connection_that_stops_carrying_the_call_takes_it_back_once() -> None:
    async def script(connection: ServerConnection, received: list[dict[str, Any]]) -> None:
        async for message in messages(connection, received):
            if message["type"] == "call.start":
                await answer(connection, type="call.accepted", call_id=message["call_id"])
            elif message["type"] == "usage":
                # Another connection took the call: every frame here is answered unknown_call.
                await answer(connection, type="error", code="unknown_call", message="send call.start first",
                             call_id=message["call_id"], seq=message["seq"])
            if len(received) == 42:
                # A marker after the take-back's answers: what the client sends on seeing it
                # comes after anything those answers made it send.
                await answer(connection, type="budget.warning", call_id=message["call_id"], scope="call",
                             spent="1", limit="2", percent="50")

    async with scripted_peer(script) as (url, received):
        vm = VoiceMeter(url=url, token="t")
        call = await vm.start_call(call_id="CA1", user_id="u1")

        async def one_more(_: object) -> None:
            await call.usage("x", "op", "requests", 1)

        call.on_warning(one_more)
        for _ in range(20):
            await call.usage("x", "op", "requests", 1)
        async with asyncio.timeout(10):
            while not any(message.get("seq") == 21 for message in received):
                await asyncio.sleep(0.01)
        await vm.close()
    # The start and 20 frames; one take-back (the start and the 20 frames again); then seq 21.
    assert [message["type"] for message in received].count("call.start") == 2
    assert len(received) == 43
