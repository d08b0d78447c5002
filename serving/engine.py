"""One onnxruntime session per exported network, with its contract read from the graph."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from serving.errors import RepositoryError
from vae_contract import DECODER


class OnnxModel:
    """An ONNX network: one named input with a dynamic batch, one or more named outputs.

    Shapes, names and metadata come from the file itself, so the service needs no
    knowledge of how it was trained.
    """

    def __init__(self, path: str | Path, name: str, version: int, threads: int = 1):
        self.path = Path(path)
        self.name = name
        self.version = version
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types
            first_line = str(error).strip().splitlines()[0][:200] if str(error) else ""
            raise RepositoryError(
                f"cannot load {self.path} with onnxruntime ({first_line}); re-run `make export`"
            ) from None
        (graph_input,) = self.session.get_inputs()
        self.input_name = graph_input.name
        self.item_shape = tuple(int(d) for d in graph_input.shape[1:])
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def latent_dim(self) -> int:
        """The decoder's input size, or the encoder's output size."""
        if self.name == DECODER:
            return self.item_shape[0]
        return int(self.session.get_outputs()[0].shape[1])

    def run(
        self,
        inputs: np.ndarray,
        max_batch: int = 0,
        abandoned: Callable[[], bool] | None = None,
    ) -> dict[str, np.ndarray] | None:
        """Outputs for ``inputs`` [N, *item_shape]; above ``max_batch`` rows, run in chunks.

        Between chunks ``abandoned()`` is asked whether anyone still wants the result
        (every caller's deadline passed): if not, the rest is skipped and None returned.
        """
        if max_batch and len(inputs) > max_batch:
            parts = []
            for i in range(0, len(inputs), max_batch):
                if abandoned is not None and abandoned():
                    return None
                parts.append(self.run(inputs[i : i + max_batch]))
            return {k: np.concatenate([p[k] for p in parts]) for k in self.output_names}
        values = self.session.run(self.output_names, {self.input_name: inputs})
        return dict(zip(self.output_names, values, strict=True))

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 8, 64)) -> None:
        """Run once per typical size, so the first real request pays no allocation."""
        for size in batch_sizes:
            self.run(np.zeros((size, *self.item_shape), np.float32))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "input": {"name": self.input_name, "shape": [None, *self.item_shape]},
            "outputs": self.output_names,
            "metadata": self.metadata,
        }
