"""The framework ceiling: a bare V2 app on the same HTTP stack as pitstop (Starlette + uvicorn).

It parses a V2 JSON inference body and answers with a V2 response carrying the input back as the
output: no model, no validation. ``python bench/echo_app.py --port 8100 [--workers N]``.
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def infer(request: Request) -> Response:
    body = json.loads(await request.body())
    first = body["inputs"][0]
    answer = {
        "model_name": request.path_params["model"],
        "model_version": "1",
        "outputs": [
            {
                "name": "y",
                "datatype": first["datatype"],
                "shape": first["shape"],
                "data": first["data"],
            }
        ],
    }
    return Response(json.dumps(answer), media_type="application/json")


app = Starlette(routes=[Route("/v2/models/{model}/infer", infer, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "bench.echo_app:app",
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
