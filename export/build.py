"""Export one trained run as a new version of the model repository, checked before publishing."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from export.deploy_configs import write_deploy_configs
from export.manifest import MANIFEST_FILE, file_table, tool_versions
from export.onnx_graph import OPSET, onnx_outputs, write_onnx
from export.parity import ATOL, RTOL, ParityReport, compare
from export.repository import choose_version, publish, staging, version_dirs
from export.savedmodel import savedmodel_outputs, warmup_batches, write_savedmodel, write_warmup
from export.tf_serving_config import tf_serving_protos
from keras_vae.config import RunConfig
from keras_vae.runs import METRICS_FILE, MODEL_FILE, check_run_dir, load_config, load_vae
from vae_contract import (
    DECODER,
    ENCODER,
    INPUTS,
    NETWORKS,
    ONNX_DIR,
    ONNX_FILE,
    OUTPUTS,
    SIGNATURE,
    TF_DIR,
    input_shape,
    output_shapes,
    score_reference,
)
from vae_contract.likelihood import DEFAULT_K
from vae_contract.repository import FORMAT_NAMES

PARITY_SEED = 0


@dataclass
class ExportResult:
    version: int
    repo: Path
    folders: list[Path]
    parity: list[ParityReport] = field(default_factory=list)
    configs: list[Path] = field(default_factory=list)  # the servers' files (deploy_configs)


def parity_inputs(config: RunConfig, latent_dim: int, examples: int) -> dict[str, np.ndarray]:
    """Real test images (binarized as in evaluation) and standard-normal latent vectors."""
    from keras_vae.data import held_out_inputs, load_tfds_split

    images, _ = load_tfds_split(config.data, "test")
    rng = np.random.default_rng(PARITY_SEED)
    return {
        ENCODER: held_out_inputs(images[:examples], config.data.binarization),
        DECODER: rng.standard_normal((examples, latent_dim), dtype=np.float32),
    }


def keras_outputs(vae, network: str, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """The reference: the in-memory Keras model, batched to bound memory."""
    from export.functions import serving_function

    function = serving_function(vae, network)
    chunks = [function(inputs[i : i + 500]) for i in range(0, len(inputs), 500)]
    return {name: np.concatenate([np.asarray(c[name]) for c in chunks]) for name in chunks[0]}


def onnx_metadata(network: str, config: RunConfig, metrics: dict, version: int, latent: int):
    return {
        "keras_vae.network": network,
        "keras_vae.model_version": version,
        "keras_vae.latent_dim": latent,
        "keras_vae.input_name": INPUTS[network],
        "keras_vae.input_shape": json.dumps(input_shape(network, latent)),
        "keras_vae.input_range": "[0, 1]" if network == ENCODER else "real; z ~ N(0, I)",
        "keras_vae.outputs": ",".join(OUTPUTS[network]),
        "keras_vae.dataset": config.data.dataset,
        "keras_vae.binarization": config.data.binarization,
        "keras_vae.test_elbo": metrics.get("test_elbo", "unknown"),
    }


def manifest(
    fmt: str,
    network: str,
    version: int,
    folder: Path,
    source: dict[str, Any],
    latent: int,
    reports: list[ParityReport],
    tolerance: dict[str, float],
    export_id: str,
) -> dict[str, Any]:
    """What ``folder`` holds and where it came from; read back by vae_contract.repository.

    ``export_id`` is shared by the four folders of one export: a reader checks that the
    encoder and decoder it pairs carry the same one, and a later export uses it to tell
    which folders a killed export had published.
    """
    shapes = output_shapes(network, latent)
    document = {
        "model_name": network,
        "version": version,
        "format": FORMAT_NAMES[fmt],
        "export_id": export_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": {INPUTS[network]: {"dtype": "float32", "shape": input_shape(network, latent)}},
        "outputs": {name: {"dtype": "float32", "shape": shapes[name]} for name in shapes},
        "latent_dim": latent,
        "files": file_table(folder),
        "source_run": source,
        "tools": tool_versions(),
        "parity": {
            "tolerance": tolerance,
            "reference": "in-memory Keras model",
            "results": [asdict(r) for r in reports if r.network == network],
        },
    }
    if fmt == TF_DIR:
        document["signature"] = SIGNATURE
    else:
        document["opset"] = OPSET
    return document


def onnx_score_reference(folders: dict, version: int, images: np.ndarray, dataset: str) -> dict:
    """The held-out images' log-likelihood histogram by the exported ONNX graphs, scored
    as the service's /v1/score scores them (LocalVae.score: default K, seed 0)."""
    from serving.client import LocalVae
    from vae_runtime import OnnxModel

    encoder, decoder = (
        OnnxModel(folders[ONNX_DIR, network] / ONNX_FILE, network, version) for network in NETWORKS
    )
    k, seed = DEFAULT_K, score_reference.SEED
    scored = LocalVae.from_models(encoder, decoder).score(images, k=k, seed=seed)
    return score_reference.build(scored["log_likelihood"], dataset, k, seed)


