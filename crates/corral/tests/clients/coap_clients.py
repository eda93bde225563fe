"""aiocoap scenarios the whole-server CoAP tests drive (crates/corral/tests/coap.rs).

    python3 coap_clients.py post URI FORMAT DOCUMENT [con|non]
        POSTs DOCUMENT (JSON text) encoded as FORMAT: json (50), cbor (60), senml-json (110),
        senml-cbor (112, SenML names replaced by the RFC 8428 integer labels). Bodies larger
        than one block go block-wise (aiocoap does Block1 by itself). Prints
        "<code> <diagnostic payload>".
    python3 coap_clients.py observe URI COUNT
        Registers an observation, prints "registered <code>", then one line per notification
        payload until COUNT arrived (block-wise notifications are reassembled), then cancels.
"""
import asyncio
import json
import sys

import aiocoap
import cbor2

SENML_LABELS = {"bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6,
                "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8}
FORMATS = {"json": 50, "cbor": 60, "senml-json": 110, "senml-cbor": 112}


def encode(fmt, document):
    if fmt == "cbor":
        return cbor2.dumps(json.loads(document))
    if fmt == "senml-cbor":
        return cbor2.dumps([{SENML_LABELS[k]: v for k, v in record.items()} for record in json.loads(document)])
    return document.encode()


async def post(uri, fmt, document, mode="con"):
    context = await aiocoap.Context.create_client_context()
    tuning = aiocoap.Unreliable if mode == "non" else aiocoap.Reliable
    request = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=encode(fmt, document),
                              content_format=FORMATS[fmt], transport_tuning=tuning)
    response = await asyncio.wait_for(context.request(request).response, 30)
    print(f"{response.code.dotted} {response.payload.decode(errors='replace')}")
    await context.shutdown()


async def observe(uri, count):
    context = await aiocoap.Context.create_client_context()
    request = context.request(aiocoap.Message(code=aiocoap.GET, uri=uri, observe=0))
    first = await asyncio.wait_for(request.response, 10)
    print(f"registered {first.code.dotted}", flush=True)
    received = 0
    async def notifications():
        nonlocal received
        async for notification in request.observation:
            print(notification.payload.decode(), flush=True)
            received += 1
            if received >= int(count):
                request.observation.cancel()
                break
    await asyncio.wait_for(notifications(), 30)
    await context.shutdown()


if __name__ == "__main__":
    scenario, args = sys.argv[1], sys.argv[2:]
    asyncio.run({"post": post, "observe": observe}[scenario](*args))
