"""The names and shapes other teams rely on (see ENGINEERING.md, "Contracts").

Defined once, importable without TensorFlow or onnxruntime: training, export,
evaluation, the service and its client all read them from here.
"""

from __future__ import annotations

ENCODER = "vae_encoder"
DECODER = "vae_decoder"
NETWORKS = (ENCODER, DECODER)
SIGNATURE = "serving_default"
IMAGE_SHAPE = (28, 28, 1)

IMAGES, Z = "images", "z"
Z_MEAN, Z_LOG_VAR = "z_mean", "z_log_var"
PROBS, LOGITS = "probs", "logits"
INPUTS = {ENCODER: IMAGES, DECODER: Z}
OUTPUTS = {ENCODER: (Z_MEAN, Z_LOG_VAR), DECODER: (PROBS, LOGITS)}
REQUIRED_OUTPUTS = {ENCODER: OUTPUTS[ENCODER], DECODER: (PROBS,)}  # logits may be offered too

# The HTTP API's binary form: a .npy body or answer, and the header that names the columns
# of a stacked .npy answer (z_mean and z_log_var of /v1/encode, in order).
NPY_MEDIA_TYPE = "application/x-npy"
OUTPUTS_HEADER = "x-outputs"

# Model repository layout: <repo>/onnx/<network>/<version>/model.onnx (Triton's layout)
# and <repo>/tf/<network>/<version>/saved_model.pb (TF Serving's).
ONNX_DIR, TF_DIR = "onnx", "tf"
ONNX_FILE = "model.onnx"

# Variants: other builds of the same two networks, published beside them in onnx/ as models
# of their own, under the version number of the float32 export they were built from
# (onnx/vae_encoder_int8/3 is the int8 build of onnx/vae_encoder/3). Triton serves them by
# these names; our service serves one variant's pair as the contract's networks
# (``python -m serving --variant int8``).
FLOAT32, INT8 = "float32", "int8"
VARIANTS = (FLOAT32, INT8)


def model_name(network: str, variant: str = FLOAT32) -> str:
    """The repository folder (and Triton model name) of ``network``'s ``variant`` build."""
    return network if variant == FLOAT32 else f"{network}_{variant}"


# Request sizes, shared by every server of the repository: our service's defaults
# (serving/config.py), TF Serving's batching.config and Triton's config.pbtxt
# (export/tf_serving_config.py, export/triton_config.py). A client that one of them
# accepts is accepted by all: one request may carry up to MAX_REQUEST_ITEMS rows, and
# one model call runs at most MAX_BATCH_SIZE of them (a larger request is split).
MAX_REQUEST_ITEMS = 1024
MAX_BATCH_SIZE = 64


def input_shape(network: str, latent_dim: int) -> list[int | None]:
    """Input shape with a dynamic (None) batch dimension."""
    return [None, *IMAGE_SHAPE] if network == ENCODER else [None, latent_dim]


def output_shapes(network: str, latent_dim: int) -> dict[str, list[int | None]]:
    if network == ENCODER:
        return {name: [None, latent_dim] for name in OUTPUTS[ENCODER]}
    return {name: [None, *IMAGE_SHAPE] for name in OUTPUTS[DECODER]}


# The repository reader needs the names above; it is re-exported so that every user
# imports the contract from one place.
from vae_contract.repository import (  # noqa: E402
    MANIFEST_FILE,
    ModelRepositoryError,
    choose_version,
    onnx_versions,
)

__all__ = [
    "DECODER",
    "ENCODER",
    "FLOAT32",
    "IMAGES",
    "IMAGE_SHAPE",
    "INPUTS",
    "INT8",
    "LOGITS",
    "MANIFEST_FILE",
    "MAX_BATCH_SIZE",
    "MAX_REQUEST_ITEMS",
    "NETWORKS",
    "ONNX_DIR",
    "ONNX_FILE",
    "OUTPUTS",
    "PROBS",
    "REQUIRED_OUTPUTS",
    "SIGNATURE",
    "TF_DIR",
    "VARIANTS",
    "Z",
    "Z_LOG_VAR",
    "Z_MEAN",
    "ModelRepositoryError",
    "choose_version",
    "input_shape",
    "model_name",
    "onnx_versions",
    "output_shapes",
]
