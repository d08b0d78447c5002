"""What every peer server shares: its command line and the encoder session.

The peer servers run in ``.venv-peers``, where this project is not installed, so they
are scripts run by path that import this sibling module, and take the tensor names and
shapes from the ONNX graph instead of from ``vae_contract``. Each peer gets the same
onnxruntime settings as keras-vae under the benchmark: one intra-op thread, because the
machine has 2 cores and the HTTP loop and the load generator need the other one.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort


def parse_args(description: str | None) -> argparse.Namespace:
    """``--model`` (the encoder's model.onnx), ``--port`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="the encoder's model.onnx")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    return parser.parse_args()


class Encoder:
    """One onnxruntime session of a one-input graph; answers ``{output name: array}``."""

    def __init__(self, path: str, threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        (graph_input,) = self.session.get_inputs()
        self.input_name: str = graph_input.name
        self.item_shape: tuple[int, ...] = tuple(graph_input.shape[1:])
        self.output_names: list[str] = [output.name for output in self.session.get_outputs()]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.asarray(images, dtype=np.float32).reshape(-1, *self.item_shape)
        outputs = self.session.run(self.output_names, {self.input_name: batch})
        return dict(zip(self.output_names, outputs, strict=True))
