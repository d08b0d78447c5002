"""SavedModel per network with a ``serving_default`` signature, plus a TF Serving warm-up file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.functions import input_spec, serving_function
from vae_contract import ENCODER, INPUTS, SIGNATURE

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"


def write_savedmodel(vae, network: str, path: Path) -> None:
    import keras

    archive = keras.export.ExportArchive()
    archive.track(vae.encoder if network == ENCODER else vae.decoder)
    archive.add_endpoint(
        SIGNATURE,
        serving_function(vae, network),
        input_signature=[input_spec(network, vae.latent_dim)],
    )
    archive.write_out(str(path), verbose=False)


def savedmodel_outputs(path: Path, network: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Run the signature of a SavedModel read back from disk, as TF Serving would."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    outputs = signature(**{INPUTS[network]: tf.constant(inputs)})
    return {name: value.numpy() for name, value in outputs.items()}


# TF Serving replays the PredictionLog records of the warm-up file at load time,
# so the first real request does not pay for lazy initialisation. The messages are
# encoded by hand (tensorflow-serving-api would pull a second TensorFlow).
def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def predict_log(model_name: str, input_name: str, batch: np.ndarray) -> bytes:
    """A serialized ``tensorflow.serving.PredictionLog`` holding one PredictRequest."""
    import tensorflow as tf

    tensor = tf.make_tensor_proto(batch).SerializeToString()
    model_spec = _field(1, model_name.encode()) + _field(3, SIGNATURE.encode())
    inputs_entry = _field(1, input_name.encode()) + _field(2, tensor)
    request = _field(1, model_spec) + _field(2, inputs_entry)
    return _field(6, _field(1, request))  # PredictionLog.predict_log -> PredictLog.request


def write_warmup(path: Path, model_name: str, input_name: str, batches: list[np.ndarray]) -> None:
    """Write TFRecord warm-up requests under the SavedModel's ``assets.extra``."""
    import tensorflow as tf

    target = path / WARMUP_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for batch in batches:
            writer.write(predict_log(model_name, input_name, batch))
