"""Serve a baseline app the way `python -m app` serves ours (granian, ASGI, uvloop, same options), so that the
comparison is between applications, not servers. Used by bench/empty_app.py and bench/fastapi_baseline.py."""

from __future__ import annotations

import os


def serve(target: str) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(target, address=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")),
            interface=Interfaces.ASGI, workers=int(os.environ.get("WORKERS", "1")), loop=Loops.uvloop,
            log_access=False, websockets=False, backlog=2048).serve()
