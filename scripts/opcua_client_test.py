#!/usr/bin/env python3
"""Serialine's OPC UA server against an OPC UA client no one here wrote
(asyncua, from PyPI). Run by the cargo tests `serialine-lab --test opcua_demo`
and `serialine --test opcua_client` with the interpreter named by
OPCUA_CLIENT_PYTHON (a venv with asyncua, made by .ci/run).

    opcua_client_test.py demo    URL LINE
        browse; read the counters while the demo line runs; receive an
        alarm event; an anonymous method call is refused.
    opcua_client_test.py service URL LINE USER PASSWORD_FILE WORK_DIR
        an anonymous call is refused; over SignAndEncrypt with a user:
        StartJob with a bad GTIN is refused and changes nothing, a good one
        starts the job and the line runs; StopJob stops it.

Prints one `ok: ...` line per check and exits 0, or exits 1 naming the
failed check.
"""

import asyncio
import sys
import time
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID

NAMESPACE = "urn:serialine:opcua"
COUNTERS = [
    "Issued", "Available", "Sent", "Printed", "Committed", "Synced",
    "Rejected", "Voided", "Fenced", "Reported", "InFlight",
    "Sampled", "Decommissioned", "Returned",
]
GOOD_GTIN = "09506000134352"
BAD_GTIN = "09506000134353"  # wrong check digit
NO_ERROR, INVALID_SELECTION_CRITERIA = 1, 6


def ok(what):
    print(f"ok: {what}", flush=True)


def fail(what):
    print(f"FAILED: {what}", flush=True)
    sys.exit(1)


async def connect_when_up(make, deadline_s=120):
    """The server starts after the line's ledger and buffer are ready."""
    end = time.monotonic() + deadline_s
    while True:
        client = await make()
        try:
            await client.connect()
            return client
        except Exception as e:  # noqa: BLE001 - any failure to connect is retried
            if time.monotonic() > end:
                fail(f"cannot connect within {deadline_s}s: {e!r}")
            await asyncio.sleep(0.5)


async def line_node(client, line):
    ns = await client.get_namespace_index(NAMESPACE)
    node = await client.nodes.objects.get_child([f"{ns}:Serialine", f"{ns}:{line}"])
    return ns, node


async def read(node, ns, *path):
    return await (await node.get_child([f"{ns}:{p}" for p in path])).read_value()


async def browse_line(client, line):
    ns, node = await line_node(client, line)
    names = {(await c.read_browse_name()).Name for c in await node.get_children()}
    want = {"State", "Job", "Counters", "BufferDepth", "OutboxDepth", "Devices", "StartJob", "StopJob"}
    if not want <= names:
        fail(f"browse: {line} has {sorted(names)}, expected at least {sorted(want)}")
    counters = await node.get_child(f"{ns}:Counters")
    got = [(await c.read_browse_name()).Name for c in await counters.get_children()]
    if sorted(got) != sorted(COUNTERS):
        fail(f"browse: counters {got}")
    ok(f"browse: {line} has {sorted(names)} and counters {got}")
    return ns, node


async def anonymous_call_refused(client, node, ns):
    try:
        await node.call_method(f"{ns}:StopJob")
    except ua.uaerrors.BadUserAccessDenied:
        ok("anonymous StopJob refused with BadUserAccessDenied")
        return
    except Exception as e:  # noqa: BLE001
        fail(f"anonymous StopJob: expected BadUserAccessDenied, got {e!r}")
    fail("anonymous StopJob was accepted")


class Events:
    def __init__(self, evtype):
        self.evtype = evtype
        self.got = []

    def event_notification(self, event):
        if event.EventType == self.evtype:
            self.got.append(event)


async def subscribe_alarms(client, ns):
    evtype = ua.NodeId("SerialineAlarmEventType", ns)
    handler = Events(evtype)
    sub = await client.create_subscription(100, handler)
    # The select clauses name SerialineAlarmEventType's fields (AlarmKind,
    # Serial, Line). No where clause: asyncua's is `EventType InList [...]`,
    # and async-opcua 0.19 compares no NodeIds in InList, so it would match
    # nothing; the handler filters by EventType instead.
    await sub.subscribe_events(
        client.nodes.server, client.get_node(evtype), where_clause_generation=False
    )
    return handler


