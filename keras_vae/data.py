"""MNIST-family data through TensorFlow Datasets, and the tf.data pipelines that feed the VAE.

Images leave this module as float32 ``[B, 28, 28, 1]`` in ``[0, 1]``. The
training stream is binarized afresh every epoch (``dynamic``, the standard for
MNIST likelihoods), thresholded (``static``) or left grey (``none``); held-out
images are binarized once with a fixed seed so evaluation is reproducible.

Offline use: given a folder with the four official ``.gz`` files, TFDS
prepares the dataset from it through its manual-download mechanism. The
folder is checked first, because TFDS silently falls back to a (slow, failing)
download when a file is missing, and each file's SHA-256 is checked because
MNIST and Fashion-MNIST use the same four file names.

Each dataset is extracted into a folder of its own, and every split read back is
checked against the official data's pixel sum and label counts: TFDS names an
extraction after the archive's file name alone, so in its shared
``downloads/extracted`` folder the second of the two datasets prepared would reuse the
first one's images, and the cache would then serve them forever.

Without a data folder, the download hosts are probed first, so that an offline machine
is told so in one line: TFDS itself retries each file with back-off for minutes before
failing (README, "Quick start").
"""

from __future__ import annotations

import gzip
import hashlib
import math
import socket
import struct
import threading
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keras_vae.config import DATA_DIR_ENV, DataConfig
from keras_vae.errors import DataError
from keras_vae.quiet import silence_tfds_progress
from vae_contract import IMAGE_SHAPE

if TYPE_CHECKING:
    import tensorflow_datasets as tfds

# The official IDX files: name -> (magic number, number of items).
OFFICIAL_FILES = {
    "train-images-idx3-ubyte.gz": (2051, 60000),
    "train-labels-idx1-ubyte.gz": (2049, 60000),
    "t10k-images-idx3-ubyte.gz": (2051, 10000),
    "t10k-labels-idx1-ubyte.gz": (2049, 10000),
}

DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}

# SHA-256 of the official files, as TFDS registers them for its own downloads
# (tensorflow_datasets/url_checksums/mnist.txt and fashion_mnist.txt; tests/test_data.py
# checks that these agree). Both datasets use the same four file names, so only the
# content tells one dataset's files from the other's.
OFFICIAL_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
    },
}


@dataclass(frozen=True)
class SplitFingerprint:
    """What every correct preparation of a split holds, in whatever order TFDS stored it.

    TFDS shuffles examples when it prepares a dataset and encodes images as PNG
    (lossless), so a hash of the arrays would depend on TFDS's version while the sum of
    all pixels and the number of images of each label do not. They tell MNIST from
    Fashion-MNIST by far (Fashion-MNIST has more than twice the ink) and cost a sum.
    """

    pixel_sum: int
    label_counts: tuple[int, ...]

    @classmethod
    def of(cls, images: np.ndarray, labels: np.ndarray) -> SplitFingerprint:
        counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=10)
        return cls(int(images.sum(dtype=np.int64)), tuple(int(c) for c in counts))


