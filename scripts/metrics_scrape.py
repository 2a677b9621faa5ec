#!/usr/bin/env python3
"""Scrape Serialine's Prometheus endpoint during the demo and parse it with
prometheus_client's text parser (a parser no one here wrote).

Runs `serialine-lab demo --metrics 127.0.0.1:PORT` on both simulated lines,
scrapes while the lines run and again after the summary (the demo keeps
serving for --metrics-linger seconds), then ends the demo with SIGTERM.

Checks: every expected family is served with its type; each line's series
carry a `line` label for both lines; units sent and committed are non-zero
per line and agree with the demo's own JSON summary; the added-latency
histogram counted every decided unit.

Usage: metrics_scrape.py --lab PATH/TO/serialine-lab [--units N]
Prints a summary (scrape size, families, series) and exits 0, or names the
first failed check and exits 1.
"""

import argparse
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

# Family name (as prometheus_client reports it: counters without `_total`)
# -> type.
EXPECTED = {
    "serialine_units": "counter",
    "serialine_rejects": "counter",
    "serialine_added_latency_seconds": "histogram",
    "serialine_buffer_serials": "gauge",
    "serialine_outbox_events": "gauge",
    "serialine_outbox_oldest_event_age_seconds": "gauge",
    "serialine_committer_batch_ops": "histogram",
    "serialine_device_state": "gauge",
    "serialine_device_reconnects": "counter",
    "serialine_alarms": "counter",
    "serialine_mqtt_connects": "counter",
    "serialine_mqtt_connected": "gauge",
}
LINES = {"line-1", "line-2"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode("utf-8")


def parse(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def fail(msg):
    print(f"metrics_scrape: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def value(fam, sample_name, **labels):
    total = 0.0
    found = False
    for s in fam.samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
            found = True
    if not found:
        fail(f"no sample {sample_name}{labels}")
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lab", required=True, help="path to the serialine-lab binary")
    ap.add_argument("--units", type=int, default=3000)
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    demo = subprocess.Popen(
        [
            args.lab, "demo",
            "--units", str(args.units),
            "--metrics", f"127.0.0.1:{port}",
            "--metrics-linger", "120",
            "--json", "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # During the run: the endpoint answers and parses.
        during = None
        deadline = time.monotonic() + 60
        while during is None:
            if demo.poll() is not None:
                fail(f"demo exited early ({demo.returncode}): {demo.stderr.read()}")
            if time.monotonic() > deadline:
                fail(f"{url} never answered")
            try:
                during = scrape(url)
            except OSError:
                time.sleep(0.1)
        parse(during)

        # After the summary (one JSON line on stdout): the final counts.
        summary_line = demo.stdout.readline()
        if not summary_line:
            fail(f"no summary from the demo: {demo.stderr.read()}")
        summary = json.loads(summary_line)
        # Gauges are sampled every second: let one more sample land.
        time.sleep(1.5)
        text = scrape(url)
        fams = parse(text)

        for name, kind in EXPECTED.items():
            if name not in fams:
                fail(f"family {name} not served; served: {sorted(fams)}")
            if fams[name].type != kind:
                fail(f"{name} is a {fams[name].type}, expected {kind}")
            seen = {s.labels.get("line") for s in fams[name].samples}
            if seen != LINES:
                fail(f"{name}: line labels {seen}, expected {LINES}")

        units = fams["serialine_units"]
        for line in summary["lines"]:
            lid = line["line"]
            sent = value(units, "serialine_units_total", line=lid, outcome="sent")
            committed = value(units, "serialine_units_total", line=lid, outcome="committed")
            rejected = value(units, "serialine_units_total", line=lid, outcome="rejected")
            if sent <= 0 or committed <= 0:
                fail(f"{lid}: sent {sent}, committed {committed}: expected non-zero")
            if (sent, committed, rejected) != (line["sent"], line["committed"], line["rejected"]):
                fail(f"{lid}: scrape says sent/committed/rejected {sent}/{committed}/{rejected}, "
                     f"the demo's summary {line['sent']}/{line['committed']}/{line['rejected']}")
            by_reason = value(fams["serialine_rejects"], "serialine_rejects_total", line=lid)
            if by_reason != rejected:
                fail(f"{lid}: rejects by reason add up to {by_reason}, rejected {rejected}")
            decided = committed + rejected + value(units, "serialine_units_total", line=lid, outcome="voided")
            count = value(fams["serialine_added_latency_seconds"],
                          "serialine_added_latency_seconds_count", line=lid)
            if count != decided:
                fail(f"{lid}: latency histogram counted {count}, units decided {decided}")
            if value(fams["serialine_mqtt_connects"], "serialine_mqtt_connects_total", line=lid) < 1:
                fail(f"{lid}: no MQTT connection counted")
            # Upstream acknowledged every outcome before the summary.
            outbox = value(fams["serialine_outbox_events"], "serialine_outbox_events", line=lid)
            if outbox != 0:
                fail(f"{lid}: {outbox} events still in the outbox after the summary")

        series = sum(len(f.samples) for f in fams.values())
        print(f"metrics_scrape: OK: {len(text)} bytes, {len(fams)} families, {series} samples, "
              f"lines {sorted(LINES)}, {args.units} units per line")
    finally:
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                demo.kill()
    if demo.returncode != 0:
        fail(f"demo exited {demo.returncode} after SIGTERM: {demo.stderr.read()[-2000:]}")


if __name__ == "__main__":
    main()