async def demo(url, line):
    async def make():
        return Client(url)  # anonymous, unsecured endpoint

    client = await connect_when_up(make)
    try:
        ns, node = await browse_line(client, line)
        events = await subscribe_alarms(client, ns)
        # Counters while the line runs: they must move.
        first = await read(node, ns, "Counters", "Committed")
        state = await read(node, ns, "State")
        end = time.monotonic() + 60
        while True:
            await asyncio.sleep(1)
            now = await read(node, ns, "Counters", "Committed")
            if now > first:
                break
            if time.monotonic() > end:
                # Every counter and the state now: a line that stalled shows
                # Sent/InFlight frozen too; values that stopped being sampled
                # show a state and counters that disagree with the demo log.
                seen = {n: await read(node, ns, "Counters", n) for n in COUNTERS}
                seen["State"] = await read(node, ns, "State")
                seen["BufferDepth"] = await read(node, ns, "BufferDepth")
                seen["OutboxDepth"] = await read(node, ns, "OutboxDepth")
                fail(f"counters: Committed stayed at {first} for 60 s (state {state}); now {seen}")
        gtin = await read(node, ns, "Job", "GTIN")
        ok(f"read while running: Committed {first} -> {now}, state {state!r}, job GTIN {gtin}")
        for name in COUNTERS:
            v = await read(node, ns, "Counters", name)
            if not isinstance(v, int):
                fail(f"counter {name} is {v!r}")
        # The demo's cameras read some codes twice: duplicate-read alarms.
        end = time.monotonic() + 90
        while not events.got and time.monotonic() < end:
            await asyncio.sleep(0.5)
        if not events.got:
            fail("no alarm event within 90 s")
        e = events.got[0]
        ok(f"alarm event: AlarmKind={e.AlarmKind!r} Severity={e.Severity} Message={e.Message.Text!r}")
        await anonymous_call_refused(client, node, ns)
    finally:
        await client.disconnect()


async def service(url, line, user, password_file, work_dir):
    password = Path(password_file).read_text().strip()
    work = Path(work_dir)
    key, cert = work / "client-key.pem", work / "client-cert.der"
    app_uri = "urn:serialine:test-client"
    await setup_self_signed_certificate(
        key, cert, app_uri, "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH],
        {"countryName": "DE", "organizationName": "Serialine tests", "commonName": "opcua-test"},
    )

    async def anonymous():
        return Client(url)

    async def secure():
        c = Client(url)
        c.application_uri = app_uri
        await c.set_security(
            SecurityPolicyBasic256Sha256, certificate=str(cert), private_key=str(key),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        c.set_user(user)
        c.set_password(password)
        return c

    anon = await connect_when_up(anonymous)
    try:
        ns, node = await browse_line(anon, line)
        await anonymous_call_refused(anon, node, ns)
    finally:
        await anon.disconnect()

    client = await connect_when_up(secure)
    try:
        ns, node = await line_node(client, line)
        ok("SignAndEncrypt session with a user name and password")
        if await read(node, ns, "Job", "Active"):
            fail("a job runs before StartJob (the line has no default job)")
        before = await read(node, ns, "Counters", "Sent")

        status, message = await node.call_method(
            f"{ns}:StartJob", BAD_GTIN, "LOT-1", "271231",
            ua.Variant(500, ua.VariantType.UInt64), "gs1-data-matrix",
        )
        if status != INVALID_SELECTION_CRITERIA or "gtin" not in message:
            fail(f"StartJob with a bad GTIN answered ({status}, {message!r})")
        await asyncio.sleep(2)
        active = await read(node, ns, "Job", "Active")
        sent = await read(node, ns, "Counters", "Sent")
        if active or sent != before:
            fail(f"a refused StartJob changed the line: active={active}, sent {before} -> {sent}")
        ok(f"StartJob with a bad GTIN refused ({status}: {message}); nothing changed")

        status, message = await node.call_method(
            f"{ns}:StartJob", GOOD_GTIN, "LOT-1", "271231",
            ua.Variant(100000, ua.VariantType.UInt64), "gs1-data-matrix",
        )
        if status != NO_ERROR:
            fail(f"StartJob answered ({status}, {message!r})")
        end = time.monotonic() + 60
        while True:
            state = await read(node, ns, "State")
            committed = await read(node, ns, "Counters", "Committed") + await read(node, ns, "Counters", "Synced")
            if state == "running" and committed > 0:
                break
            if time.monotonic() > end:
                fail(f"after StartJob: state {state!r}, committed {committed} after 60 s")
            await asyncio.sleep(0.5)
        gtin = await read(node, ns, "Job", "GTIN")
        if gtin != GOOD_GTIN:
            fail(f"Job.GTIN is {gtin!r}")
        ok(f"StartJob started the job: state {state!r}, {committed} committed, GTIN {gtin}")

        status, message = await node.call_method(f"{ns}:StopJob")
        if status != NO_ERROR:
            fail(f"StopJob answered ({status}, {message!r})")
        ok("StopJob: the line drained and stopped")
    finally:
        await client.disconnect()


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "demo":
        asyncio.run(demo(sys.argv[2], sys.argv[3]))
    elif len(sys.argv) >= 7 and sys.argv[1] == "service":
        asyncio.run(service(*sys.argv[2:7]))
    else:
        print(__doc__)
        sys.exit(2)
    print("opcua client checks: all passed", flush=True)


if __name__ == "__main__":
    main()
