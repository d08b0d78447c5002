"""Peer: LitServe with its batching on, answering its default JSON API (``POST /predict``).

LitServe is the ``LitAPI`` shape our handlers follow (decode_request -> predict ->
encode_response); it is used here as its documentation shows, with requests coalesced
into batches of at most 64 after waiting at most ``BATCH_TIMEOUT_S`` for more.
Body ``{"images": [28x28x1 images]}``; answer ``{"z_mean": [...], "z_log_var": [...]}``.
"""

from __future__ import annotations

import litserve as ls
import numpy as np
from encoder import Encoder, parse_args

MAX_BATCH_SIZE = 64
BATCH_TIMEOUT_S = 0.001


class EncoderAPI(ls.LitAPI):
    """The encoder behind LitServe; a batch keeps each request's rows together."""

    def __init__(self, model: str, threads: int):
        super().__init__(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
        self.model, self.threads = model, threads

    def setup(self, device: str) -> None:
        self.encoder = Encoder(self.model, self.threads)

    # decode_request's argument and encode_response's result stay unannotated: LitServe
    # reads those annotations to choose how FastAPI parses and validates, and without
    # them it serves its default JSON API (the body as parsed JSON, the answer as given).
    def decode_request(self, request) -> np.ndarray:
        return np.asarray(request[self.encoder.input_name], dtype=np.float32)

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        # Left a list, so that predict knows how many rows each request sent.
        return inputs

    def predict(self, requests: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        outputs = self.encoder(np.concatenate(requests))
        ends = np.cumsum([len(images) for images in requests])[:-1]
        split = {name: np.split(array, ends) for name, array in outputs.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(requests))]

    def unbatch(self, outputs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        return outputs

    def encode_response(self, output: dict[str, np.ndarray]):
        return {name: array.tolist() for name, array in output.items()}


def main() -> None:
    args = parse_args(__doc__)
    server = ls.LitServer(EncoderAPI(args.model, args.threads), accelerator="cpu", devices=1)
    server.run(port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
