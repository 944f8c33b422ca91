"""A FakeProvider in its own process, so its HTTP work does not share the measured process's GIL.

Prints the base URL on the first line of stdout, serves until stdin closes.
"""

from __future__ import annotations

import argparse
import sys

from prelabel.testing import FakeProvider


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.25)
    args = parser.parse_args()
    with FakeProvider(latency=args.latency, seed=0) as provider:
        provider.models = ["gpt-4o-mini", "claude-haiku-4-5"]
        print(provider.url, flush=True)
        sys.stdin.read()  # the parent closes stdin (or exits) to stop us


if __name__ == "__main__":
    main()