# Computed with numpy from the official files above (sum of the uint8 pixels of every
# image; images per label 0..9).
PREPARED_FINGERPRINTS = {
    "mnist": {
        "train": SplitFingerprint(
            1567298545, (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
        ),
        "test": SplitFingerprint(
            264923200, (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)
        ),
    },
    "fashion_mnist": {
        "train": SplitFingerprint(3431114169, (6000,) * 10),
        "test": SplitFingerprint(573469082, (1000,) * 10),
    },
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


def check_official_files(folder: Path, dataset: str) -> None:
    """Check each file is ``dataset``'s official one, byte for byte, or say what it is.

    The SHA-256 decides (cheap enough for every run: README, "Quick start"). A file that
    differs is examined to name the problem: damaged (not gzip, cut short, another
    header or length), or the other dataset's file under the same name.
    """
    expected = OFFICIAL_SHA256[dataset]
    for name in OFFICIAL_FILES:
        path = folder / name
        with path.open("rb") as stream:
            digest = hashlib.file_digest(stream, "sha256").hexdigest()
        if digest == expected[name]:
            continue
        check_idx_file(path, name)
        owner = next((d for d, sums in OFFICIAL_SHA256.items() if sums[name] == digest), None)
        if owner:
            raise DataError(
                f"{path} is {DATASET_NAMES[owner]}'s {name}, not {DATASET_NAMES[dataset]}'s; "
                f"point --data-dir at the official {dataset} files"
            )
        raise DataError(
            f"{path} is not the official {DATASET_NAMES[dataset]} file (SHA-256 {digest[:12]}… "
            f"instead of {expected[name][:12]}…); replace it with the official file"
        )


def check_idx_file(path: Path, name: str) -> None:
    """Check an IDX file decompresses and has the official header and length of ``name``."""
    magic, count = OFFICIAL_FILES[name]
    try:
        with gzip.open(path, "rb") as stream:
            payload = stream.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} is corrupt ({error}); replace it with the official file") from None
    item_bytes = math.prod(IMAGE_SHAPE) if magic == 2051 else 1  # a byte per pixel
    header_bytes = 16 if magic == 2051 else 8
    if len(payload) < 8 or struct.unpack(">II", payload[:8]) != (magic, count):
        raise DataError(f"{path} has an unexpected header; replace it with the official file")
    if len(payload) != header_bytes + count * item_bytes:
        raise DataError(
            f"{path} has {len(payload)} bytes instead of {header_bytes + count * item_bytes}; "
            "replace it with the official file"
        )


def extraction_dir(builder: tfds.core.DatasetBuilder) -> Path:
    """Where TFDS extracts ``builder``'s archives: a folder of the dataset's own.

    TFDS names an extraction after the archive's file name (``GZIP.<file name>``) and
    reuses one that exists. In its default, shared ``<tfds dir>/downloads/extracted``,
    Fashion-MNIST prepared after MNIST (or the reverse) would be built from the other's
    images, since both datasets use the same four file names.
    """
    return Path(str(builder.data_dir_root)) / "downloads" / builder.name / "extracted"


# How long a download host (or the proxy in front of it) may take to accept a connection
# before we call the network unreachable; a host that slow could not deliver 50 MB anyway.
PROBE_SECONDS = 5.0

OFFLINE_HINT = (
    "use the official .gz files instead: `make train DATA_DIR=<folder>`, or --data-dir "
    f"<folder> (or {DATA_DIR_ENV}=<folder>); see the README's Quick start"
)


def probe_address(url: str) -> tuple[str, int]:
    """The host and port a download of ``url`` connects to first: its proxy's, if one
    applies (``HTTPS_PROXY`` and the like, as requests reads them), else its own."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host = parts.hostname or ""
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def unreachable(addresses: Iterable[tuple[str, int]], timeout: float = PROBE_SECONDS) -> list[str]:
    """The ``host:port`` addresses that do not accept a TCP connection within ``timeout``.

    All are tried at once, each in a daemon thread, because name resolution has no
    timeout of its own and may hang on a machine without a resolver.
    """
    addresses = sorted(set(addresses))
    reached: set[tuple[str, int]] = set()

    def attempt(address: tuple[str, int]) -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                reached.add(address)
        except OSError:
            pass

    threads = [threading.Thread(target=attempt, args=(a,), daemon=True) for a in addresses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return [f"{host}:{port}" for host, port in addresses if (host, port) not in reached]


def check_download_hosts(builder: tfds.core.DatasetBuilder, dataset: str) -> None:
    """Refuse at once, in one line, when the hosts TFDS would download from are unreachable."""
    urls = builder.url_infos or {}
    missing = unreachable(probe_address(url) for url in urls)
    if missing:
        raise DataError(
            f"cannot download {dataset}: {', '.join(missing)} is unreachable (offline?); "
            + OFFLINE_HINT
        )


def prepare(builder: tfds.core.DatasetBuilder, config: DataConfig) -> None:
    """Download (or read from ``config.data_dir``) and prepare the dataset, once."""
    import tensorflow_datasets as tfds

    manual_dir = None
    if config.data_dir:
        manual_dir = resolve_manual_dir(config.dataset, config.data_dir)
        check_official_files(manual_dir, config.dataset)
    else:
        check_download_hosts(builder, config.dataset)
    download_config = tfds.download.DownloadConfig(
        manual_dir=str(manual_dir) if manual_dir else None,
        extract_dir=str(extraction_dir(builder)),
    )
    try:
        builder.download_and_prepare(download_config=download_config)
    except OSError as error:
        raise DataError(
            f"could not download {config.dataset} ({type(error).__name__}); " + OFFLINE_HINT
        ) from None


def check_prepared(
    dataset: str, split: str, images: np.ndarray, labels: np.ndarray, folder: Path
) -> None:
    """Refuse a prepared split that is not ``dataset``'s own, in one line saying how to clear it.

    A TFDS cache prepared from the other dataset's files (by a keras-vae that shared
    TFDS's extraction folder, see :func:`extraction_dir`) stays wrong: TFDS never prepares
    a dataset twice. Checking every split as it is read catches it, and any other wrong
    cache, for the price of a sum over its pixels (README, "Quick start").
    """
    found = SplitFingerprint.of(images, labels)
    if found == PREPARED_FINGERPRINTS[dataset][split]:
        return
    owner = next(
        (name for name, splits in PREPARED_FINGERPRINTS.items() if splits[split] == found), None
    )
    if owner:
        holds = f"{DATASET_NAMES[owner]}'s {split} images"
        cause = "prepared from the other dataset's extracted files by an older keras-vae"
    else:
        holds = f"{len(labels)} {split} images that are not the official ones"
        cause = "damaged, or prepared from other files"
    raise DataError(
        f"the prepared {dataset} in {folder} holds {holds}, not {DATASET_NAMES[dataset]}'s "
        f"({cause}); remove it with `rm -r {folder.parent}` and run again to prepare it afresh"
    )


def load_tfds_split(config: DataConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, 28, 28, 1]`` and labels of one split, prepared on first use and
    checked to be ``config.dataset``'s official data (see :func:`check_prepared`)."""
    import tensorflow_datasets as tfds

    silence_tfds_progress()
    builder = tfds.builder(config.dataset, data_dir=config.tfds_dir)
    if not builder.is_prepared():
        prepare(builder, config)
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    images, labels = data["image"], data["label"]
    check_prepared(config.dataset, split, images, labels, Path(str(builder.data_dir)))
    return images, labels


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
