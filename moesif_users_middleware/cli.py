"""The ``moesif-users`` command: ``collector``, ``demo``, ``send`` and ``spool``.

Each subcommand's work lives in its own module, imported only when that subcommand runs,
so ``moesif-users --help`` stays fast and needs no optional dependency.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _run_collector(args: argparse.Namespace) -> int:
    try:
        from .collector import serve
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        print(
            f"moesif-users collector needs the [collector] extra ({exc.name} is missing): "
            "pip install 'moesif-users-middleware[collector]'",
            file=sys.stderr,
        )
        return 2
    serve(host=args.host, port=args.port, db_path=args.db, log_level=args.log_level)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo.run import run_demo

    return run_demo(serve=args.serve, port=args.port, users=args.users)


def _run_send(args: argparse.Namespace) -> int:
    from .backfill.command import run

    return run(args)


def _run_spool(args: argparse.Namespace) -> int:
    from ._spool_command import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``moesif-users`` command."""
    parser = argparse.ArgumentParser(
        prog="moesif-users",
        description="Moesif user profiles: a local collector, a demo, and bulk sending.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    collector = commands.add_parser(
        "collector", help="serve a local Moesif-compatible Users API backed by SQLite"
    )
    collector.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)"
    )
    collector.add_argument("--port", type=int, default=8787, help="port (default 8787)")
    collector.add_argument(
        "--db", default="moesif-users.db", help="SQLite file (default ./moesif-users.db)"
    )
    collector.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    collector.set_defaults(handler=_run_collector)

    demo = commands.add_parser(
        "demo", help="drive the example apps against an embedded collector and show the profiles"
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="keep the collector and its profiles page running afterwards, until Ctrl-C",
    )
    demo.add_argument("--port", type=int, default=0, help="collector port (default: a free one)")
    demo.add_argument("--users", type=int, default=20, help="simulated users (default 20)")
    demo.set_defaults(handler=_run_demo)

    send = commands.add_parser(
        "send", help="send users (or companies) from a JSON, JSON Lines or CSV file in batches"
    )
    try:
        from .backfill.arguments import configure_parser
    except ImportError:  # pragma: no cover - only while the backfill module is absent
        pass
    else:
        configure_parser(send)
    send.set_defaults(handler=_run_send)

    spool = commands.add_parser(
        "spool", help="show what a spool directory holds; --send delivers it"
    )
    from ._spool_command import configure_parser as configure_spool

    configure_spool(spool)
    spool.set_defaults(handler=_run_spool)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``moesif-users``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return status
