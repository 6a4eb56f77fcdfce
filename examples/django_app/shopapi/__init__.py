"""The example project (settings, URLs, WSGI/ASGI entry points)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# Run from a source checkout without installing the library: use the checkout's copy.
if importlib.util.find_spec("moesif_users_middleware") is None:
    sys.path.append(str(Path(__file__).resolve().parents[3]))
