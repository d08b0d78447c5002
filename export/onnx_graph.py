"""ONNX graph per network, converted by tf2onnx from the same function as the SavedModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.functions import input_spec, serving_function
from vae_contract import INPUTS, OUTPUTS

# The highest opset tf2onnx 1.17 knows; onnxruntime 1.20+ runs it.
OPSET = 18
BATCH_DIM = "batch"


def write_onnx(vae, network: str, path: Path, metadata: dict[str, str], version: int) -> None:
    """Convert, name the batch dimension, attach metadata, and check the result fully."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    function = tf.function(serving_function(vae, network))
    model, _ = tf2onnx.convert.from_function(
        function, input_signature=[input_spec(network, vae.latent_dim)], opset=OPSET
    )
    graph = model.graph
    # tf2onnx emits the outputs in its own order; put them in the contract's.
    order = {name: index for index, name in enumerate(OUTPUTS[network])}
    outputs = sorted(graph.output, key=lambda value: order[value.name])
    del graph.output[:]
    graph.output.extend(outputs)
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    model.model_version = version
    model.doc_string = f"keras-vae {network}: {INPUTS[network]} -> {', '.join(OUTPUTS[network])}"
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def onnx_outputs(path: Path, network: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values = session.run(names, {INPUTS[network]: inputs})
    return dict(zip(names, values, strict=True))
