"""Verify one webhook delivery with the reference Standard Webhooks library, unchanged.

Reads a JSON object on stdin: {"secret": "whsec_...", "headers": [[name, value], ...],
"body_b64": "..."}. Exits 0 when the signature verifies, 1 with the reason on stderr
when it does not, 2 when the input itself is unusable.

Used by tests/it/common/verify.rs: if this script accepts what hookstream sends, any
receiver using a Standard Webhooks library can too.
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    try:
        blob = json.load(sys.stdin)
        secret = blob["secret"]
        # Header names are case-insensitive; the library lower-cases them itself. A repeated
        # header keeps its last value, as a dict-based web framework would.
        headers = {name: value for name, value in blob["headers"]}
        body = base64.b64decode(blob["body_b64"])
    except (ValueError, KeyError, TypeError) as err:
        print(f"bad input to verify script: {err!r}", file=sys.stderr)
        return 2

    try:
        # An empty body (GET destinations) is not JSON; skip only the parse, never the check.
        Webhook(secret).verify(body, headers, json_parse=bool(body))
    except Exception as err:  # the library raises several types; all mean "rejected"
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
