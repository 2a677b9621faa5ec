#!/usr/bin/env python3
"""GS1 conformance of Serialine's codes, checked by independent implementations.

Serialine renders a few thousand codes over a spread of jobs (GTIN-8/12/13/14,
lots with every character GS1 allows, expiry day 00, 12- and 20-character
serials, awkward serials) with `serialine code render --format json`, then:

1. biip parses every element string, Digital Link URI and (when no value
   holds a parenthesis) human-readable text, and its GTIN, lot, expiry and
   serial must be the job's; biip's own Digital Link for the same fields
   must be, character for character, the one Serialine rendered (the
   canonical form: /01/{gtin}[/10/{lot}]/21/{serial}?17={expiry}), and so
   must its HRI;
2. zxing-cpp's writer encodes a sample as GS1 DataMatrix (square and DMRE)
   and GS1 QR Code from Serialine's HRI (escaped parentheses included),
   zxing-cpp decodes the images, and Serialine's parser
   (`serialine code parse`) must read the decoded text with its symbology
   identifier (]d2, ]d8, ]Q3) back to the same fields; a plain Data Matrix
   (]d1, no FNC1) of the same element string must be refused, and a Digital
   Link in a plain QR Code (]Q1) read;
3. biip's canonical forms (element string, HRI, Digital Link on its own
   domain) and Digital Links in the pre-canonical layout (lot in the query)
   are fed back into Serialine's parser, which must read the same fields.

Zero disagreements, or it exits 1 printing examples. Prints the figures
(codes checked per format).

Usage: gs1_conformance.py --serialine target/debug/serialine [--quick]
Needs: pip install biip zxing-cpp (see .ci/run for the pinned versions).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.parse
from collections import Counter

try:
    import zxingcpp
    from biip.gs1_digital_link_uris import GS1DigitalLinkURI
    from biip.gs1_messages import GS1Message
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"gs1_conformance: {e}; install with: pip install biip zxing-cpp")

GS = "\x1d"
# GS1 AI encodable character set 82 (GS1 General Specifications 7.11).
CSET82 = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
RESOLVER = "id.example.com"


def with_check_digit(body: str) -> str:
    """GS1 mod-10 check digit appended (weights 3,1,... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


GTINS = [
    with_check_digit("9638507"),  # GTIN-8
    with_check_digit("03600029145"),  # GTIN-12 (UPC-A)
    with_check_digit("950600013435"),  # GTIN-13
    with_check_digit("400638133393"),  # GTIN-13
    with_check_digit("1061414100001"),  # GTIN-14, indicator 1
    with_check_digit("8061414100002"),  # GTIN-14, indicator 8
]

# Every CSET 82 character appears in some lot; plus lots that look like AIs
# or URI syntax, the shortest and the longest.
LOTS = [CSET82[i : i + 20] for i in range(0, len(CSET82), 20)] + [
    "ABC123",
    "(17)271231",
    "10)(21",
    "%25%2F?&=/",
    "01",
    "A",
    "L" * 20,
    None,
]

EXPIRIES = ["271231", "280200", "240229", "991231", "000101", None]

# (alphabet, length) for generated serials: the issuer's default (12
# characters), the whole CSET 82 at 20 and at 4 characters, digits only.
SERIAL_FORMATS = [
    ("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", 12),
    (CSET82, 20),
    (CSET82, 4),
    ("0123456789", 20),
]

# Serials chosen to trip parsers: parentheses, percent, slash, AI look-alikes.
AWKWARD_SERIALS = [
    "A(1)",
    ")(",
    "(21)X",
    "%25",
    "a/b",
    "..",
    "-",
    "0",
    "00000000000000000000",
    "21",
    "10ABC",
    "?17=271231",
    "&10=X",
    "\"'*+,;<=>",
    "_:!",
    "z" * 20,
]


class Checker:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.disagreements: list[str] = []

    def agree(self, what: str, ok: bool, example: str) -> None:
        self.counts[what] += 1
        if not ok:
            self.disagreements.append(f"{what}: {example}")


def fields_of(element_strings) -> dict:
    """GTIN, lot, expiry, serial from biip element strings."""
    out = {"gtin": None, "lot": None, "expiry": None, "serial": None}
    names = {"01": "gtin", "10": "lot", "17": "expiry", "21": "serial"}
    for es in element_strings:
        key = names.get(es.ai.ai)
        if key is None:
            raise ValueError(f"unexpected AI ({es.ai.ai})")
        out[key] = es.value
    return out


def expected(code: dict) -> dict:
    return {k: code[k] for k in ("gtin", "lot", "expiry", "serial")}


def render(serialine: str, args: list[str], stdin: str | None = None) -> list[dict]:
    cmd = [serialine, "code", "render", "--format", "json", "--resolver", RESOLVER, *args]
    out = subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"gs1_conformance: {' '.join(cmd)} failed: {out.stderr.strip()}")
    return [json.loads(line) for line in out.stdout.splitlines()]


