"""Triton ``config.pbtxt`` for each ONNX model, at ``<repo>/onnx/<network>/config.pbtxt``.

Without this file Triton autocompletes an ONNX model with its default maximum batch size,
4, and refuses larger requests; none of our batching settings would reach it. The sizes
come from :mod:`vae_contract`, like our service's and TF Serving's. Triton does not split
a request, so ``max_batch_size`` is the largest request (MAX_REQUEST_ITEMS rows); its
dynamic batcher prefers batches of up to MAX_BATCH_SIZE rows, the size our batcher runs.
The dims are the contract's shapes less the batch dimension, for the latent size of the
version Triton loads (the latest: ``version_policy latest``).
"""

from __future__ import annotations

from export.tf_serving_config import BATCH_TIMEOUT_MICROS
from vae_contract import (
    INPUTS,
    MAX_BATCH_SIZE,
    MAX_REQUEST_ITEMS,
    OUTPUTS,
    input_shape,
    output_shapes,
)

TRITON_CONFIG = "config.pbtxt"
BACKEND = "onnxruntime"
# Dynamic batching: the sizes Triton prefers to form, and how long a request may wait
# for others (as long as TF Serving lets a batch wait to fill).
PREFERRED_BATCH_SIZES = (MAX_BATCH_SIZE // 4, MAX_BATCH_SIZE)
MAX_QUEUE_DELAY_MICROSECONDS = BATCH_TIMEOUT_MICROS
INSTANCES = 1  # one onnxruntime session per model, which uses every core itself
# Batches replayed at load time, so the first real request does not pay for lazy set-up;
# zeros are valid input for both networks (a blank image, the prior's mean).
WARMUP_BATCH_SIZES = (1, MAX_BATCH_SIZE)


def _dims(shape: list[int | None]) -> str:
    """The dims of one example: the contract's shape less its (dynamic) batch dimension."""
    assert shape[0] is None, shape
    return ", ".join(str(d) for d in shape[1:])


def model_config(network: str, latent_dim: int, name: str | None = None) -> str:
    """The ``ModelConfig`` text proto of ``network`` for Triton, as model ``name`` (its
    folder's name: ``network`` itself, or a variant's, such as ``vae_encoder_int8``, which
    has the same tensors)."""
    model = name or network
    tensor = INPUTS[network]
    in_dims = _dims(input_shape(network, latent_dim))
    outputs = ",\n".join(
        f'  {{ name: "{output}" data_type: TYPE_FP32 dims: [ {_dims(shape)} ] }}'
        for output, shape in output_shapes(network, latent_dim).items()
    )
    preferred = ", ".join(str(size) for size in PREFERRED_BATCH_SIZES)
    warmup = ",\n".join(
        f'  {{\n    name: "zeros_batch_{size}"\n    batch_size: {size}\n'
        f'    inputs {{\n      key: "{tensor}"\n'
        f"      value {{ data_type: TYPE_FP32 dims: [ {in_dims} ] zero_data: true }}\n"
        "    }\n  }"
        for size in WARMUP_BATCH_SIZES
    )
    what = f"{tensor} -> {', '.join(OUTPUTS[network])}"
    return (
        f"# {model} ({what}); written by `python -m export`, see export/triton_config.py\n"
        f'name: "{model}"\n'
        f'backend: "{BACKEND}"\n'
        f"max_batch_size: {MAX_REQUEST_ITEMS}\n"
        "version_policy { latest { num_versions: 1 } }\n"
        f'input [\n  {{ name: "{tensor}" data_type: TYPE_FP32 dims: [ {in_dims} ] }}\n]\n'
        f"output [\n{outputs}\n]\n"
        f"instance_group [\n  {{ count: {INSTANCES} kind: KIND_CPU }}\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_MICROSECONDS}\n"
        "}\n"
        f"model_warmup [\n{warmup}\n]\n"
    )
