"""Peer: the FastAPI service most teams would write first, on uvicorn.

One request is one onnxruntime call, the body is validated by a pydantic model and the
answer is built from Python lists: no batching, no hand-written codec. It answers the
same ``POST /v1/encode`` with ``{"images": [...]}`` as keras-vae, so the two differ only
in how they are built.
"""

# No ``from __future__ import annotations``: FastAPI resolves a handler's annotations in
# the module's globals, and the request model is made in create_app.

import numpy as np
import uvicorn
from encoder import Encoder, parse_args
from fastapi import FastAPI
from pydantic import create_model

Images = list[list[list[list[float]]]]


def create_app(encoder: Encoder) -> FastAPI:
    """The app; ``encode`` is a plain ``def``, so FastAPI runs it in its thread pool."""
    app = FastAPI()
    # A pydantic model with one field named after the graph's input ("images").
    EncodeRequest = create_model("EncodeRequest", **{encoder.input_name: (Images, ...)})  # noqa: N806

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/encode")
    def encode(request: EncodeRequest) -> dict[str, list]:
        outputs = encoder(np.asarray(getattr(request, encoder.input_name), dtype=np.float32))
        return {name: array.tolist() for name, array in outputs.items()}

    return app


def main() -> None:
    args = parse_args(__doc__)
    app = create_app(Encoder(args.model, args.threads))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
