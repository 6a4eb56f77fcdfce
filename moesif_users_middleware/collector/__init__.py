"""A local, Moesif-compatible Users and Companies API collector (Starlette over SQLite).

``create_app(db_path)`` returns the ASGI app; ``serve()`` runs it under uvicorn. Needs
the ``collector`` extra (starlette, uvicorn); the core package never imports this.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys

from .app import APPLICATION_ID_HEADER, DEFAULT_MAX_BODY_BYTES, create_app
from .partition import partition_key
from .store import Store

__all__ = [
    "APPLICATION_ID_HEADER",
    "DEFAULT_MAX_BODY_BYTES",
    "Store",
    "create_app",
    "is_loopback_host",
    "partition_key",
    "serve",
]

logger = logging.getLogger("moesif_users_middleware.collector")


def serve(
    host: str = "127.0.0.1",
    port: int = 8787,
    db_path: str | os.PathLike[str] = "moesif-users.db",
    *,
    log_level: str = "warning",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Run the collector under uvicorn until interrupted (blocks).

    Warns (log and stderr) when ``host`` is not a loopback address: the collector has
    no authentication beyond the application id header.
    """
    import uvicorn

    if not is_loopback_host(host):
        message = (
            f"moesif-users collector: listening on non-loopback host {host!r}; "
            "anyone who can reach it can read and write the stored profiles"
        )
        logger.warning(message)
        print(f"WARNING: {message}", file=sys.stderr)
    app = create_app(db_path, max_body_bytes=max_body_bytes)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="off")
    finally:
        app.state.store.close()


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names only the local machine (``localhost`` or a loopback IP)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    # Decide IPv4-mapped IPv6 (::ffff:127.0.0.1) explicitly: Python 3.13 changed the answer.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback
