"""A fleet of HTTP devices that take firmware campaigns, in one process, driven by
crates/corral/tests/campaigns.rs. Standard library only, plus `cryptography` for Ed25519.

    python3 firmware_agent.py run --base http://HOST:PORT --devices FILE --trusted-key B64 [options]
        FILE holds one device a line, "<id> <token>". Each device (a thread) long-polls
        GET /api/v1/devices/<id>/commands/next?wait=N with its token. On a `firmware.update`
        command it reports `downloading` in its reported twin
        ({"campaigns": {"<campaign>": {"state": ...}}}), downloads the artifact from the
        command's short-lived `url` in `Range` requests of --chunk bytes (each answer must be 206
        with the right Content-Range, and the same ETag through If-Range), checks the size and the
        SHA-256 against the manifest and the Ed25519 signature over the manifest message with the
        TRUSTED key given here (never the key the manifest carries), then reports `downloaded`,
        `installing` and `succeeded` (or `failed` with a reason), and answers the command.
        Options:
          --fail DEV[,DEV...]    these devices report `failed`, reason "flash write error"
          --fail-fraction F      so does a fixed share F of the devices (by a hash of the id)
          --expect valid|tampered  what the downloads should be: with `tampered` a device that
                                 verifies an artifact is an unexpected outcome, with `valid` one
                                 that does not; each one prints "unexpected ..." at once
          --step-delay S         seconds between two steps of an update (a slow device)
          --poll-wait N          the long poll's wait (default 5 s)
          --duration S           stop after S seconds
          --stop-file PATH       stop once PATH exists
        A refused or cut connection (the server restarting) is retried, with a short back-off,
        for as long as the agent runs. Prints "ready <n>" once every device thread runs,
        "done <device> <campaign> <final state> <verification>" per update, and at the end one
        line "summary <json>":
          {"devices": {"<id>": {"commands": {"<campaign>": <firmware.update commands received>},
                                "command_ids": [...], "other_commands": n,
                                "campaigns": {"<campaign>": {"final": "succeeded" | "failed" | null,
                                              "verification": "ok" | "<what failed>",
                                              "reason": ..., "states": [<states reported>]}}}},
           "expectation_met": bool, "retries": <connection retries>, "unexpected": [...]}

    python3 firmware_agent.py sign NAME VERSION FILE
        Signs FILE's manifest message with a fresh Ed25519 key (an operator key no device trusts)
        and prints {"public_key", "signature", "sha256", "size"} (base64 key and signature).
"""
import argparse
import base64
import hashlib
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FIRMWARE_COMMAND = "firmware.update"
FLASH_ERROR = "flash write error"
# Errors that mean "the server is not there right now": retried.
TRANSIENT = (ConnectionError, socket.timeout, TimeoutError, http.client.HTTPException, OSError)

_print_lock = threading.Lock()


def say(line):
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def manifest_message(name, version, size, sha256):
    return f"corral-artifact-v1\nname: {name}\nversion: {version}\nsize: {size}\nsha256: {sha256}\n".encode()


class Stopped(Exception):
    pass


