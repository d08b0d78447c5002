"""``python -m export [RUN_DIR]``: publish a trained run as a new model-repository version.

``python -m export config --repo DIR [--base PATH]``: write the servers' configuration
files of a repository again, for where it is now or where a server will see it.

``python -m export [RUN_DIR] --quantize int8``, or ``python -m export quantize --repo DIR
[--version N]`` for a version already published: its int8 variant (export/quantize.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from export.parity import ATOL, RTOL
from export.quantize import CALIBRATION_IMAGES, MAX_NLL_INCREASE, NLL_IMAGES, NLL_K
from keras_vae.errors import run_cli
from vae_contract import DECODER, ENCODER, INT8, ONNX_DIR, model_name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a trained run's encoder and decoder as TF Serving SavedModels "
        "and ONNX graphs, parity-checked, as a new integer version, then write the TF "
        "Serving and Triton configuration files.",
        epilog="`python -m export config --help`: write those files again, for a repository "
        "that moved or for the path a server sees it at. `python -m export quantize --help`: "
        "the int8 variant of a version already published.",
    )
    parser.add_argument("run_dir", nargs="?", help="run folder (default: the latest under --runs)")
    parser.add_argument(
        "--runs", default="artifacts/runs", help="where run folders are (default: %(default)s)"
    )
    parser.add_argument(
        "--repo", default="artifacts/models", help="model repository folder (default: %(default)s)"
    )
    parser.add_argument("--version", type=int, help="version number (default: highest + 1)")
    parser.add_argument(
        "--atol", type=float, default=ATOL, help=f"absolute difference allowed ({ATOL:g})"
    )
    parser.add_argument(
        "--rtol",
        type=float,
        default=RTOL,
        help=f"plus this much of the Keras value's magnitude ({RTOL:g}), as numpy.allclose",
    )
    parser.add_argument(
        "--parity-examples",
        type=int,
        default=1000,
        help="test images / latent vectors compared (default: %(default)s)",
    )
    parser.add_argument("--data-dir", help="override the run's data dir (official .gz files)")
    parser.add_argument("--tfds-dir", help="override where TFDS keeps prepared data")
    parser.add_argument(
        "--quantize",
        choices=[INT8],
        help=f"also publish an int8 variant of the version ({ONNX_DIR}/"
        f"{model_name(ENCODER, INT8)}/N, {ONNX_DIR}/{model_name(DECODER, INT8)}/N), measured "
        "against float32 first",
    )
    add_quantize_flags(parser)
    return parser


def add_quantize_flags(parser: argparse.ArgumentParser) -> None:
    """The int8 variant's checks, shared by ``--quantize int8`` and ``export quantize``."""
    group = parser.add_argument_group("int8 variant")
    group.add_argument(
        "--max-nll-increase",
        type=float,
        default=MAX_NLL_INCREASE,
        help="refuse to publish the variant if its test NLL exceeds float32's by more than "
        "this many nats (default: %(default)s)",
    )
    group.add_argument(
        "--calibration-images",
        type=int,
        default=CALIBRATION_IMAGES,
        help="training images the activation ranges are calibrated on (default: %(default)s)",
    )
    group.add_argument(
        "--nll-images",
        type=int,
        default=NLL_IMAGES,
        help="test images the NLL cost is measured on (default: %(default)s)",
    )
    group.add_argument(
        "--nll-k",
        type=int,
        default=NLL_K,
        help="importance samples per image of that measurement (default: %(default)s)",
    )


def build_quantize_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export quantize",
        description="Publish the int8 variant of a float32 version already in the repository "
        "(onnxruntime static quantization, QDQ, calibrated on training images), after "
        "measuring its speed-ups and its test NLL cost against float32.",
    )
    parser.add_argument(
        "--repo", default="artifacts/models", help="model repository folder (default: %(default)s)"
    )
    parser.add_argument("--version", type=int, help="float32 version (default: the latest)")
    parser.add_argument("--data-dir", help="override the run's data dir (official .gz files)")
    parser.add_argument("--tfds-dir", help="override where TFDS keeps prepared data")
    add_quantize_flags(parser)
    return parser


def check_quantize_flags(args: argparse.Namespace) -> None:
    from keras_vae.errors import KerasVaeError

    for flag, value in (
        ("--calibration-images", args.calibration_images),
        ("--nll-images", args.nll_images),
        ("--nll-k", args.nll_k),
    ):
        if value < 1:
            raise KerasVaeError(f"{flag} must be >= 1, got {value}")
    if args.max_nll_increase != args.max_nll_increase:  # NaN would refuse every variant
        raise KerasVaeError("--max-nll-increase must be a number, got nan")


