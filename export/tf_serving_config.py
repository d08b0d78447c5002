"""TF Serving configuration files written at the root of ``<repo>/tf``.

``models.config`` is read by ``tensorflow_model_server --model_config_file``. TF Serving
does not resolve a relative ``base_path`` (not against the file's folder, nor the working
directory): it refuses to start ("Expected model ... to have an absolute path or URI"), and
the server binary has no flag for a root folder. So every ``base_path`` is absolute, fixed
when the file is written: ``models.config`` names ``<repo>/tf`` where it was when exported,
``models.docker.config`` names ``/models`` (the tensorflow/serving image's mount point).
A repository that moves, or is mounted elsewhere, needs the file written again for its new
place: ``python -m export config --repo DIR --base PATH`` (see export/deploy_configs.py).
An out-of-date path is not an error at start-up: the server waits for the folder forever.

``batching.config`` (``--enable_batching --batching_parameters_file``) is a text
``BatchingParameters`` proto. Its sizes come from :mod:`vae_contract`, as do the
service's: a request TF Serving accepts is one our service accepts.
"""

from __future__ import annotations

import posixpath

from vae_contract import MAX_BATCH_SIZE, MAX_REQUEST_ITEMS, NETWORKS

MODELS_CONFIG = "models.config"
DOCKER_MODELS_CONFIG = "models.docker.config"
BATCHING_CONFIG = "batching.config"
DOCKER_BASE = "/models"
TF_SERVING_API = "tensorflow-serving-api==2.21.*"  # the release that matches tensorflow-cpu 2.21

# Batches of requests wait at most 2 ms to fill; one batch thread per core of the
# 2-core machines we measure on (tune on the target machine); 100 batches of
# MAX_BATCH_SIZE rows may wait (a request of MAX_REQUEST_ITEMS rows fills 16).
BATCH_TIMEOUT_MICROS = 2000
NUM_BATCH_THREADS = 2
MAX_ENQUEUED_BATCHES = 100


def batching_config() -> str:
    """``BatchingParameters`` that accept every request our service accepts.

    ``max_batch_size`` is the largest *request* TF Serving takes: without large-batch
    splitting it would also be the largest model call, and a request above it is refused
    ("Task size N is larger than maximum input batch size"). With splitting, a request of
    up to MAX_REQUEST_ITEMS rows is cut into model calls of at most MAX_BATCH_SIZE rows,
    the same size our service's batcher runs.
    """
    return (
        f"max_batch_size {{ value: {MAX_REQUEST_ITEMS} }}\n"
        f"batch_timeout_micros {{ value: {BATCH_TIMEOUT_MICROS} }}\n"
        f"max_enqueued_batches {{ value: {MAX_ENQUEUED_BATCHES} }}\n"
        f"num_batch_threads {{ value: {NUM_BATCH_THREADS} }}\n"
        "enable_large_batch_splitting { value: true }\n"
        f"max_execution_batch_size {{ value: {MAX_BATCH_SIZE} }}\n"
    )


def models_config(base: str) -> str:
    """A ``ModelServerConfig`` naming both networks under ``base``; the highest version loads.

    Plain text, so that rewriting it for another place needs no TensorFlow; the tests parse
    it with TF Serving's own proto.
    """
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{posixpath.join(base, name)}"\n'
        '    model_platform: "tensorflow"\n  }\n'
        for name in NETWORKS
    )
    return f"model_config_list {{\n{entries}}}\n"


def tf_serving_protos():
    """TF Serving's protos, or an error that says how to install them without a second TF.

    ``tensorflow-serving-api`` declares a dependency on the ``tensorflow`` wheel, which would
    install beside ``tensorflow-cpu``; ``make install`` installs it with ``--no-deps``.
    """
    try:
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError:
        from keras_vae.errors import KerasVaeError

        raise KerasVaeError(
            "the export writes TF Serving files with TF Serving's protos, and "
            "tensorflow_serving is not installed; run `make install`, or "
            f'pip install --no-deps "{TF_SERVING_API}"'
        ) from None
    from types import SimpleNamespace

    return SimpleNamespace(
        model_pb2=model_pb2,
        predict_pb2=predict_pb2,
        prediction_log_pb2=prediction_log_pb2,
        model_server_config_pb2=model_server_config_pb2,
    )
