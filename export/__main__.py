"""``python -m export [RUN_DIR]``: publish a trained run as a new model-repository version."""

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
        "and ONNX graphs, parity-checked, as a new integer version.",
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


def main(argv: list[str] | None = None) -> int:
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
    print(f"parity vs the Keras model ({result.parity[0].examples} examples, max |diff|):")
    for report in result.parity:
        figures = ", ".join(f"{k} {v:.2e}" for k, v in report.max_abs_diff.items())
        print(f"  {report.network:<12} {report.fmt:<15} {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
