"""One onnxruntime session per exported network, with its contract read from the graph."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from vae_contract import (
    DECODER,
    ENCODER,
    IMAGE_SHAPE,
    INPUTS,
    MAX_BATCH_SIZE,
    REQUIRED_OUTPUTS,
    ModelRepositoryError,
)
from vae_contract.repository import REEXPORT

CONTRACT = {
    ENCODER: f"{INPUTS[ENCODER]!r} [N, {', '.join(map(str, IMAGE_SHAPE))}] -> "
    f"{list(REQUIRED_OUTPUTS[ENCODER])}",
    DECODER: f"{INPUTS[DECODER]!r} [N, latent] -> {list(REQUIRED_OUTPUTS[DECODER])}",
}


class OnnxModel:
    """An ONNX network: one named input with a dynamic batch, one or more named outputs.

    Shapes, names and metadata come from the file itself, so the service needs no
    knowledge of how it was trained. A graph named after one of our networks must have that
    network's input and outputs (see :meth:`check_contract`). ``content``, when given, is the
    file's bytes already read and verified (``vae_runtime.repository``): onnxruntime loads
    those, so a file replaced after its check is never what runs.
    """

    def __init__(
        self,
        path: str | Path,
        name: str,
        version: int,
        threads: int = 1,
        content: bytes | None = None,
    ):
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
                str(self.path) if content is None else content,
                options,
                providers=["CPUExecutionProvider"],
            )
        except Exception as error:  # onnxruntime raises its own exception types
            first_line = str(error).strip().splitlines()[0][:200] if str(error) else ""
            raise ModelRepositoryError(
                f"cannot load {self.path} with onnxruntime ({first_line}); {REEXPORT}"
            ) from None
        graph_inputs = self.session.get_inputs()
        first = graph_inputs[0] if graph_inputs else None  # none at all is refused below
        self.input_name = first.name if first else ""
        self.input_shape = list(first.shape) if first else []
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.check_contract(len(graph_inputs))
        self.item_shape = tuple(int(d) for d in self.input_shape[1:])
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def check_contract(self, inputs: int) -> None:
        """One input with fixed item dimensions; for our networks, their names and shapes.

        The checksums catch a file swapped for another of this repository; this catches
        the wrong network under a network's name however it got there (an encoder takes
        images, a decoder takes z), before the first request would fail on it.
        """
        item = self.input_shape[1:]
        sound = inputs == 1 and all(isinstance(d, int) and d > 0 for d in item)
        if self.name in INPUTS:
            shaped = item == list(IMAGE_SHAPE) if self.name == ENCODER else len(item) == 1
            gives = set(REQUIRED_OUTPUTS[self.name]) <= set(self.output_names)
            sound = sound and self.input_name == INPUTS[self.name] and shaped and gives
        if not sound:
            found = (
                f"{inputs} input(s), {self.input_name!r} {self.input_shape} -> {self.output_names}"
            )
            wanted = CONTRACT.get(self.name, "one input [N, fixed sizes]")
            raise ModelRepositoryError(
                f"cannot load {self.path}: its graph ({found}) is not a {self.name}, which "
                f"takes {wanted}; a file was swapped or replaced: {REEXPORT}"
            )

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

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 8, MAX_BATCH_SIZE)) -> None:
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
