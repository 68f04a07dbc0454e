"""The ceiling: a Litestar app with one POST route that reads the body and returns a constant small JSON.

Same framework, same server and workers as the service, no work: what `/v1/validate/jwt` could reach at best.
`PORT=8001 WORKERS=2 python -m bench.empty_app`
"""

from __future__ import annotations

from litestar import Litestar, Request, post


@post("/empty", status_code=200)
async def empty(request: Request) -> dict[str, bool]:
    await request.body()  # the same request bodies arrive; receiving them is part of the ceiling
    return {"valid": True}


app = Litestar(route_handlers=[empty], debug=False)

if __name__ == "__main__":
    from bench.serve import serve

    serve("bench.empty_app:app")
