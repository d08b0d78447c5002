"""Peer: PyTriton, a real Triton core (C++ HTTP front end, dynamic batcher) in front of a
Python callable that runs onnxruntime.

The closest thing to Triton's own onnxruntime backend that pip installs: PyTriton ships
the Triton core with its Python backend only. Requests are KServe v2
(``POST /v2/models/<name>/infer``, the name and version taken from the Triton layout
``<name>/<version>/model.onnx``); the dynamic batcher coalesces them into batches of at
most 64 rows, waiting at most ``MAX_QUEUE_DELAY_US`` for a batch to fill.
"""

from __future__ import annotations

import os
import signal
import sysconfig
from pathlib import Path

import numpy as np
from encoder import Encoder, parse_args
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MAX_BATCH_SIZE = 64
# Small, as keras-vae's own default is no wait at all: a lone request is not held back.
MAX_QUEUE_DELAY_US = 100


def use_this_libpython() -> None:
    """Make Triton's Python backend stub load the libpython of the interpreter running us.

    The stub links ``libpython3.X.so`` by name, so without this the dynamic linker may pick
    the system's (Debian 12: 3.11.2) while the stub imports this interpreter's standard
    library (here 3.11.7): the model then fails to load with "'_thread.RLock' object has
    no attribute '_recursion_count'". Children (tritonserver, the stub) inherit it.
    """
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        paths = [sysconfig.get_config_var("LIBDIR"), os.environ.get("LD_LIBRARY_PATH", "")]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)


def tensors(specs: list, names: list[str]) -> list[Tensor]:
    """Triton tensor definitions of onnxruntime inputs or outputs, without the batch axis."""
    return [
        Tensor(
            name=name,
            dtype=np.float32,
            shape=tuple(d if isinstance(d, int) else -1 for d in spec.shape[1:]),
        )
        for spec, name in zip(specs, names, strict=True)
    ]


def main() -> None:
    args = parse_args(__doc__)
    use_this_libpython()
    # PyTriton stops Triton and removes its workspace on Ctrl-C only; SIGTERM does the same.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    encoder = Encoder(args.model, args.threads)
    model = Path(args.model)

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return encoder(inputs[encoder.input_name])

    # Triton also opens gRPC and metrics ports: next to the HTTP one, not on its defaults.
    config = TritonConfig(
        http_port=args.port, grpc_port=args.port + 1, metrics_port=args.port + 2, log_verbose=0
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=model.parent.parent.name,
            model_version=int(model.parent.name),
            infer_func=infer,
            inputs=tensors(encoder.session.get_inputs(), [encoder.input_name]),
            outputs=tensors(encoder.session.get_outputs(), encoder.output_names),
            config=ModelConfig(
                max_batch_size=MAX_BATCH_SIZE,
                batcher=DynamicBatcher(max_queue_delay_microseconds=MAX_QUEUE_DELAY_US),
            ),
        )
        triton.serve()


if __name__ == "__main__":
    main()