def parse_all(serialine: str, texts: list[str]) -> list[dict]:
    """Serialine's parser on every text, one call for all."""
    for t in texts:
        assert "\n" not in t and "\r" not in t, repr(t)
    out = subprocess.run(
        [serialine, "code", "parse"],
        input="".join(t + "\n" for t in texts).encode(),
        capture_output=True,
        check=False,
    )
    if out.returncode not in (0, 1):
        sys.exit(f"gs1_conformance: serialine code parse failed: {out.stderr.decode().strip()}")
    results = [json.loads(line) for line in out.stdout.decode().splitlines()]
    if len(results) != len(texts):
        sys.exit(f"gs1_conformance: {len(texts)} lines in, {len(results)} out")
    return results


def job_args(gtin: str, lot: str | None, expiry: str | None) -> list[str]:
    args = ["--gtin", gtin]
    if lot is not None:
        args += ["--lot", lot]
    if expiry is not None:
        args += ["--expiry", expiry]
    return args


def render_codes(serialine: str, quick: bool) -> list[dict]:
    codes: list[dict] = []
    per_job = 12 if quick else 60
    n = 0
    # A spread, not the full product: every GTIN, lot, expiry and serial
    # format is used several times, in different combinations.
    for gi, gtin in enumerate(GTINS):
        for li, lot in enumerate(LOTS):
            expiry = EXPIRIES[(gi + li) % len(EXPIRIES)]
            alphabet, length = SERIAL_FORMATS[(gi * 3 + li) % len(SERIAL_FORMATS)]
            args = job_args(gtin, lot, expiry) + [
                "--count", str(per_job),
                "--serial-alphabet", alphabet,
                "--serial-length", str(length),
                "--seed", str(n),
            ]
            codes += render(serialine, args)
            n += 1
        # The awkward serials, given explicitly.
        lot = LOTS[gi % len(LOTS)]
        expiry = EXPIRIES[gi % len(EXPIRIES)]
        codes += render(
            serialine,
            job_args(gtin, lot, expiry) + ["--serials", "-"],
            stdin="".join(s + "\n" for s in AWKWARD_SERIALS),
        )
    return codes


def check_with_biip(codes: list[dict], c: Checker) -> list[tuple[str, dict, str]]:
    """biip reads Serialine's forms; returns biip's canonical forms to feed back."""
    feed: list[tuple[str, dict, str]] = []
    for code in codes:
        want = expected(code)
        ex = f"{code} "
        # Element string.
        try:
            msg = GS1Message.parse(code["element"])
            got = fields_of(msg.element_strings)
            c.agree("element string: biip reads Serialine's", got == want, ex + f"biip read {got}")
        except Exception as e:  # biip raises its own exceptions on bad input
            c.agree("element string: biip reads Serialine's", False, ex + f"biip: {e}")
            continue
        # Digital Link: biip's fields, and biip's URI for the same data.
        try:
            uri = GS1DigitalLinkURI.parse(code["dl"])
            got = fields_of(uri.element_strings)
            c.agree("digital link: biip reads Serialine's", got == want, ex + f"biip read {got}")
            theirs = msg.as_gs1_digital_link_uri().as_uri(domain=RESOLVER)
            c.agree(
                "digital link: Serialine's is biip's canonical URI",
                theirs == code["dl"],
                ex + f"biip renders {theirs}",
            )
        except Exception as e:
            c.agree("digital link: biip reads Serialine's", False, ex + f"biip: {e}")
        # HRI: biip knows no escape for '(' in a value, so it checks the
        # rest; the escaped ones go through zxing-cpp's writer instead.
        has_parens = any(ch in "()" for ch in (code["lot"] or "") + code["serial"])
        if not has_parens:
            try:
                got = fields_of(GS1Message.parse_hri(code["hri"]).element_strings)
                c.agree("hri: biip reads Serialine's", got == want, ex + f"biip read {got}")
                c.agree(
                    "hri: Serialine's is biip's",
                    msg.as_hri() == code["hri"],
                    ex + f"biip renders {msg.as_hri()}",
                )
            except Exception as e:
                c.agree("hri: biip reads Serialine's", False, ex + f"biip: {e}")
        # biip's canonical forms, to feed back into Serialine.
        feed.append(("element string", want, msg.value))
        feed.append(("element string", want, "]d2" + msg.value))
        feed.append(("digital link", want, msg.as_gs1_digital_link_uri().as_uri()))
        if not has_parens:
            feed.append(("hri", want, msg.as_hri()))
        if code["lot"] is not None:
            feed.append(("digital link, lot in query", want, lot_in_query(code)))
    return feed


def lot_in_query(code: dict) -> str:
    """The Digital Link layout Serialine rendered before the canonical form."""
    q = lambda s: urllib.parse.quote(s, safe="-._~")  # noqa: E731
    uri = f"https://{RESOLVER}/01/{code['gtin']}/21/{q(code['serial'])}"
    params = []
    if code["expiry"] is not None:
        params.append(f"17={code['expiry']}")
    params.append(f"10={q(code['lot'])}")
    return uri + "?" + "&".join(params)


