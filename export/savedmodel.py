"""SavedModel per network with a ``serving_default`` signature, plus a TF Serving warm-up file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from export.functions import input_spec, serving_function
from export.tf_serving_config import tf_serving_protos
from vae_contract import ENCODER, INPUTS, MAX_BATCH_SIZE, SIGNATURE

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


def predict_log(model_name: str, input_name: str, batch: np.ndarray) -> bytes:
    """A serialized ``tensorflow.serving.PredictionLog`` holding one PredictRequest.

    TF Serving replays these records at load time (``--enable_model_warmup``, on by
    default), so the first real request does not pay for lazy initialisation. Built with
    TF Serving's own protos, so the records are what the server parses.
    """
    import tensorflow as tf

    protos = tf_serving_protos()
    request = protos.predict_pb2.PredictRequest(
        model_spec=protos.model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE)
    )
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(batch))
    log = protos.prediction_log_pb2.PredictionLog(
        predict_log=protos.prediction_log_pb2.PredictLog(request=request)
    )
    return log.SerializeToString()


def warmup_batches(inputs: np.ndarray) -> list[np.ndarray]:
    """1 row, 8 rows, and a whole model call (MAX_BATCH_SIZE), as far as ``inputs`` go."""
    sizes = sorted({min(size, len(inputs)) for size in (1, 8, MAX_BATCH_SIZE)})
    return [inputs[:size] for size in sizes]


def write_warmup(path: Path, model_name: str, input_name: str, batches: list[np.ndarray]) -> None:
    """Write TFRecord warm-up requests under the SavedModel's ``assets.extra``."""
    import tensorflow as tf

    target = path / WARMUP_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for batch in batches:
            writer.write(predict_log(model_name, input_name, batch))
