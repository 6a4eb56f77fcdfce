"""``python -m moesif_users_middleware.backfill FILE`` -- the same as ``moesif-users send``."""

from __future__ import annotations

import argparse

from .arguments import configure_parser
from .command import run


def main() -> int:
    parser = argparse.ArgumentParser(prog="moesif-users send")
    configure_parser(parser)
    try:
        return run(parser.parse_args())
    except KeyboardInterrupt:
        return 130


raise SystemExit(main())
