"""Held-out figures of a trained run: ``python -m keras_vae.evaluate [RUN_DIR]``.

Reports, on the test split binarized once with a fixed seed:
- the test ELBO (nats per image; higher is better) and its two terms;
- the importance-weighted test NLL with K samples (Burda et al.; lower is better),
  the number of active latent units, computed by :mod:`keras_vae.iwae`.
By default the NLL is a quick estimate (K=100 on the first 2,000 test images, about
a fiftieth of the work); ``--full`` runs the headline protocol, K=1000 on all 10,000
images, which takes most of an hour on two cores (README, "Evaluate", has the times).
The expected duration, timed on the decoder, is printed before the NLL starts.
With ``--onnx REPO`` the NLL is computed from the exported ONNX encoder and decoder
instead, with onnxruntime, so what is deployed is what is measured: the newest version
exported from that very run (:func:`version_of_run`), never another run's.
Everything is recorded in the run's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_vae.config import RunConfig
from keras_vae.data import HELD_OUT_SEED
from keras_vae.errors import KerasVaeError, run_cli
from keras_vae.iwae import Decode, Encode, evaluate_likelihood
from keras_vae.quiet import silence_libraries
from keras_vae.runs import MODEL_FILE, resolve_run, update_metrics
from vae_contract import DECODER, ENCODER, Z_LOG_VAR, Z_MEAN, ModelRepositoryError, likelihood

if TYPE_CHECKING:
    from vae_runtime import OnnxModel


def evaluate_elbo(vae, inputs: np.ndarray, batch_size: int = 500) -> dict:
    """Test ELBO, reconstruction and KL, averaged per image; repeatable for given weights."""
    from keras_vae.data import evaluation_dataset

    results = vae.evaluate(evaluation_dataset(inputs, batch_size), verbose=0, return_dict=True)
    return {
        "test_elbo": float(results["elbo"]),
        "test_reconstruction": float(results["reconstruction"]),
        "test_kl": float(results["kl"]),
        "test_images": int(len(inputs)),
        "test_binarization_seed": HELD_OUT_SEED,
    }


def keras_networks(vae) -> tuple[Encode, Decode]:
    """The VAE's encoder and decoder as functions on numpy arrays."""

    def encode(x):
        z_mean, z_log_var = vae.encoder.predict_on_batch(x)
        return np.asarray(z_mean), np.asarray(z_log_var)

    def decode(z):
        return np.asarray(vae.decoder.predict_on_batch(z))

    return encode, decode


def onnx_networks(repo: str | Path, version: int | None = None) -> tuple[Encode, Decode, int]:
    """The exported ONNX graphs as functions on numpy arrays (onnxruntime, no TensorFlow).

    Loaded by the service's own reader (:mod:`vae_runtime`), so what is measured is what
    would be served: the latest complete version by default, each file verified against
    its manifest.
    """
    from vae_runtime import load

    try:
        models = load(repo, version, threads=0)  # 0: onnxruntime's default, every core
    except ModelRepositoryError as error:
        raise KerasVaeError(str(error)) from None
    encode, decode = model_networks(models[ENCODER], models[DECODER])
    return encode, decode, models[ENCODER].version


def model_networks(encoder: OnnxModel, decoder: OnnxModel) -> tuple[Encode, Decode]:
    """Two opened ONNX models as the estimator's functions, read as the service and
    LocalVae read them (the decoder's logits by ``likelihood.decoder_logits``): also how
    export measures a quantized pair against its float32 source."""

    def encode(x):
        outputs = encoder.run(x)
        return outputs[Z_MEAN], outputs[Z_LOG_VAR]

    def decode(z):
        return likelihood.decoder_logits(decoder.run(z))

    return encode, decode


# Where a run's data is: commands may override these (--data-dir, --tfds-dir), and export
# records the configuration as overridden, so they say nothing of which run a model is.
DATA_LOCATION = {("data", "data_dir"), ("data", "tfds_dir")}


def exported_from(source: Any, run_dir: Path, config: RunConfig) -> bool:
    """Whether a manifest's ``source_run`` is this run: its folder's name, and its
    configuration where both record a value (keys added to the configuration since
    the export are no evidence either way), data location aside."""
    if not isinstance(source, dict) or source.get("run") != run_dir.resolve().name:
        return False
    recorded = source.get("config")
    ours = json.loads(json.dumps(config.to_dict()))  # tuples as lists, as recorded
    for section, values in (recorded if isinstance(recorded, dict) else {}).items():
        mine = ours.get(section)
        if not isinstance(values, dict) or not isinstance(mine, dict):
            continue
        for key, value in values.items():
            if (section, key) not in DATA_LOCATION and key in mine and mine[key] != value:
                return False
    return True


