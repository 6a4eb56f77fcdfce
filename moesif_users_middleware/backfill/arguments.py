"""The ``moesif-users send`` arguments: ``configure_parser`` for the command line, and
``add_sending_arguments`` for the options the Django ``moesif_users_backfill`` command
shares with it."""

from __future__ import annotations

import argparse

from .kinds import DEFAULT_KIND, SEND_KINDS
from .options import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_BYTES, DEFAULT_RETRY_TIMEOUT
from .readers import FORMATS

__all__ = ["DEFAULT_TIMEOUT", "add_sending_arguments", "configure_parser"]

DEFAULT_TIMEOUT = 30.0


_EPILOG = """\
input (--kind users, the default; --kind companies sends company profiles):
  JSON        one object, an array of them (streamed), or several in a row
  JSON Lines  one object per line (.jsonl, .ndjson); blank lines are skipped
  CSV         a header row naming the fields -- users: user_id, company_id,
              session_token, modified_time, ip_address, user_agent_string;
              companies: company_id, company_domain, session_token,
              modified_time, ip_address -- and campaign.<field>,
              metadata.<key>[.<key>...]; empty cells are absent; cells are
              strings unless the column is typed: metadata.age:int, :float,
              :number, :bool, :json (a metadata or campaign column: JSON object)

resuming:
  The checkpoint (default FILE.checkpoint) is rewritten after every batch the
  API confirmed; running the same command again continues after the last
  confirmed record, without sending it twice. A checkpoint resumes only a run
  of its own --kind. Invalid records go to the rejects
  file (default FILE.rejects.jsonl): one JSON line each with the line number,
  the field at fault, the message and the record.

exit status:
  0    every record delivered
  1    some records invalid or refused by the API, in this run or in the
       earlier runs it resumed (see the rejects file)
  2    usage error, configuration error or malformed input
  3    stopped: API unreachable past --retry-timeout, or refusing the
       application id (resumable)
  130  interrupted (resumable)
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def add_sending_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``send`` and the Django command share."""
    # Long but flat: one declaration per option, in --help order (groups would scatter it).
    parser.add_argument(
        "--application-id",
        help="Moesif application id (default: $MOESIF_APPLICATION_ID)",
    )
    parser.add_argument(
        "--base-url",
        help="API base URL (default: $MOESIF_BASE_URL, else https://api.moesif.net)",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        help=f"records per request (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--max-batch-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_BATCH_BYTES,
        help=f"JSON bytes per request before gzip (default {DEFAULT_MAX_BATCH_BYTES})",
    )
    parser.add_argument(
        "--max-rate",
        type=_positive_float,
        help="at most this many records per second (default: as fast as the API answers)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and count; send nothing, write no checkpoint",
    )
    parser.add_argument(
        "--resume-from",
        type=_non_negative_int,
        metavar="N",
        help="skip the first N records (overrides the checkpoint)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="checkpoint file, read to resume and rewritten after every batch",
    )
    parser.add_argument(
        "--no-checkpoint", action="store_true", help="neither read nor write a checkpoint"
    )
    parser.add_argument(
        "--restart", action="store_true", help="ignore an existing checkpoint: start over"
    )
    parser.add_argument(
        "--rejects", metavar="PATH", help="where invalid and refused records are written"
    )
    parser.add_argument(
        "--retry-timeout",
        type=float,
        default=DEFAULT_RETRY_TIMEOUT,
        metavar="SECONDS",
        help="give up on a batch (and stop, resumable) after retrying this long "
        f"(default {DEFAULT_RETRY_TIMEOUT:g})",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"per request (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--no-gzip", action="store_true", help="send uncompressed bodies")
    parser.add_argument(
        "--progress",
        choices=["auto", "bar", "log", "none"],
        default="auto",
        help="a bar on a terminal, periodic lines otherwise (default auto)",
    )
    parser.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress lines when not on a terminal (default 10)",
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``send`` arguments to ``parser``."""
    parser.description = (
        "Send user profiles (or, with --kind companies, company profiles) from a JSON "
        "(object or array), JSON Lines or CSV file to POST /v1/users/batch "
        "(/v1/companies/batch): validated, batched, retried, checkpointed. Invalid records "
        "go to a rejects file (line, field, message) and the run goes on."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument("file", metavar="FILE", help="input file, or - for stdin")
    parser.add_argument(
        "--kind",
        choices=tuple(SEND_KINDS),
        default=DEFAULT_KIND.name,
        help=f"what the file holds (default {DEFAULT_KIND.name})",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="input format (default: from the extension; sniffed for stdin)",
    )
    add_sending_arguments(parser)
