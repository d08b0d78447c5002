"""Train a VAE and write a complete run folder: ``python -m keras_vae.train --help``.

A run folder under ``artifacts/runs/`` holds the model (``model.keras``), the
effective ``config.json``, ``history.csv``, TensorBoard logs, the best
checkpoint, ``metrics.json`` with the test-set ELBO, and PNG pictures. An
interrupted run continues from its last finished epoch with ``--resume``; one
training at a time writes a run folder (``train.lock``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from keras_vae.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    load_preset,
    preset_names,
)
from keras_vae.distribute import Role, cluster_role
from keras_vae.errors import ConfigError, run_cli
from keras_vae.quiet import silence_libraries
from keras_vae.runs import (
    BACKUP_DIR,
    CONFIG_FILE,
    HISTORY_FILE,
    MODEL_FILE,
    check_run_dir,
    hold_folder,
    load_config,
    new_run_dir,
    update_metrics,
)
from vae_contract.atomic import replacing
from vae_contract.settings import add_flags

# Seconds between two progress lines of an epoch (keras_vae.progress).
DEFAULT_PROGRESS_SECONDS = 10.0


# The sections of a run's configuration: (RunConfig field, --help group, dataclass).
SECTIONS = (
    ("data", "data", DataConfig),
    ("model", "model", ModelConfig),
    ("train", "training", TrainConfig),
)


def build_parser() -> argparse.ArgumentParser:
    """A flag per field of the configuration's dataclasses, grouped by section, then the rest.

    The configuration flags, their types, choices, defaults and help come from the
    dataclasses (:func:`vae_contract.settings.add_flags`); only the flags that are not part
    of a run's configuration are written here. A flag not given is absent from the parsed
    namespace, so that :func:`config_from_args` layers the given ones over a preset.
    """
    parser = argparse.ArgumentParser(
        prog="python -m keras_vae.train",
        description="Train a convolutional VAE on MNIST or Fashion-MNIST (defaults work).",
        argument_default=argparse.SUPPRESS,  # unset flags keep the dataclass defaults
    )
    for _, title, cls in SECTIONS:
        add_flags(parser.add_argument_group(title), cls)
    parser.add_argument(
        "--preset",
        choices=preset_names(),
        help="start from a named configuration (keras_vae/presets/); flags override it",
    )
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run with its own config"
    )
    output = parser.add_argument_group("output (not part of the run's configuration)")
    output.add_argument(
        "--progress-seconds",
        type=float,
        help=f"a progress line every N seconds of an epoch (default {DEFAULT_PROGRESS_SECONDS:g}; "
        "0: off)",
    )
    output.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's and TFDS's own INFO lines and progress bars",
    )
    return parser


# Flags about what is printed: a --resume may change them, and no run records them.
OUTPUT_FLAGS = {"progress_seconds", "verbose"}


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Dataclass defaults, overridden by the preset if one is named, then by the flags given."""
    given = dict(vars(args))
    preset = load_preset(given.pop("preset")) if "preset" in given else {}
    sections = {}
    for section, _, cls in SECTIONS:
        names = set(cls.__dataclass_fields__)
        sections[section] = {
            **preset.get(section, {}),
            **{k: v for k, v in given.items() if k in names},
        }
    return RunConfig.from_dict(sections)


def worker_scratch(run_dir: Path, index: int) -> Path:
    """Where a non-chief worker writes: beside the run folder, never inside it."""
    folder = run_dir.parent / ".workers" / run_dir.name / f"worker-{index}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def hold_work_dir(held: contextlib.ExitStack, run_dir: Path, role: Role) -> Path:
    """Lock the folder this process writes, for as long as ``held`` lasts, and return it.

    The chief writes (and so locks) the run folder; another worker of a multi-worker run
    writes, and locks, a scratch folder of its own, so that the workers of a second launch
    on a live run are refused too, before they could overwrite the first one's backups.
    """
    if role.is_chief:
        held.enter_context(hold_folder(run_dir))
        return run_dir
    work_dir = worker_scratch(run_dir, role.index)
    held.enter_context(hold_folder(work_dir, f"worker {role.index}'s folder"))
    return work_dir


def total_epoch_seconds(history_csv: Path) -> float:
    """Sum of the ``epoch_seconds`` column: the run's training time across resumes."""
    with open(history_csv, newline="") as handle:
        return sum(float(row["epoch_seconds"] or 0) for row in csv.DictReader(handle))