class Agent:
    def __init__(self, args):
        self.args = args
        url = urllib.parse.urlsplit(args.base)
        self.host, self.port = url.hostname, url.port or 80
        self.trusted = Ed25519PublicKey.from_public_bytes(base64.b64decode(args.trusted_key))
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.retries = 0
        self.busy = 0
        self.unexpected = []
        self.devices = {}
        self.failing = set(filter(None, (args.fail or "").split(",")))

    # --- plumbing -------------------------------------------------------------------------

    def fails(self, device):
        if device in self.failing:
            return True
        if self.args.fail_fraction > 0:
            h = int.from_bytes(hashlib.sha256(f"fail:{device}".encode()).digest()[:8], "big")
            return h / 2**64 < self.args.fail_fraction
        return False

    def request(self, conn_box, method, path, token=None, body=None, headers=None, timeout=15, give_up_at=None):
        """One request, retried on connection errors and 5xx until the agent stops (or
        give_up_at). conn_box is a one-element list holding the thread's keep-alive connection."""
        backoff = 0.1
        while True:
            if self.stop.is_set() and give_up_at is None:
                raise Stopped()
            if give_up_at is not None and time.monotonic() > give_up_at:
                raise Stopped()
            try:
                if conn_box[0] is None:
                    conn_box[0] = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
                conn = conn_box[0]
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                h = dict(headers or {})
                if token:
                    h["Authorization"] = f"Bearer {token}"
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    h["Content-Type"] = "application/json"
                conn.request(method, path, body=data, headers=h)
                resp = conn.getresponse()
                payload = resp.read()
                if resp.status >= 500:
                    raise http.client.HTTPException(f"{resp.status} {payload[:200]!r}")
                return resp.status, resp.headers, payload
            except TRANSIENT as e:
                if conn_box[0] is not None:
                    conn_box[0].close()
                conn_box[0] = None
                with self.lock:
                    self.retries += 1
                if self.args.verbose:
                    say(f"retry {method} {path}: {e!r}")
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)

    # --- one device -----------------------------------------------------------------------

    def record(self, device):
        return self.devices[device]

    def report(self, conn, device, token, campaign, state, reason=None):
        status = {"state": state}
        if reason:
            status["reason"] = reason
        patch = {"campaigns": {campaign: status}}
        code, _, body = self.request(conn, "PATCH", f"/api/v1/devices/{device}/twin/reported", token, patch,
                                     give_up_at=self.grace())
        if code != 200:
            raise RuntimeError(f"reporting {state}: {code} {body[:200]!r}")
        self.record(device)["campaigns"][campaign]["states"].append(state)

    def grace(self):
        """Work already started finishes even when the agent is told to stop, within reason."""
        return time.monotonic() + 60

    def download(self, conn, url, size):
        """The artifact in Range requests; (bytes, None) or (None, what went wrong)."""
        chunk = self.args.chunk
        parts, etag, offset = [], None, 0
        while offset < size:
            end = min(offset + chunk, size) - 1
            headers = {"Range": f"bytes={offset}-{end}"}
            if etag:
                headers["If-Range"] = etag
            code, h, body = self.request(conn, "GET", url, headers=headers, give_up_at=self.grace())
            if code != 206:
                return None, f"range {offset}-{end}: status {code} {body[:120]!r}"
            want = f"bytes {offset}-{end}/{size}"
            if h.get("Content-Range") != want:
                return None, f"range {offset}-{end}: Content-Range {h.get('Content-Range')!r}, not {want!r}"
            if len(body) != end - offset + 1:
                return None, f"range {offset}-{end}: {len(body)} bytes"
            if etag is None:
                etag = h.get("ETag")
            elif h.get("ETag") != etag:
                return None, f"the ETag changed from {etag} to {h.get('ETag')}"
            parts.append(body)
            offset = end + 1
        return b"".join(parts), None

    def verify(self, manifest, data):
        if len(data) != manifest["size"]:
            return f"size mismatch: {len(data)} bytes, the manifest says {manifest['size']}"
        digest = hashlib.sha256(data).hexdigest()
        if digest != manifest["sha256"]:
            return f"sha256 mismatch: got {digest}"
        message = manifest_message(manifest["name"], manifest["version"], manifest["size"], manifest["sha256"])
        try:
            self.trusted.verify(base64.b64decode(manifest["signature"]), message)
        except (InvalidSignature, ValueError):
            return "bad signature: the manifest is not signed by the trusted key"
        return "ok"

    def pause(self):
        if self.args.step_delay > 0:
            time.sleep(self.args.step_delay)

    def update(self, conn, device, token, command):
        payload = command.get("payload") or {}
        campaign = payload.get("campaign", "?")
        manifest = payload.get("artifact") or {}
        rec = self.record(device)
        rec["commands"][campaign] = rec["commands"].get(campaign, 0) + 1
        entry = rec["campaigns"].setdefault(campaign, {"final": None, "verification": None, "reason": None, "states": []})
        self.report(conn, device, token, campaign, "downloading")
        self.pause()
        data, problem = self.download(conn, payload["url"], int(manifest.get("size", 0)))
        verification = problem or self.verify(manifest, data)
        entry["verification"] = verification
        if verification != "ok":
            final, reason = "failed", f"verification failed: {verification}"
        else:
            self.report(conn, device, token, campaign, "downloaded")
            self.pause()
            self.report(conn, device, token, campaign, "installing")
            self.pause()
            final, reason = ("failed", FLASH_ERROR) if self.fails(device) else ("succeeded", None)
        self.report(conn, device, token, campaign, final, reason)
        answer = {"status": final} if final == "succeeded" else {"status": "failed", "reason": reason}
        code, _, body = self.request(conn, "POST", f"/api/v1/devices/{device}/commands/{command['id']}/response",
                                     token, answer, give_up_at=self.grace())
        if code not in (200, 409):  # 409: answered before the server went away and came back
            raise RuntimeError(f"answering {command['id']}: {code} {body[:200]!r}")
        entry["final"], entry["reason"] = final, reason
        expected_ok = self.args.expect == "valid"
        if (verification == "ok") != expected_ok:
            with self.lock:
                self.unexpected.append({"device": device, "campaign": campaign, "verification": verification})
            say(f"unexpected {device} {campaign} {verification}")
        say(f"done {device} {campaign} {final} {verification.replace(' ', '_')}")

    def device(self, device, token):
        conn = [None]
        rec = self.record(device)
        wait = self.args.poll_wait
        while not self.stop.is_set():
            try:
                code, _, body = self.request(conn, "GET", f"/api/v1/devices/{device}/commands/next?wait={wait}", token,
                                             timeout=wait + 15)
            except Stopped:
                break
            if code == 204:
                continue
            if code != 200:
                say(f"error {device} poll {code} {body[:200]!r}")
                time.sleep(1)
                continue
            command = json.loads(body)
            rec["command_ids"].append(command["id"])
            with self.lock:
                self.busy += 1
            try:
                if command.get("name") == FIRMWARE_COMMAND:
                    self.update(conn, device, token, command)
                else:
                    rec["other_commands"] += 1
                    self.request(conn, "POST", f"/api/v1/devices/{device}/commands/{command['id']}/response", token,
                                 {"status": "rejected", "reason": "not a firmware agent command"}, give_up_at=self.grace())
            except Stopped:
                say(f"error {device} gave up on {command['id']} while stopping")
            except Exception as e:  # noqa: BLE001 - reported, and the device goes on polling
                rec["errors"].append(repr(e))
                say(f"error {device} {e!r}")
            finally:
                with self.lock:
                    self.busy -= 1

    def run(self, fleet):
        threading.stack_size(512 * 1024)
        for device, _ in fleet:
            self.devices[device] = {"commands": {}, "command_ids": [], "other_commands": 0, "campaigns": {}, "errors": []}
        threads = [threading.Thread(target=self.device, args=d, daemon=True) for d in fleet]
        for t in threads:
            t.start()
        say(f"ready {len(threads)}")
        started = time.monotonic()
        while not self.stop.is_set():
            if self.args.duration and time.monotonic() - started >= self.args.duration:
                break
            if self.args.stop_file and os.path.exists(self.args.stop_file):
                break
            time.sleep(0.05)
        self.stop.set()
        # Updates under way finish; idle long polls are left to die with the process.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with self.lock:
                if self.busy == 0:
                    break
            time.sleep(0.05)
        with self.lock:
            summary = {
                "devices": self.devices,
                "expectation_met": not self.unexpected,
                "unexpected": self.unexpected,
                "retries": self.retries,
                "busy_at_exit": self.busy,
            }
            say("summary " + json.dumps(summary, separators=(",", ":")))