def export_run(
    run_dir: str | Path,
    repo: str | Path,
    version: int | None = None,
    atol: float = ATOL,
    examples: int = 1000,
    config: RunConfig | None = None,
    rtol: float = RTOL,
) -> ExportResult:
    """Write SavedModels and ONNX graphs of ``run_dir`` as a new version of ``repo``.

    Every artifact is read back from disk and compared with the Keras model before
    anything is published; on any failure the repository is left as it was, and if the
    process is killed, the next export removes what it left (export/repository.py).
    Then the servers' configuration files are written for this version
    (export/deploy_configs.py).
    """
    run_dir = check_run_dir(run_dir)
    repo = Path(repo)
    tf_serving_protos()  # missing, it is said now rather than after the model is converted
    config = config or load_config(run_dir)
    vae = load_vae(run_dir / MODEL_FILE)
    metrics_path = run_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    latent = vae.latent_dim
    inputs = parity_inputs(config, latent, examples)
    version = choose_version(repo, version)
    source = {"run": run_dir.name, "config": config.to_dict(), "metrics": metrics}
    export_id = uuid.uuid4().hex

    reports: list[ParityReport] = []
    with staging(repo) as stage:
        folders = {key: stage / rel for key, rel in version_dirs(repo, version).items()}
        for network in NETWORKS:
            reference = keras_outputs(vae, network, inputs[network])
            saved = folders[TF_DIR, network]
            write_savedmodel(vae, network, saved)
            write_warmup(saved, network, INPUTS[network], warmup_batches(inputs[network]))
            candidate = savedmodel_outputs(saved, network, inputs[network])
            reports.append(compare(network, FORMAT_NAMES[TF_DIR], reference, candidate, atol, rtol))

            onnx_path = folders[ONNX_DIR, network] / ONNX_FILE
            meta = onnx_metadata(network, config, metrics, version, latent)
            write_onnx(vae, network, onnx_path, meta, version)
            candidate = onnx_outputs(onnx_path, network, inputs[network])
            reports.append(
                compare(network, FORMAT_NAMES[ONNX_DIR], reference, candidate, atol, rtol)
            )

        reference = onnx_score_reference(folders, version, inputs[ENCODER], config.data.dataset)
        tolerance = {"atol": atol, "rtol": rtol}
        for (fmt, network), folder in folders.items():
            document = manifest(
                fmt, network, version, folder, source, latent, reports, tolerance, export_id
            )
            if (fmt, network) == (ONNX_DIR, DECODER):  # what /v1/score/reference serves
                document[score_reference.KEY] = reference
            (folder / MANIFEST_FILE).write_text(json.dumps(document, indent=2) + "\n")
        published = publish(stage, repo, version, export_id)
    configs = write_deploy_configs(repo, latent_dim=latent)
    return ExportResult(version, repo, published, reports, configs)