def version_of_run(
    repo: str | Path, run_dir: Path, config: RunConfig, version: int | None = None
) -> int:
    """The ONNX version of ``repo`` exported from ``run_dir``: ``version`` if it is one,
    else the newest; or a one-line refusal saying which versions belong to which runs.

    A repository holds the exports of many runs, and its latest version may be another
    run's: measured under this run's name, its figures would describe another model.
    Each manifest records its ``source_run``; only manifests are read here
    (the chosen version's files are verified when it is loaded).
    """
    from vae_contract.repository import read_manifest, scan_onnx

    try:
        found = scan_onnx(repo)
        if version is not None:
            found.choose(version)  # refuses a missing or incomplete version
        sources = {
            number: read_manifest(complete, ENCODER).get("source_run")
            for number, complete in sorted(found.complete.items())
        }
    except ModelRepositoryError as error:
        raise KerasVaeError(str(error)) from None
    ours = [n for n, source in sources.items() if exported_from(source, run_dir, config)]
    if ours and version is None:
        return ours[-1]
    if version in ours:
        return version
    groups: dict[str, list[str]] = {}
    for number, source in sources.items():
        groups.setdefault(_owner(source, run_dir, number in ours), []).append(str(number))
    owners = "; ".join(
        f"{owner}: version{'s' if len(numbers) > 1 else ''} {', '.join(numbers)}"
        for owner, numbers in groups.items()
    )
    if version is not None:
        raise KerasVaeError(
            f"ONNX version {version} in {found.root} was not exported from run {run_dir} "
            f"({owners}); pass a version of this run, or leave --onnx-version out"
        )
    raise KerasVaeError(
        f"no ONNX version in {found.root} was exported from run {run_dir} ({owners}); "
        f'export it first (`make export ARGS="{run_dir}"`)'
    )


def _owner(source: Any, run_dir: Path, ours: bool) -> str:
    """How a refusal names the run a version was exported from."""
    name = source.get("run") if isinstance(source, dict) else None
    if not isinstance(name, str):
        return "an unrecorded run"
    if name == run_dir.resolve().name and not ours:
        return f"another run named {name} (its configuration differs)"
    return f"run {name}"


# The quick default and the headline protocol (Burda et al. use K=5000 on all images).
QUICK_K, QUICK_IMAGES = 100, 2000
FULL_K = likelihood.HEADLINE_K


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_vae.evaluate",
        description="Test ELBO and importance-weighted NLL of a trained run, into metrics.json. "
        f"The default NLL is a quick estimate (K={QUICK_K} on {QUICK_IMAGES:,} test images); "
        f"--full is the headline protocol (K={FULL_K} on all 10,000).",
    )
    parser.add_argument("run_dir", nargs="?", help="run folder (default: the latest under --runs)")
    parser.add_argument(
        "--runs", default="artifacts/runs", help="where run folders are (default: %(default)s)"
    )
    parser.add_argument("--data-dir", help="override the run's data dir (official .gz files)")
    parser.add_argument("--tfds-dir", help="override where TFDS keeps prepared data")
    parser.add_argument(
        "--batch-size", type=int, default=500, help="for the ELBO (default: %(default)s)"
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help=f"the headline protocol: K={FULL_K} on all test images (up to an hour on 2 cores)",
    )
    parser.add_argument(
        "--k",
        type=int,
        help=f"importance samples per image (default {QUICK_K}, {FULL_K} with --full; 0: skip "
        "the NLL)",
    )
    parser.add_argument(
        "--iwae-seed", type=int, default=0, help="seed of the importance samples (default: 0)"
    )
    parser.add_argument(
        "--images",
        type=int,
        help=f"first N test images, 0 = all (default {QUICK_IMAGES}; all with --full or --k 0)",
    )
    parser.add_argument("--onnx", metavar="REPO", help="measure the exported ONNX graphs in REPO")
    parser.add_argument(
        "--onnx-version",
        type=int,
        help="ONNX version, which must be an export of the run (default: its newest export)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's and TFDS's own INFO lines and progress bars",
    )
    return parser


