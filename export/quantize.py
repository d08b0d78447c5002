"""The int8 variant of an exported version: onnxruntime static quantization, measured
against its float32 source in the same run, and published only if it keeps the likelihood.

**Recipe** (each choice measured on this repository's models; README, "int8 variant"):

- QDQ format (QuantizeLinear/DequantizeLinear around float operators): onnxruntime's CPU
  provider fuses it into its int8 kernels (QLinearConv, QGemm), and Triton's onnxruntime
  backend reads the same file.
- Activations uint8, weights int8 (U8S8), one scale per tensor, MinMax calibration. One
  scale per output channel costs far more test NLL on an AVX2 CPU without VNNI, where
  U8S8's 16-bit intermediate sums saturate on wider weight ranges.
- Only the operators onnxruntime runs as int8 kernels on CPU are quantized: Conv, MatMul,
  Gemm, and Relu (folded into them). ConvTranspose, the decoder's upsampling, has none:
  quantized, it runs as DequantizeLinear, float ConvTranspose, QuantizeLinear, which only
  adds work. The output layer (bias and sigmoid: logits, probs) stays float.
- Pre-processing by ``quant_pre_process`` (ONNX shape inference and onnxruntime's basic
  fusions such as MatMul+Add into Gemm), without symbolic shape inference: our graphs'
  shapes are fixed but for the batch, and it would need sympy.

**Calibration** uses training images, never the test images the NLL is measured on: the
first ``CALIBRATION_IMAGES`` of the training split (the validation tail is its end),
binarized as the run's training data is. The decoder is calibrated on what it is fed:
z drawn from q(z|x) of those images (the IWAE estimator, ``/v1/encode?sample``) and as
many from the prior N(0, I) (``/v1/sample``).

**Publishing.** The float32 version is published first (it passed its own parity check,
and it is what the variant is measured against); the variant's two folders are then
staged, measured and published the same way (export/repository.py), under that version's
number. If the NLL cost exceeds ``max_nll_increase`` nothing of the variant is published
and :class:`QuantizationRefused` says so in one line; the float32 version stays.
"""

from __future__ import annotations

import json
import platform
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from export.deploy_configs import write_deploy_configs
from export.manifest import MANIFEST_FILE, file_table, tool_versions
from export.repository import publish, staging, variant_dirs
from export.speed import METHOD, Timing, paired_timing
from keras_vae.config import RunConfig
from keras_vae.errors import KerasVaeError
from keras_vae.runs import override_data_location
from vae_contract import (
    DECODER,
    ENCODER,
    FLOAT32,
    INPUTS,
    INT8,
    MAX_BATCH_SIZE,
    NETWORKS,
    ONNX_DIR,
    ONNX_FILE,
    OUTPUTS,
    ModelRepositoryError,
    model_name,
)

QUANTIZED_OP_TYPES = ("Conv", "MatMul", "Gemm", "Relu")
CALIBRATION_IMAGES = 1000
CALIBRATION_SEED = 2  # the calibration set's binarization and its z draws
NLL_IMAGES = 1000  # the first test images, binarized as `make evaluate` does
NLL_K = 100
NLL_SEED = 0  # the same noise for both pairs
MAX_NLL_INCREASE = 1.0  # nats per image
TIMED_BATCHES = (1, MAX_BATCH_SIZE)
FEED_BATCH = 64  # rows per calibration call


class QuantizationRefused(KerasVaeError):
    """The int8 pair costs more test NLL than allowed: it is not published."""


@dataclass
class VariantResult:
    variant: str
    version: int
    folders: list[Path]
    timings: dict[str, list[Timing]]
    nll: dict[str, Any]
    configs: list[Path] = field(default_factory=list)


