"""A device's side of the twin over CoAP, with aiocoap, driven by crates/corral/tests/coap.rs.
URIs carry the device token (?t=...). Every wait is bounded and prints "timeout" when it runs out.

    python3 coap_twin.py observe URI
        GET URI (devices/<id>/twin/desired) with Observe 0. Prints "registered <code> <Observe
        value, or - when not registered>", then "desired <version> <desired as compact JSON>" for
        the answer and for each notification (block-wise ones reassembled), until stdin closes;
        then cancels the observation (GET with Observe 1). "ended <why>" if the observation ends
        first.
    python3 coap_twin.py request METHOD URI [BODY]
        One Confirmable request (GET, FETCH, POST, PATCH, iPATCH, PUT) with BODY as JSON
        (Content-Format 50) when given; bodies over a block go block-wise. Prints "<code>
        <payload>".
"""
import asyncio
import json
import sys

import aiocoap

WAIT = 15


def say(line):
    print(line, flush=True)


def document(payload):
    doc = json.loads(payload)
    return f"desired {doc['version']} {json.dumps(doc['desired'], sort_keys=True, separators=(',', ':'))}"


async def observe(uri):
    context = await aiocoap.Context.create_client_context()
    request = context.request(aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0))
    try:
        first = await asyncio.wait_for(request.response, WAIT)
    except asyncio.TimeoutError:
        say("timeout")
        return
    observe_value = first.opt.observe
    say(f"registered {first.code.dotted} {'-' if observe_value is None else observe_value}")
    if not first.code.is_successful():
        await context.shutdown()
        return
    say(document(first.payload))

    async def notifications():
        try:
            async for notification in request.observation:
                say(document(notification.payload))
            say("ended by the server")
        except Exception as e:  # the observation failed: say so rather than hang
            say(f"ended {type(e).__name__} {e}")

    listening = asyncio.ensure_future(notifications())
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.wait([listening, stdin_closed], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if not listening.done():
        request.observation.cancel()
        listening.cancel()
    await context.shutdown()


async def request(method, uri, body=None):
    context = await aiocoap.Context.create_client_context()
    message = aiocoap.Message(code=getattr(aiocoap.Code, method), uri=uri)
    if body is not None:
        message.payload = body.encode()
        message.opt.content_format = 50
    try:
        response = await asyncio.wait_for(context.request(message).response, 30)
        say(f"{response.code.dotted} {response.payload.decode(errors='replace')}")
    except asyncio.TimeoutError:
        say("timeout")
    await context.shutdown()


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "observe":
        asyncio.run(observe(*args))
    elif mode == "request":
        asyncio.run(request(*args))
    else:
        sys.exit(f"unknown mode {mode}")
