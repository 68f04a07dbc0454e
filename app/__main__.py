"""`python -m app` serves; `python -m app openapi` prints the OpenAPI document; `--help` lists the settings."""

from __future__ import annotations

import sys

USAGE = """usage: python -m app [serve | openapi | --help]

  serve     start the service (default) on HOST:PORT with WORKERS processes (granian, ASGI, uvloop)
  openapi   print the OpenAPI 3.1 document (openapi/openapi.json is this output, committed)
"""


def main(argv: list[str]) -> int:
    from app.settings import SettingsError, load_settings, settings_help

    command = argv[0] if argv else "serve"
    if command in ("-h", "--help", "help"):
        print(USAGE + "\n" + settings_help())
        return 0
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if command == "openapi":
        from app.openapi import document_json
        from app.server import create_app

        sys.stdout.write(document_json(create_app(settings)).decode())
        return 0
    if command != "serve":
        print(USAGE, file=sys.stderr)
        return 2
    from app.server import check_config

    try:
        check_config(settings)
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian("app.server:app_factory", factory=True, address=settings.host, port=settings.port,
            interface=Interfaces.ASGI, workers=settings.workers, loop=Loops.uvloop, log_access=False,
            websockets=False, backlog=2048).serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