def publish_variant(repo, version: int, config, args: argparse.Namespace) -> None:
    """Build, measure and publish the int8 variant, then print what was measured."""
    from export.quantize import quantize_version

    print(f"int8 variant of version {version} -> {repo}", flush=True)
    result = quantize_version(
        repo,
        version,
        config,
        args.max_nll_increase,
        args.calibration_images,
        args.nll_images,
        args.nll_k,
    )
    print(f"int8 variant of version {result.version} published:")
    for folder in result.folders:
        print(f"  {folder}")
    print("speed-up against float32 (one thread, median of interleaved rounds):")
    for network, timings in result.timings.items():
        for t in timings:
            print(
                f"  {network:<12} batch {t.batch:>3}  float32 {t.float32_ms:8.3f} ms  "
                f"int8 {t.int8_ms:8.3f} ms  {t.speedup:.2f}x"
            )
    nll = result.nll
    print(
        f"test NLL (IWAE K={nll['k']}, {nll['images']} test images, same noise): float32 "
        f"{nll['float32_test_nll']:.2f}, int8 {nll['int8_test_nll']:.2f}, cost "
        f"{nll['nll_cost']:+.3f} nats (allowed {nll['max_nll_increase']:g})"
    )
    print("serve it: python -m serving --variant int8")


def quantize_main(argv: list[str]) -> int:
    """``python -m export quantize``: the variant of a version already published."""
    from pathlib import Path

    from export.quantize import source_config

    args = build_quantize_parser().parse_args(argv)
    check_quantize_flags(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    version, config = source_config(Path(args.repo), args.version, args.data_dir, args.tfds_dir)
    publish_variant(Path(args.repo), version, config, args)
    return 0


def build_config_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export config",
        description="Write the TF Serving files of <repo>/tf (models.config, "
        "models.docker.config, batching.config) and Triton's config.pbtxt of each "
        "<repo>/onnx model again. TF Serving needs absolute base paths (it refuses relative "
        "ones), so models.config names the tf/ folder as it is when written: run this after "
        "moving the repository, or with --base for the path a server sees it at.",
    )
    parser.add_argument(
        "--repo", default="artifacts/models", help="model repository folder (default: %(default)s)"
    )
    parser.add_argument(
        "--base",
        help="where the TF Serving server finds <repo>/tf: an absolute path or a URI such as "
        "gs://bucket/models (default: the absolute path of <repo>/tf on this machine)",
    )
    parser.add_argument(
        "--print",
        action="store_true",
        help="print models.config for --base instead of writing any file",
    )
    return parser


def config_main(argv: list[str]) -> int:
    """``python -m export config``: needs no TensorFlow, so it runs in a second."""
    from pathlib import Path

    from export.deploy_configs import write_deploy_configs
    from export.tf_serving_config import MODELS_CONFIG, models_config
    from keras_vae.errors import KerasVaeError
    from vae_contract import TF_DIR, ModelRepositoryError

    args = build_config_parser().parse_args(argv)
    repo = Path(args.repo)
    tf_root = repo / TF_DIR
    if not tf_root.is_dir():
        raise KerasVaeError(f"{tf_root} does not exist; pass the --repo that `make export` wrote")
    base = args.base
    if base is not None and not (base.startswith("/") or "://" in base):
        raise KerasVaeError(
            f"--base must be an absolute path or a URI (TF Serving refuses relative base "
            f"paths), got {base!r}"
        )
    if args.print:
        print(models_config(base or str(tf_root.resolve())), end="")
        return 0
    try:
        written = write_deploy_configs(repo, base)
    except ModelRepositoryError as error:
        raise KerasVaeError(str(error)) from None
    print("written:")
    for path in written:
        print(f"  {path}")
    shown = base or tf_root.resolve()
    print(f"{tf_root / MODELS_CONFIG} serves {shown}/<model>/<highest version>")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["config"]:
        return config_main(argv[1:])
    if argv[:1] == ["quantize"]:
        return quantize_main(argv[1:])
    args = build_parser().parse_args(argv)
    from keras_vae.errors import KerasVaeError

    if args.parity_examples < 1:
        raise KerasVaeError(f"--parity-examples must be >= 1, got {args.parity_examples}")
    if not args.atol > 0:
        raise KerasVaeError(f"--atol must be > 0, got {args.atol}")
    if not args.rtol >= 0:
        raise KerasVaeError(f"--rtol must be >= 0, got {args.rtol}")
    check_quantize_flags(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from export.build import export_run
    from keras_vae.runs import resolve_run

    run_dir, config = resolve_run(args.run_dir, args.runs, args.data_dir, args.tfds_dir)
    print(f"exporting {run_dir} -> {args.repo}", flush=True)
    result = export_run(
        run_dir,
        args.repo,
        args.version,
        args.atol,
        args.parity_examples,
        config=config,
        rtol=args.rtol,
    )
    print(f"version {result.version} published:")
    for folder in result.folders:
        print(f"  {folder}")
    print("server configuration (python -m export config to write it for another place):")
    for path in result.configs:
        print(f"  {path}")
    print(f"parity vs the Keras model ({result.parity[0].examples} examples, max |diff|):")
    for report in result.parity:
        figures = ", ".join(f"{k} {v:.2e}" for k, v in report.max_abs_diff.items())
        print(f"  {report.network:<12} {report.fmt:<15} {figures}")
    if args.quantize:
        publish_variant(result.repo, result.version, config, args)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
