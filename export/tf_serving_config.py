"""TF Serving configuration files written at the root of ``<repo>/tf``."""

from __future__ import annotations

from pathlib import Path

from vae_contract import NETWORKS

MODELS_CONFIG = "models.config"
DOCKER_MODELS_CONFIG = "models.docker.config"
BATCHING_CONFIG = "batching.config"

# Server-side batching for CPU serving: batches of up to 64 requests, waiting at
# most 2 ms, one batch per core. Tune on the target machine.
BATCHING = """\
max_batch_size { value: 64 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
"""


def models_config(base: str) -> str:
    """A ``model_config_list`` naming both networks; TF Serving loads the highest version."""
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{base}/{name}"\n'
        '    model_platform: "tensorflow"\n  }\n'
        for name in NETWORKS
    )
    return f"model_config_list {{\n{entries}}}\n"


def write_configs(tf_root: Path) -> list[Path]:
    """Host paths in ``models.config``; ``/models`` paths for the tensorflow/serving image."""
    files = {
        MODELS_CONFIG: models_config(str(tf_root.resolve())),
        DOCKER_MODELS_CONFIG: models_config("/models"),
        BATCHING_CONFIG: BATCHING,
    }
    written = []
    for name, text in files.items():
        path = tf_root / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        written.append(path)
    return written
