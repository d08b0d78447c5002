"""``python -m export [RUN_DIR]``: publish a trained run as a new model-repository version.

``python -m export config --repo DIR [--base PATH]``: write the servers' configuration
files of a repository again, for where it is now or where a server will see it.
"""

from __future__ import annotations

import argparse
import os
import sys

from export.parity import ATOL, RTOL
from keras_vae.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a trained run's encoder and decoder as TF Serving SavedModels "
        "and ONNX graphs, parity-checked, as a new integer version, then write the TF "
        "Serving and Triton configuration files.",
        epilog="`python -m export config --help`: write those files again, for a repository "
        "that moved or for the path a server sees it at.",
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
    return parser


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
    args = build_parser().parse_args(argv)
    from keras_vae.errors import KerasVaeError

    if args.parity_examples < 1:
        raise KerasVaeError(f"--parity-examples must be >= 1, got {args.parity_examples}")
    if not args.atol > 0:
        raise KerasVaeError(f"--atol must be > 0, got {args.atol}")
    if not args.rtol >= 0:
        raise KerasVaeError(f"--rtol must be >= 0, got {args.rtol}")
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
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
