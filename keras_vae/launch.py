"""Local multi-worker training: ``python -m keras_vae.launch --workers 2 -- <train flags>``.

Starts N ``keras_vae.train`` processes with ``--strategy multi_worker`` and a
``TF_CONFIG`` each (worker 0 is the chief) on free loopback ports, streams their
output with a ``[worker i]`` prefix, and stops them all, exiting non-zero with
the failing worker named, as soon as one fails. On a real cluster, run the same
training command on every host with that host's ``TF_CONFIG`` (see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

from keras_vae.errors import KerasVaeError, run_cli


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def worker_flags(train_flags: list[str], workers: int) -> list[str]:
    """The training flags every worker gets: multi-worker strategy and one shared run name."""
    flags = list(train_flags)
    if "--resume" in flags:  # the run's saved config already says multi_worker
        return flags
    if "--strategy" not in flags:
        flags += ["--strategy", "multi_worker"]
    if "--run-name" not in flags:
        flags += ["--run-name", f"{datetime.now(UTC):%Y%m%d-%H%M%S}-w{workers}"]
    return flags


def prepare_data(train_flags: list[str]) -> None:
    """Prepare the dataset once, before N workers would race to prepare it together.

    A resume of a run that is still training is refused first, in one line: its chief
    would refuse it anyway (it holds the run folder's lock), but only once N workers
    had started and their output had buried the reason.
    """
    from keras_vae.quiet import silence_libraries
    from keras_vae.train import build_parser

    args = build_parser().parse_args(train_flags)
    silence_libraries(getattr(args, "verbose", False))  # before TensorFlow is imported

    from keras_vae.data import load_tfds_split
    from keras_vae.runs import load_config, refuse_if_training
    from keras_vae.train import config_from_args

    resume = getattr(args, "resume", None)
    if resume:
        refuse_if_training(resume)
    config = load_config(resume) if resume else config_from_args(args)
    load_tfds_split(config.data, "test")


def _stream(index: int, process: subprocess.Popen) -> None:
    for line in process.stdout:
        print(f"[worker {index}] {line}", end="", flush=True)


def launch(workers: int, train_flags: list[str]) -> int:
    ports = free_ports(workers)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    flags = worker_flags(train_flags, workers)
    processes: list[subprocess.Popen] = []
    threads = []
    for index in range(workers):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            [sys.executable, "-m", "keras_vae.train", *flags],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        print(
            f"started worker {index} (pid {process.pid}) on {cluster['worker'][index]}", flush=True
        )
        thread = threading.Thread(target=_stream, args=(index, process), daemon=True)
        thread.start()
        threads.append(thread)
    try:
        while True:
            codes = [p.poll() for p in processes]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                index, code = failed[0]
                reason = f"signal {-code}" if code < 0 else f"exit code {code}"
                raise KerasVaeError(f"worker {index} failed ({reason}); stopped the others")
            if all(c == 0 for c in codes):
                break
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        for thread in threads:
            thread.join(2)
    print(f"all {workers} workers finished", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, train_flags = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    parser = argparse.ArgumentParser(
        prog="python -m keras_vae.launch",
        description="Train with N local workers: python -m keras_vae.launch --workers 2 -- "
        "<keras_vae.train flags>",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="number of worker processes (default: %(default)s)"
    )
    parser.add_argument(
        "--data-dir",
        help="folder with the official .gz files (or one sub-folder per dataset), passed to "
        "every worker as keras_vae.train's --data-dir; default: $KERAS_VAE_DATA_DIR, else "
        "TFDS downloads them",
    )
    args = parser.parse_args(own)
    if args.workers < 1:
        raise KerasVaeError(f"--workers must be >= 1, got {args.workers}")
    if args.data_dir:
        # The launcher is run directly, not through make (which adds DATA_DIR itself).
        if "--resume" in train_flags:
            raise KerasVaeError(
                "--data-dir does not apply to --resume: a resumed run reads its saved config"
            )
        train_flags = [*train_flags, "--data-dir", args.data_dir]
    prepare_data(train_flags)
    return launch(args.workers, train_flags)


if __name__ == "__main__":
    sys.exit(run_cli(main))