def protocol(args: argparse.Namespace) -> tuple[int, int]:
    """(K, images; 0 = all) from the flags: explicit values win, then ``--full``, then the
    quick default. The ELBO alone (``--k 0``) takes seconds, so it reads every image."""
    k = args.k if args.k is not None else FULL_K if args.full else QUICK_K
    quick_images = 0 if args.full or k == 0 else QUICK_IMAGES
    images = args.images if args.images is not None else quick_images
    if k < 0 or images < 0:
        raise KerasVaeError("--k and --images must be >= 0")
    return k, images


def expected_seconds(decode: Decode, latent_dim: int, k: int, images: int) -> float:
    """How long ``k`` decoder passes for each of ``images`` images should take, timed on
    one call as large as the estimator's (the decoder is nearly all of the cost)."""
    from keras_vae.iwae import MAX_ROWS

    rows = min(MAX_ROWS, k * 50)  # evaluate_likelihood's batches of 50 images
    z = np.zeros((rows, latent_dim), np.float32)
    decode(z)  # the first call of a shape traces (Keras) or allocates (onnxruntime)
    started = time.perf_counter()
    decode(z)
    return (time.perf_counter() - started) * k * images / rows


def announce(k: int, images: int, total: int, seconds: float, run_dir: Path) -> None:
    """Say what is measured, how long it should take and, for a partial one, how to get
    the headline figure, before an NLL that may take most of an hour."""
    scope = "all" if images == total else f"the first {images:,} of"
    print(
        f"IWAE NLL with K={k} on {scope} {total:,} test images: about {_duration(seconds)} "
        "(timed on the decoder)",
        flush=True,
    )
    if (k, images) != (FULL_K, total):
        print(
            f"a quick estimate, recorded apart; the headline protocol (K={FULL_K}, all images) "
            f'is `make evaluate ARGS="{run_dir} --full"`',
            flush=True,
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    silence_libraries(args.verbose)  # before TensorFlow is imported
    k, n_images = protocol(args)
    run_dir, config = resolve_run(args.run_dir, args.runs, args.data_dir, args.tfds_dir)
    # Decided before anything slow, so that a run with no export of its own is refused at once.
    onnx_version = version_of_run(args.onnx, run_dir, config, args.onnx_version) if args.onnx else 0

    from keras_vae.data import held_out_inputs, load_tfds_split

    images, _ = load_tfds_split(config.data, "test")
    total = len(images)
    if n_images:
        images = images[:n_images]
    inputs = held_out_inputs(images, config.data.binarization)
    print(f"run: {run_dir}")
    metrics: dict = {}
    if args.onnx:
        encode, decode, version = onnx_networks(args.onnx, onnx_version)
        metrics["onnx_version"] = version
        prefix = "onnx_"
        print(f"networks: ONNX version {version} from {args.onnx}, exported from this run")
    else:
        from keras_vae.runs import load_vae

        vae = load_vae(run_dir / MODEL_FILE)
        metrics.update(evaluate_elbo(vae, inputs, args.batch_size))
        encode, decode = keras_networks(vae)
        prefix = ""
    if k:
        seconds = expected_seconds(decode, config.model.latent_dim, k, len(inputs))
        announce(k, len(inputs), total, seconds, run_dir)
        likelihood = evaluate_likelihood(inputs, encode, decode, k, seed=args.iwae_seed)
        metrics.update({prefix + key: value for key, value in likelihood.items()})
    # A partial evaluation is kept apart, so it never replaces the full test set's figures.
    update_metrics(run_dir, {f"first_{n_images}_test_images": metrics} if n_images else metrics)
    rows = [
        ("test ELBO", "test_elbo", "nats"),
        ("  reconstruction", "test_reconstruction", "nats"),
        ("  KL", "test_kl", "nats"),
        (f"test NLL (IWAE, K={k})", prefix + "test_nll", "nats"),
        ("  standard error", prefix + "test_nll_stderr", "nats"),
        ("active units", prefix + "active_units", f"of {metrics.get(prefix + 'latent_dim')}"),
        ("test images", prefix + "iwae_images" if args.onnx else "test_images", ""),
    ]
    for label, key, unit in rows:
        if key in metrics:
            value = metrics[key]
            shown = f"{value:>10.2f}" if isinstance(value, float) else f"{value:>10d}"
            print(f"{label:<26}{shown} {unit}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