def encode_decode(content: str, fmt, **kw) -> tuple[str, str] | None:
    """zxing-cpp writes `content`, reads the image back: (identifier, text)."""
    try:
        barcode = zxingcpp.create_barcode(content, fmt, **kw)
    except Exception:
        return None
    image = zxingcpp.write_barcode_to_image(barcode, scale=3)
    read = zxingcpp.read_barcodes(image, text_mode=zxingcpp.TextMode.Plain)
    if len(read) != 1:
        raise RuntimeError(f"zxing-cpp read {len(read)} symbols back from {content!r}")
    return read[0].symbology_identifier, read[0].text


def zxing_sample(codes: list[dict], every: int) -> list[tuple[str, dict, str, bool]]:
    """(what, fields, decoded text with identifier, Serialine must accept)."""
    out = []
    DM, QR = zxingcpp.BarcodeFormat.DataMatrix, zxingcpp.BarcodeFormat.QRCode
    for i, code in enumerate(codes[::every]):
        want = expected(code)
        # zxing-cpp's GS1 writer takes "(AI)value" with '(' and ')' in
        # values escaped as \( \): exactly Serialine's HRI.
        sid, text = encode_decode(code["hri"], DM, gs1=True)
        out.append(("GS1 DataMatrix (zxing-cpp)", want, sid + text, True))
        sid, text = encode_decode(code["hri"], QR, gs1=True)
        out.append(("GS1 QR Code (zxing-cpp)", want, sid + text, True))
        if i % 4 == 0:
            # DMRE sizes (zint versions 31-48): the smallest that fits.
            for version in range(31, 49):
                got = encode_decode(code["hri"], DM, gs1=True, version=version)
                if got is not None:
                    out.append(("GS1 DataMatrix DMRE (zxing-cpp)", want, got[0] + got[1], True))
                    break
            # The same element string without FNC1: a plain Data Matrix.
            sid, text = encode_decode(code["element"], DM)
            out.append(("plain Data Matrix, no FNC1 (zxing-cpp)", want, sid + text, False))
            # A Digital Link goes in a plain QR Code.
            sid, text = encode_decode(code["dl"], QR)
            out.append(("Digital Link in QR Code (zxing-cpp)", want, sid + text, True))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serialine", required=True, help="path of the serialine binary")
    ap.add_argument("--quick", action="store_true", help="fewer codes (for a fast look)")
    args = ap.parse_args()

    c = Checker()
    codes = render_codes(args.serialine, args.quick)
    feed = check_with_biip(codes, c)

    # biip's canonical forms back into Serialine.
    results = parse_all(args.serialine, [t for _, _, t in feed])
    for (what, want, text), res in zip(feed, results):
        got = {k: res.get(k) for k in want} if res["ok"] else res
        legacy = what == "digital link, lot in query"
        label = f"{what}: Serialine reads it" if legacy else f"{what}: Serialine reads biip's"
        c.agree(label, got == want, f"{text!r} -> {res}, want {want}")
        if legacy and res["ok"]:
            c.agree(
                "digital link, lot in query: reported as such",
                res["form"].get("lot_in_query") is True,
                f"{text!r} -> {res}",
            )

    # zxing-cpp symbols, decoded, into Serialine.
    sample = zxing_sample(codes, 20 if args.quick else 8)
    results = parse_all(args.serialine, [t for _, _, t, _ in sample])
    ids = Counter()
    for (what, want, text, accept), res in zip(sample, results):
        ids[f"{what}: {text[:3]}"] += 1
        if accept:
            got = {k: res.get(k) for k in want} if res["ok"] else res
            c.agree(f"{what}: Serialine reads it", got == want, f"{text!r} -> {res}, want {want}")
        else:
            refused = not res["ok"] and "FNC1" in res.get("error", "")
            c.agree(f"{what}: Serialine refuses it", refused, f"{text!r} -> {res}")
        # biip reads the decoded GS1 symbols too (its symbology handling).
        if accept and not text.startswith("]Q1"):
            try:
                import biip

                r = biip.parse(text)
                got = fields_of(r.gs1_message.element_strings) if r.gs1_message else None
                c.agree(f"{what}: biip reads it", got == want, f"{text!r} -> biip {got}")
            except Exception as e:
                c.agree(f"{what}: biip reads it", False, f"{text!r} -> biip: {e}")

    print(f"GS1 conformance: {len(codes)} codes rendered by Serialine over "
          f"{len(GTINS)} GTINs, {len(LOTS)} lots, {len(EXPIRIES)} expiries")
    width = max(len(k) for k in c.counts)
    for what, n in c.counts.items():
        print(f"  {what:<{width}}  {n:>6} checked")
    print("  symbology identifiers zxing-cpp reported: "
          + ", ".join(f"{k} x{n}" for k, n in sorted(ids.items())))
    if c.disagreements:
        print(f"FAILED: {len(c.disagreements)} disagreement(s); first ones:")
        for d in c.disagreements[:20]:
            print(f"  {d}")
        return 1
    print(f"OK: {sum(c.counts.values())} checks, 0 disagreements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
