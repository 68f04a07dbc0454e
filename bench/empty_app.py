"""The ceiling: a Litestar app whose `/empty` returns a constant small JSON, as a POST that reads the body and as
a GET (the forward-auth requests' ceiling: a GET with their headers and no body, which costs less to serve).

Same framework, same server and workers as the service, no work: what our routes could reach at best.
`PORT=8001 WORKERS=2 python -m bench.empty_app`
"""

from __future__ import annotations

from litestar import Litestar, Request, get, post


@post("/empty", status_code=200)
async def empty(request: Request) -> dict[str, bool]:
    await request.body()  # the same request bodies arrive; receiving them is part of the ceiling
    return {"valid": True}


@get("/empty")
async def empty_get() -> dict[str, bool]:
    return {"valid": True}


app = Litestar(route_handlers=[empty, empty_get], debug=False)

if __name__ == "__main__":
    from bench.serve import serve

    serve("bench.empty_app:app")