def trim_history(history_csv: Path, epochs: int) -> None:
    """Keep the rows of the first ``epochs`` epochs: the ones the resumed backup holds.

    An epoch recorded but not backed up (a kill between the two) is trained again on
    resume; without this its row, and its time, would count twice.
    """
    if not history_csv.is_file():
        return
    with open(history_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames, list(reader)
    kept = [row for row in rows if int(row["epoch"]) < epochs]
    if len(kept) == len(rows):
        return
    if not kept:
        history_csv.unlink()
        return
    with replacing(history_csv) as partial, open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(kept)


def train(
    config: RunConfig,
    run_dir: Path | None = None,
    extra_callbacks: Sequence = (),
    progress_seconds: float = DEFAULT_PROGRESS_SECONDS,
) -> Path:
    """Train (or, given an existing ``run_dir``, resume) a run; return its folder.

    The folder it writes stays locked until it returns or its process dies, and a
    second training on it is refused (:func:`keras_vae.runs.hold_folder`). The chief
    prints a progress line every ``progress_seconds`` of an epoch (0: none).
    """
    with contextlib.ExitStack() as held:
        return _train(config, run_dir, extra_callbacks, held, progress_seconds)


def _train(
    config: RunConfig,
    run_dir: Path | None,
    extra_callbacks: Sequence,
    held: contextlib.ExitStack,
    progress_seconds: float,
) -> Path:
    role = cluster_role(config.train.strategy)
    if role.workers > 1 and run_dir is None and not config.train.run_name:
        raise ConfigError("a multi-worker run needs --run-name, so every worker names it alike")
    # One training per folder: a resume is refused at once, before TensorFlow starts, if
    # its run is still training; a new run is locked as soon as its folder exists.
    work_dir = None if run_dir is None else hold_work_dir(held, run_dir, role)

    import keras

    from keras_vae import backup
    from keras_vae import data as vae_data
    from keras_vae.distribute import make_strategy, with_shard_policy
    from keras_vae.evaluate import evaluate_elbo
    from keras_vae.model import VAE
    from keras_vae.pictures import write_pictures
    from keras_vae.progress import EpochTimer, ProgressLine

    # The strategy first: a multi-worker one must exist before TensorFlow runs anything.
    strategy = make_strategy(config.train.strategy)
    keras.utils.set_random_seed(config.train.seed)
    # Data first: a missing dataset must not leave an empty run folder behind.
    splits = vae_data.load_splits(config.data)
    batch_size = config.train.batch_size  # the global batch, split across replicas
    train_stream = with_shard_policy(
        vae_data.training_dataset(
            splits.train_images, batch_size, config.data.binarization, config.train.seed
        ),
        config.train.shard_policy,
    )
    steps_per_epoch = len(splits.train_images) // batch_size
    validation = None
    if len(splits.val_images):
        val_inputs = vae_data.held_out_inputs(splits.val_images, config.data.binarization)
        validation = with_shard_policy(
            vae_data.evaluation_dataset(val_inputs, batch_size), config.train.shard_policy
        )

    # Every worker runs the same steps, saves included (they read replicated values
    # collectively), but only the chief writes into the run folder; the others write
    # to a scratch folder of their own, kept until the end so that a restarted worker
    # finds its backup, then removed.
    if run_dir is None:
        if role.is_chief:
            run_dir = new_run_dir(config)
        else:
            run_dir = Path(config.train.output_dir) / config.train.run_name
        work_dir = hold_work_dir(held, run_dir, role)
        if role.is_chief:
            config.save(run_dir / CONFIG_FILE)
    if not role.is_chief and (run_dir / BACKUP_DIR).is_dir():
        # Restarted: start from the chief's backup, so that every worker resumes at
        # the same epoch even if this one died before writing its own.
        shutil.rmtree(work_dir / BACKUP_DIR, ignore_errors=True)
        shutil.copytree(run_dir / BACKUP_DIR, work_dir / BACKUP_DIR)
    suffix = "" if role.is_chief else f" (worker {role.index} writes to {work_dir})"
    print(f"run folder: {run_dir}{suffix}", flush=True)

    with strategy.scope():
        vae = VAE.from_model_config(
            config.model,
            beta=config.train.beta,
            kl_warmup_steps=config.train.kl_warmup_epochs * steps_per_epoch,
            seed=config.train.seed,
            iw_samples=config.train.iw_samples,
            iw_start_step=config.train.iw_start_epoch * steps_per_epoch,
        )
        learning_rate = config.train.learning_rate
        if config.train.lr_schedule == "cosine":
            learning_rate = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=config.train.epochs * steps_per_epoch, alpha=0.05
            )
        vae.compile(optimizer=keras.optimizers.Adam(learning_rate))
        epochs_done = backup.restore(vae, work_dir / BACKUP_DIR)
    trim_history(work_dir / HISTORY_FILE, epochs_done)
    monitor = "val_loss" if validation is not None else "loss"
    (work_dir / "checkpoints").mkdir(exist_ok=True)
    callbacks = [
        EpochTimer(),
        keras.callbacks.CSVLogger(str(work_dir / HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(str(work_dir / "tensorboard"), write_graph=False),
        keras.callbacks.ModelCheckpoint(
            str(work_dir / "checkpoints" / "best.keras"), monitor=monitor, save_best_only=True
        ),
        backup.EpochBackup(work_dir / BACKUP_DIR),  # last: it commits the epoch
        *extra_callbacks,
    ]
    if progress_seconds > 0 and role.is_chief:  # one worker's lines say it for all
        callbacks.append(
            ProgressLine(progress_seconds, batch_size, steps_per_epoch, config.train.epochs)
        )
    print(
        f"training {config.data.dataset}: {len(splits.train_images)} images, "
        f"{steps_per_epoch} steps/epoch, {vae.count_params():,} parameters, "
        f"latent {config.model.latent_dim}, binarization {config.data.binarization}",
        flush=True,
    )
    started = time.perf_counter()
    history = vae.fit(
        train_stream,
        epochs=config.train.epochs,
        initial_epoch=epochs_done,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation,
        shuffle=False,  # the stream shuffles itself, reproducibly
        callbacks=callbacks,
        verbose=2,  # a line per epoch; ProgressLine speaks during one
    )
    train_seconds = time.perf_counter() - started
    with replacing(work_dir / MODEL_FILE) as partial:  # a reader never sees half a model
        vae.save(partial)

    epoch_seconds = history.history.get("epoch_seconds", [])
    steady = epoch_seconds[1:] or epoch_seconds  # the first epoch includes tracing
    seconds_per_epoch = sum(steady) / len(steady) if steady else None
    test_inputs = vae_data.held_out_inputs(splits.test_images, config.data.binarization)
    metrics = evaluate_elbo(vae, test_inputs, batch_size=500)
    metrics.update(
        {
            "dataset": config.data.dataset,
            "epochs": config.train.epochs,
            "train_images": len(splits.train_images),
            "train_seconds_this_session": round(train_seconds, 1),
            # Over every epoch of the run, the sessions before a --resume included.
            "epoch_seconds_total": round(total_epoch_seconds(work_dir / HISTORY_FILE), 1),
            "seconds_per_epoch": round(seconds_per_epoch, 2) if seconds_per_epoch else None,
            "train_images_per_second": (
                round(steps_per_epoch * batch_size / seconds_per_epoch, 1)
                if seconds_per_epoch
                else None
            ),
            "parameters": {
                "encoder": vae.encoder.count_params(),
                "decoder": vae.decoder.count_params(),
            },
        }
    )
    update_metrics(work_dir, metrics)
    write_pictures(vae, work_dir, test_inputs, splits.test_labels, seed=config.train.seed)
    print(
        f"test ELBO {metrics['test_elbo']:.2f} nats (reconstruction "
        f"{metrics['test_reconstruction']:.2f}, KL {metrics['test_kl']:.2f}); "
        f"{seconds_per_epoch or 0:.1f} s/epoch; wrote {work_dir}",
        flush=True,
    )
    # The backup goes last: a run killed while it is evaluated or drawn resumes with no
    # epoch left to train and finishes these steps.
    shutil.rmtree(work_dir / BACKUP_DIR, ignore_errors=True)
    if not role.is_chief:
        shutil.rmtree(work_dir, ignore_errors=True)
        for parent in (work_dir.parent, work_dir.parent.parent):  # .workers/<run>, .workers
            with contextlib.suppress(OSError):
                parent.rmdir()  # only once empty: other workers may still be writing
    return run_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    silence_libraries(getattr(args, "verbose", False))  # before TensorFlow is imported
    progress_seconds = getattr(args, "progress_seconds", DEFAULT_PROGRESS_SECONDS)
    if progress_seconds < 0:
        build_parser().error(f"--progress-seconds must be >= 0, got {progress_seconds:g}")
    if getattr(args, "resume", None):
        others = set(vars(args)) - {"resume"} - OUTPUT_FLAGS
        if others:
            build_parser().error(
                f"--resume continues a run with its saved config; drop {', '.join(sorted(others))}"
            )
        run_dir = Path(args.resume)
        if not (run_dir / CONFIG_FILE).is_file():
            check_run_dir(run_dir)  # explains what is missing
        if (run_dir / MODEL_FILE).is_file() and not (run_dir / BACKUP_DIR).exists():
            print(f"{run_dir} already finished training; nothing to resume", file=sys.stderr)
            return 0
        train(load_config(run_dir), run_dir=run_dir, progress_seconds=progress_seconds)
        return 0
    train(config_from_args(args), progress_seconds=progress_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