def sign(name, version, path):
    data = open(path, "rb").read()
    digest = hashlib.sha256(data).hexdigest()
    key = Ed25519PrivateKey.generate()
    signature = key.sign(manifest_message(name, version, len(data), digest))
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    print(json.dumps({
        "public_key": base64.b64encode(public).decode(),
        "signature": base64.b64encode(signature).decode(),
        "sha256": digest,
        "size": len(data),
    }))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    run = sub.add_parser("run")
    run.add_argument("--base", required=True)
    run.add_argument("--devices", required=True)
    run.add_argument("--trusted-key", required=True)
    run.add_argument("--fail", default="")
    run.add_argument("--fail-fraction", type=float, default=0.0)
    run.add_argument("--expect", choices=["valid", "tampered"], default="valid")
    run.add_argument("--step-delay", type=float, default=0.0)
    run.add_argument("--poll-wait", type=int, default=5)
    run.add_argument("--chunk", type=int, default=64 * 1024)
    run.add_argument("--duration", type=float, default=0.0)
    run.add_argument("--stop-file", default="")
    run.add_argument("--verbose", action="store_true")
    signer = sub.add_parser("sign")
    signer.add_argument("name")
    signer.add_argument("version")
    signer.add_argument("file")
    args = parser.parse_args()
    if args.mode == "sign":
        sign(args.name, args.version, args.file)
        return
    fleet = []
    with open(args.devices) as f:
        for line in f:
            if line.strip():
                device, token = line.split()
                fleet.append((device, token))
    Agent(args).run(fleet)
    sys.stdout.flush()
    os._exit(0)  # idle long-poll threads are not waited for


if __name__ == "__main__":
    main()
