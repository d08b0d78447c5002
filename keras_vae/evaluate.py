"""Held-out figures of a trained run: ``python -m keras_vae.evaluate [RUN_DIR]``.

Reports, on the test split binarized once with a fixed seed:
- the test ELBO (nats per image; higher is better) and its two terms;
- the importance-weighted test NLL with K samples (Burda et al.; lower is better),
  the number of active latent units, computed by :mod:`keras_vae.iwae`.
With ``--onnx REPO`` the NLL is computed from the exported ONNX encoder and decoder
instead, with onnxruntime, so what is deployed is what is measured: the newest version
exported from that very run (:func:`version_of_run`), never another run's.
Everything is recorded in the run's ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from keras_vae.config import RunConfig
from keras_vae.data import HELD_OUT_SEED
from keras_vae.errors import KerasVaeError, run_cli
from keras_vae.iwae import Decode, Encode, evaluate_likelihood
from keras_vae.runs import MODEL_FILE, resolve_run, update_metrics
from vae_contract import DECODER, ENCODER, INPUTS, LOGITS, OUTPUTS


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

    Loaded by the service's own loader, so what is measured is what would be served: the
    latest complete version by default, each file verified against its manifest.
    """
    from serving.errors import RepositoryError
    from serving.repository import load

    try:
        models = load(repo, version, threads=0)  # 0: onnxruntime's default, every core
    except RepositoryError as error:
        raise KerasVaeError(str(error)) from None
    encoder, decoder = models[ENCODER], models[DECODER]

    def encode(x):
        z_mean, z_log_var = encoder.session.run(list(OUTPUTS[ENCODER]), {INPUTS[ENCODER]: x})
        return z_mean, z_log_var

    def decode(z):
        return decoder.session.run([LOGITS], {INPUTS[DECODER]: z})[0]

    return encode, decode, encoder.version


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
    run's: measured under this run's name, its figures would describe another model
    (issue 14). Each manifest records its ``source_run``; only manifests are read here
    (the chosen version's files are verified when it is loaded).
    """
    from vae_contract.repository import ModelRepositoryError, read_manifest, scan_onnx

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keras_vae.evaluate",
        description="Test ELBO and importance-weighted NLL of a trained run, into metrics.json.",
    )
    parser.add_argument("run_dir", nargs="?", help="run folder (default: the latest under --runs)")
    parser.add_argument("--runs", default="artifacts/runs", help="where run folders are")
    parser.add_argument("--data-dir", help="override the run's data dir (official .gz files)")
    parser.add_argument("--tfds-dir", help="override where TFDS keeps prepared data")
    parser.add_argument("--batch-size", type=int, default=500, help="for the ELBO")
    parser.add_argument(
        "--k", type=int, default=1000, help="importance samples per image (default 1000; 0 = skip)"
    )
    parser.add_argument("--iwae-seed", type=int, default=0, help="seed of the importance samples")
    parser.add_argument("--images", type=int, default=0, help="first N test images (0 = all)")
    parser.add_argument("--onnx", metavar="REPO", help="measure the exported ONNX graphs in REPO")
    parser.add_argument(
        "--onnx-version",
        type=int,
        help="ONNX version, which must be an export of the run (default: its newest export)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.k < 0 or args.images < 0:
        raise KerasVaeError("--k and --images must be >= 0")
    run_dir, config = resolve_run(args.run_dir, args.runs, args.data_dir, args.tfds_dir)
    # Decided before anything slow, so that a run with no export of its own is refused at once.
    onnx_version = version_of_run(args.onnx, run_dir, config, args.onnx_version) if args.onnx else 0

    from keras_vae.data import held_out_inputs, load_tfds_split

    images, _ = load_tfds_split(config.data, "test")
    if args.images:
        images = images[: args.images]
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
    if args.k:
        likelihood = evaluate_likelihood(inputs, encode, decode, args.k, seed=args.iwae_seed)
        metrics.update({prefix + key: value for key, value in likelihood.items()})
    # A partial evaluation is kept apart, so it never replaces the full test set's figures.
    update_metrics(
        run_dir, {f"first_{args.images}_test_images": metrics} if args.images else metrics
    )
    rows = [
        ("test ELBO", "test_elbo", "nats"),
        ("  reconstruction", "test_reconstruction", "nats"),
        ("  KL", "test_kl", "nats"),
        (f"test NLL (IWAE, K={args.k})", prefix + "test_nll", "nats"),
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
