"""MNIST-family data through TensorFlow Datasets, and the tf.data pipelines that feed the VAE.

Images leave this module as float32 ``[B, 28, 28, 1]`` in ``[0, 1]``. The
training stream is binarized afresh every epoch (``dynamic``, the standard for
MNIST likelihoods), thresholded (``static``) or left grey (``none``); held-out
images are binarized once with a fixed seed so evaluation is reproducible.

Offline use: given a folder with the four official ``.gz`` files, TFDS
prepares the dataset from it through its manual-download mechanism. The
folder is checked first, because TFDS silently falls back to a (slow, failing)
download when a file is missing.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_vae.config import DATA_DIR_ENV, DataConfig
from keras_vae.errors import DataError

# The official IDX files: name -> (magic number, number of items).
OFFICIAL_FILES = {
    "train-images-idx3-ubyte.gz": (2051, 60000),
    "train-labels-idx1-ubyte.gz": (2049, 60000),
    "t10k-images-idx3-ubyte.gz": (2051, 10000),
    "t10k-labels-idx1-ubyte.gz": (2049, 10000),
}


@dataclass
class Splits:
    """uint8 images ``[N, 28, 28, 1]`` and int64 labels of each split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def resolve_manual_dir(dataset: str, data_dir: str | Path) -> Path:
    """Find the folder holding ``dataset``'s files: ``data_dir`` itself or ``data_dir/dataset``."""
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data dir {root} does not exist; point --data-dir (or {DATA_DIR_ENV}) at a folder "
            f"with the official {dataset} .gz files, or leave it unset to download them"
        )
    for candidate in (root / dataset, root):
        if all((candidate / name).is_file() for name in OFFICIAL_FILES):
            return candidate
    folder = root / dataset if (root / dataset).is_dir() else root
    missing = next(name for name in OFFICIAL_FILES if not (folder / name).is_file())
    raise DataError(
        f"missing {missing} in {folder}; it needs the four official {dataset} files "
        f"({', '.join(OFFICIAL_FILES)})"
    )


def check_official_files(folder: Path) -> None:
    """Check each IDX file decompresses and has the official header and length."""
    for name, (magic, count) in OFFICIAL_FILES.items():
        path = folder / name
        try:
            with gzip.open(path, "rb") as stream:
                payload = stream.read()
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(
                f"{path} is corrupt ({error}); replace it with the official file"
            ) from None
        item_bytes = 28 * 28 if magic == 2051 else 1
        header_bytes = 16 if magic == 2051 else 8
        if len(payload) < 8 or struct.unpack(">II", payload[:8]) != (magic, count):
            raise DataError(f"{path} has an unexpected header; replace it with the official file")
        if len(payload) != header_bytes + count * item_bytes:
            raise DataError(
                f"{path} has {len(payload)} bytes instead of {header_bytes + count * item_bytes}; "
                "replace it with the official file"
            )


def load_tfds_split(config: DataConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    builder = tfds.builder(config.dataset, data_dir=config.tfds_dir)
    if not builder.is_prepared():
        download_config = None
        if config.data_dir:
            manual_dir = resolve_manual_dir(config.dataset, config.data_dir)
            check_official_files(manual_dir)
            download_config = tfds.download.DownloadConfig(manual_dir=str(manual_dir))
        try:
            builder.download_and_prepare(download_config=download_config)
        except OSError as error:
            raise DataError(
                f"could not download {config.dataset} ({type(error).__name__}); pass --data-dir "
                f"(or set {DATA_DIR_ENV}) to a folder with the official .gz files"
            ) from None
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    return data["image"], data["label"]


def load_splits(config: DataConfig) -> Splits:
    """Load train (minus a held-out validation tail), validation and test splits into memory.

    MNIST fits in 55 MB as uint8, so holding it in memory is the cheapest cache.
    """
    images, labels = load_tfds_split(config, "train")
    if config.validation_size >= len(images):
        raise DataError(
            f"validation_size {config.validation_size} leaves no training images out of "
            f"{len(images)}; use a smaller value"
        )
    cut = len(images) - config.validation_size
    train_images, train_labels = images[:cut], labels[:cut]
    if config.train_size:
        train_images, train_labels = (
            train_images[: config.train_size],
            train_labels[: config.train_size],
        )
    test_images, test_labels = load_tfds_split(config, "test")
    return Splits(train_images, train_labels, images[cut:], labels[cut:], test_images, test_labels)


# Held-out images are binarized once with this seed, whatever the training seed,
# so that figures from different runs are computed on the very same inputs.
HELD_OUT_SEED = 1


def held_out_inputs(images: np.ndarray, mode: str) -> np.ndarray:
    """Validation/test inputs: binarized like the training data, but always the same way."""
    return binarize_fixed(images, mode, HELD_OUT_SEED)


def binarize_fixed(images: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """Turn uint8 images into float32 inputs once, reproducibly."""
    grey = images.astype(np.float32) / 255.0
    if mode == "none":
        return grey
    if mode == "static":
        return (grey > 0.5).astype(np.float32)
    noise = np.random.default_rng(seed).random(grey.shape, dtype=np.float32)
    return (noise < grey).astype(np.float32)


def training_dataset(images: np.ndarray, batch_size: int, mode: str, seed: int):
    """An endless, shuffled, batched stream for ``fit(steps_per_epoch=...)``.

    Dynamic binarization draws stateless noise keyed on (seed, global batch
    index), so every epoch sees a fresh sample and a rerun sees the same ones.
    (A seeded stateful op inside ``map`` would repeat its noise every epoch.)
    """
    import tensorflow as tf

    if len(images) < batch_size:
        raise DataError(
            f"batch_size {batch_size} is larger than the {len(images)} training images; "
            "use a smaller batch size"
        )

    def to_inputs(index, batch):
        grey = tf.cast(batch, tf.float32) / 255.0
        if mode == "none":
            return grey
        if mode == "static":
            return tf.cast(grey > 0.5, tf.float32)
        noise = tf.random.stateless_uniform(tf.shape(grey), seed=tf.stack([seed, index]))
        return tf.cast(noise < grey, tf.float32)

    dataset = (
        tf.data.Dataset.from_tensor_slices(images)
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size, drop_remainder=True)
        .enumerate()
        .map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return dataset


def evaluation_dataset(inputs: np.ndarray, batch_size: int):
    """Batches of already-binarized float32 inputs, in order."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size).prefetch(tf.data.AUTOTUNE)
