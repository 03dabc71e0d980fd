"""Connects to a VoiceMeter stream with the `websockets` client, as Python voice pipelines do, and
prints what a refused upgrade looks like to it: one JSON line with the exception's class, the HTTP
status and the response body. Usage: websockets_refusal.py URL [TOKEN]"""

import asyncio
import json
import sys

import websockets
from websockets.exceptions import InvalidStatus


async def main(url: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=5):
            print(json.dumps({"exception": None}))
    except InvalidStatus as refused:
        response = refused.response
        print(json.dumps({
            "exception": "InvalidStatus",
            "status": response.status_code,
            "reason": response.reason_phrase,
            "body": response.body.decode("utf-8"),
        }))
    except Exception as other:  # the defect this guards against: InvalidMessage on HTTP/1.0
        print(json.dumps({"exception": type(other).__name__, "message": str(other)}))


asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
