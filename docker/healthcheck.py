"""Container health check: exit 0 when a URL answers 2xx, 1 otherwise.

Usage: `python healthcheck.py URL`. `${VAR}` in the URL is expanded from the environment, so a
HEALTHCHECK in exec form (which Docker does not expand) still follows a port set at run time.
It exists because the slim images carry no curl or wget.
"""

import os
import sys
import urllib.error
import urllib.request


def check(url: str, timeout_s: float = 5.0) -> int:
    """0 if `url` answers with a 2xx status within `timeout_s` seconds, else 1 (the reason on stderr)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.close()  # an HTTPError holds the open response; close it rather than leak the socket
        sys.stderr.write(f"{url}: HTTP {exc.code}\n")
        return 1
    except (OSError, ValueError) as exc:  # URLError is an OSError: refused, timed out, bad host
        sys.stderr.write(f"{url}: {exc}\n")
        return 1
    return 0 if 200 <= status < 300 else 1


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: healthcheck.py URL\n")
        return 2
    return check(os.path.expandvars(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