def recipe() -> dict[str, Any]:
    """How the graphs were quantized, as recorded in their manifests."""
    return {
        "tool": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "activation_type": "QUInt8",
        "weight_type": "QInt8",
        "per_channel": False,
        "reduce_range": False,
        "calibrate_method": "MinMax",
        "op_types_to_quantize": list(QUANTIZED_OP_TYPES),
        "pre_process": "quant_pre_process(skip_symbolic_shape=True)",
    }


class _Feed:
    """A ``CalibrationDataReader``: the calibration rows of one input, a batch at a time."""

    def __init__(self, name: str, rows: np.ndarray):
        self.batches = iter(
            {name: rows[i : i + FEED_BATCH]} for i in range(0, len(rows), FEED_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def calibration_inputs(
    config: RunConfig, encoder, count: int, seed: int = CALIBRATION_SEED
) -> dict[str, np.ndarray]:
    """Training images for the encoder; z from q(z|x) of them and from the prior, for the
    decoder. ``encoder`` is the float32 one (``vae_runtime.OnnxModel``)."""
    from keras_vae.data import binarize_fixed, load_tfds_split

    images, _ = load_tfds_split(config.data, "train")
    usable = len(images) - config.data.validation_size
    if not 1 <= count <= usable:
        raise KerasVaeError(
            f"--calibration-images must be in 1..{usable} (the training images), got {count}"
        )
    x = binarize_fixed(images[:count], config.data.binarization, seed)
    outputs = encoder.run(x, MAX_BATCH_SIZE)
    z_mean, z_log_var = (outputs[name] for name in OUTPUTS[ENCODER])
    rng = np.random.default_rng(seed)
    posterior = z_mean + np.exp(0.5 * z_log_var) * rng.standard_normal(z_mean.shape)
    prior = rng.standard_normal(z_mean.shape)
    return {ENCODER: x, DECODER: np.concatenate([posterior, prior]).astype(np.float32)}


def quantize_graph(
    source: bytes, network: str, rows: np.ndarray, path: Path, metadata: dict[str, str]
) -> None:
    """Pre-process, calibrate on ``rows`` and quantize the float32 graph ``source``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        original, prepared = Path(tmp) / "float32.onnx", Path(tmp) / "prepared.onnx"
        original.write_bytes(source)
        quant_pre_process(str(original), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            _Feed(INPUTS[network], rows),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OP_TYPES),
            per_channel=False,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    model = onnx.load(str(path))
    source_model = onnx.load_from_string(source)
    model.model_version = source_model.model_version
    model.doc_string = f"{source_model.doc_string} (int8, QDQ)"
    del model.metadata_props[:]
    props = {p.key: p.value for p in source_model.metadata_props} | metadata
    for key, value in props.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def measure_speed(float32: dict, int8: dict, inputs: dict[str, np.ndarray]) -> dict[str, list]:
    """Speed-ups of each network at batch 1 and 64, on one-thread sessions (export/speed.py)."""
    timings = {}
    for network in NETWORKS:
        rows = []
        for batch in TIMED_BATCHES:
            feed = inputs[network][:batch]
            ours, theirs = partial(float32[network].run, feed), partial(int8[network].run, feed)
            rows.append(paired_timing(batch, ours, theirs))
        timings[network] = rows
    return timings


def measure_nll(
    float32: dict, int8: dict, images: np.ndarray, k: int, progress: bool
) -> dict[str, Any]:
    """Test NLL of both pairs by the IWAE estimator with the same seed, and the cost."""
    from keras_vae.evaluate import model_networks
    from keras_vae.iwae import evaluate_likelihood

    figures = {}
    for name, models in ((FLOAT32, float32), (INT8, int8)):
        encode, decode = model_networks(models[ENCODER], models[DECODER])
        figures[name] = evaluate_likelihood(
            images, encode, decode, k, seed=NLL_SEED, progress=progress
        )
    cost = figures[INT8]["test_nll"] - figures[FLOAT32]["test_nll"]
    return {
        "estimator": "IWAE (keras_vae.iwae.evaluate_likelihood), the same seed for both",
        "k": k,
        "images": len(images),
        "test_images": f"the first {len(images)} of the test split, binarized as in evaluate",
        "seed": NLL_SEED,
        "float32_test_nll": round(figures[FLOAT32]["test_nll"], 4),
        "int8_test_nll": round(figures[INT8]["test_nll"], 4),
        "float32_stderr": round(figures[FLOAT32]["test_nll_stderr"], 4),
        "nll_cost": round(cost, 4),
        "seconds": {name: figures[name]["iwae_seconds"] for name in figures},
    }


def differences(float32: dict, int8: dict, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Largest and mean |int8 - float32| of each output, on the measured inputs."""
    found = {}
    for network in NETWORKS:
        ours, theirs = (m[network].run(inputs[network], MAX_BATCH_SIZE) for m in (float32, int8))
        found[network] = {
            name: {
                "max_abs": round(float(np.max(np.abs(theirs[name] - ours[name]))), 6),
                "mean_abs": round(float(np.mean(np.abs(theirs[name] - ours[name]))), 6),
            }
            for name in ours
        }
    return found


def cpu_name() -> str:
    """The CPU the speed-ups were measured on (they depend on its instruction set)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def quantize_version(
    repo: str | Path,
    version: int,
    config: RunConfig,
    max_nll_increase: float = MAX_NLL_INCREASE,
    calibration_images: int = CALIBRATION_IMAGES,
    nll_images: int = NLL_IMAGES,
    nll_k: int = NLL_K,
    progress: bool = True,
    say: Callable[[str], None] = print,
) -> VariantResult:
    """Build, measure and publish the int8 variant of float32 ``version`` of ``repo``.

    Raises :class:`QuantizationRefused` (nothing of the variant published) when the int8
    pair's test NLL exceeds float32's by more than ``max_nll_increase`` nats.
    """
    from keras_vae.data import held_out_inputs, load_tfds_split
    from vae_contract.repository import scan_onnx, verify
    from vae_runtime import OnnxModel, open_version

    repo = Path(repo)
    targets = variant_dirs(version, INT8)
    for relative in targets.values():
        if (repo / relative).exists():
            raise KerasVaeError(
                f"{repo / relative} exists; a variant is never overwritten (remove it first)"
            )
    try:
        source = scan_onnx(repo).choose(version)
        verified = verify(source)
        fast32 = open_version(source, threads=0)  # onnxruntime's default: every core
        timed32 = open_version(source, threads=1)
    except ModelRepositoryError as error:
        raise KerasVaeError(str(error)) from None

    say(f"int8: calibrating on {calibration_images} training images")
    calibration = calibration_inputs(config, fast32[ENCODER], calibration_images)
    test, _ = load_tfds_split(config.data, "test")
    if not 1 <= nll_images <= len(test):
        raise KerasVaeError(f"--nll-images must be in 1..{len(test)}, got {nll_images}")
    images = held_out_inputs(test[:nll_images], config.data.binarization)
    prior = np.random.default_rng(NLL_SEED).standard_normal(
        (nll_images, verified.latent_dim), dtype=np.float32
    )
    measured = {ENCODER: images, DECODER: prior}
    export_id = uuid.uuid4().hex

    with staging(repo) as stage:
        folders = {network: stage / targets[ONNX_DIR, network] for network in NETWORKS}
        for network in NETWORKS:
            metadata = {
                "keras_vae.variant": INT8,
                "keras_vae.source_model": network,
                "keras_vae.source_version": str(version),
            }
            path = folders[network] / ONNX_FILE
            quantize_graph(verified.models[network], network, calibration[network], path, metadata)
        # Loaded as the service loads them, under the contract's names: its checks apply.
        fast8, timed8 = (
            {n: OnnxModel(folders[n] / ONNX_FILE, n, version, threads) for n in NETWORKS}
            for threads in (0, 1)
        )
        say(f"int8: test NLL, IWAE K={nll_k} on {nll_images} test images, float32 then int8")
        nll = measure_nll(fast32, fast8, images, nll_k, progress)
        nll["max_nll_increase"] = max_nll_increase
        cost = nll["nll_cost"]
        if not cost <= max_nll_increase:  # NaN refuses too
            raise QuantizationRefused(
                f"int8 variant of version {version} not published: its test NLL is "
                f"{cost:+.3f} nats from float32's ({nll['int8_test_nll']:.2f} vs "
                f"{nll['float32_test_nll']:.2f}; IWAE K={nll_k}, {nll_images} test images, "
                f"same noise), above --max-nll-increase {max_nll_increase:g}; version "
                f"{version} (float32) stays published"
            )
        say("int8: timing against float32 (one thread, interleaved)")
        timings = measure_speed(timed32, timed8, measured)
        facts = {
            "name": INT8,
            "quantization": recipe(),
            "calibration": {
                "split": "train",
                "images": calibration_images,
                "which": f"the first {calibration_images} training images, binarized "
                f"({config.data.binarization}) with seed {CALIBRATION_SEED}",
                "decoder_inputs": "z ~ q(z|x) of those images, and as many z ~ N(0, I)",
                "dataset": config.data.dataset,
            },
            "nll": nll,
        }
        diffs = differences(fast32, fast8, measured)
        for network in NETWORKS:
            measured_here = {
                **facts,
                "speed": {
                    "method": METHOD,
                    "cpu": cpu_name(),
                    "timings": [t.to_dict() for t in timings[network]],
                },
                "difference_from_float32": diffs[network],
            }
            document = variant_manifest(
                network,
                version,
                folders[network],
                verified.manifests[network],
                export_id,
                measured_here,
            )
            (folders[network] / MANIFEST_FILE).write_text(json.dumps(document, indent=2) + "\n")
        published = publish(stage, repo, version, export_id, targets)
    configs = write_deploy_configs(repo, latent_dim=verified.latent_dim)
    return VariantResult(INT8, version, published, timings, nll, configs)


def source_config(
    repo: Path, version: int | None, data_dir: str | None = None, tfds_dir: str | None = None
) -> tuple[int, RunConfig]:
    """A published float32 version (the latest when None) and the configuration of the run
    it was exported from, read from its manifest, with the data location overridden."""
    from vae_contract.repository import read_manifest, scan_onnx

    try:
        chosen = scan_onnx(repo).choose(version)
        source = read_manifest(chosen, ENCODER).get("source_run")
    except ModelRepositoryError as error:
        raise KerasVaeError(str(error)) from None
    if not isinstance(source, dict) or not isinstance(source.get("config"), dict):
        raise KerasVaeError(
            f"{chosen.folder(ENCODER) / MANIFEST_FILE} records no run configuration to find "
            "its data by; export the run again with --quantize int8"
        )
    config = override_data_location(RunConfig.from_dict(source["config"]), data_dir, tfds_dir)
    return chosen.number, config


def variant_manifest(
    network: str,
    version: int,
    folder: Path,
    source: dict[str, Any],
    export_id: str,
    facts: dict[str, Any],
) -> dict[str, Any]:
    """The keys every ONNX reader checks (vae_contract.repository), for the variant's folder
    (the tensors, latent size and source run are its float32 ``source``'s), and under
    ``variant`` what it was built from, how, and what it was measured to cost and gain."""
    origin = {
        "model_name": network,
        "version": version,
        "export_id": source.get("export_id"),
        "sha256": source["files"][ONNX_FILE]["sha256"],
    }
    return {
        "model_name": model_name(network, INT8),
        "version": version,
        "format": source["format"],
        "export_id": export_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "inputs": source["inputs"],
        "outputs": source["outputs"],
        "latent_dim": source["latent_dim"],
        "files": file_table(folder),
        "source_run": source.get("source_run"),
        "tools": tool_versions(),
        "opset": source.get("opset"),
        "variant": {**facts, "source": origin},
    }
