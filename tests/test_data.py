"""The dataset loader and the tf.data pipelines, on the real MNIST files."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from keras_vae.config import DataConfig
from keras_vae.data import (
    OFFICIAL_FILES,
    OFFICIAL_SHA256,
    PREPARED_FINGERPRINTS,
    SplitFingerprint,
    binarize_fixed,
    check_official_files,
    held_out_inputs,
    load_splits,
    load_tfds_split,
    probe_address,
    resolve_manual_dir,
    training_dataset,
    unreachable,
)
from keras_vae.errors import ConfigError, DataError, run_cli
from tests.conftest import REPO


def _copy_dataset(source, target):
    target.mkdir(parents=True)
    for name in OFFICIAL_FILES:
        shutil.copy(source / name, target / name)
    return target


def test_manual_dir_is_found_directly_or_per_dataset(shared_data):
    assert resolve_manual_dir("mnist", shared_data) == shared_data / "mnist"
    assert resolve_manual_dir("mnist", shared_data / "mnist") == shared_data / "mnist"
    assert resolve_manual_dir("fashion_mnist", shared_data) == shared_data / "fashion_mnist"


def test_missing_data_dir_and_missing_file_are_named(shared_data, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_manual_dir("mnist", tmp_path / "nowhere")
    folder = _copy_dataset(shared_data / "mnist", tmp_path / "mnist")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte.gz in .*mnist"):
        resolve_manual_dir("mnist", tmp_path)


def test_official_files_pass_the_check(shared_data):
    check_official_files(shared_data / "mnist", "mnist")
    check_official_files(shared_data / "fashion_mnist", "fashion_mnist")


@pytest.mark.parametrize(
    "damage",
    ["truncated", "not gzip", "wrong count"],
)
def test_corrupt_files_are_named(shared_data, tmp_path, damage):
    folder = _copy_dataset(shared_data / "mnist", tmp_path / "mnist")
    victim = folder / "train-images-idx3-ubyte.gz"
    raw = victim.read_bytes()
    if damage == "truncated":
        victim.write_bytes(raw[: len(raw) // 2])
    elif damage == "not gzip":
        victim.write_bytes(b"<html>not found</html>")
    else:
        payload = bytearray(gzip.decompress(raw))
        payload[4:8] = (59999).to_bytes(4, "big")
        victim.write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        check_official_files(folder, "mnist")


def test_a_file_of_the_other_dataset_or_altered_is_refused_before_preparing(shared_data, tmp_path):
    # Both datasets use the same four file names: only the content tells them apart.
    _copy_dataset(shared_data / "mnist", tmp_path / "fashion_mnist")
    config = DataConfig(
        dataset="fashion_mnist", data_dir=str(tmp_path), tfds_dir=str(tmp_path / "tfds")
    )
    other = "train-images-idx3-ubyte.gz is MNIST's train-images-idx3-ubyte.gz, not Fashion-MNIST's"
    with pytest.raises(DataError, match=other):
        load_splits(config)
    assert not (tmp_path / "tfds" / "fashion_mnist").exists()

    # One label changed, recompressed: a sound IDX file, but not the published one.
    victim = _copy_dataset(shared_data / "mnist", tmp_path / "mnist") / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(victim.read_bytes()))
    payload[-1] = (payload[-1] + 1) % 10
    victim.write_bytes(gzip.compress(bytes(payload), compresslevel=1))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is not the official MNIST file"):
        check_official_files(tmp_path / "mnist", "mnist")


def test_official_checksums_are_those_tfds_registers(shared_data):
    import tensorflow_datasets as tfds

    for dataset, ours in OFFICIAL_SHA256.items():
        registered = {
            info.filename: info.checksum for info in tfds.builder_cls(dataset).url_infos.values()
        }
        assert registered == ours
        for name, digest in ours.items():
            assert hashlib.sha256((shared_data / dataset / name).read_bytes()).hexdigest() == digest


def _old_extractions(tfds_dir: Path, source: Path) -> None:
    """What preparing MNIST with keras-vae before the fix left in a TFDS folder: TFDS's
    extraction of each official .gz (its decompressed bytes), named ``GZIP.<file name>``
    in the ``downloads/extracted`` folder that every dataset shared."""
    extracted = tfds_dir / "downloads" / "extracted"
    extracted.mkdir(parents=True)
    for name in OFFICIAL_FILES:
        (extracted / f"GZIP.{name}").write_bytes(gzip.decompress((source / name).read_bytes()))


def _official_test_split(folder: Path) -> list[bytes]:
    """The test examples read straight from the official .gz files with numpy, as
    :func:`_examples` gives them."""
    images = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    labels = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:]
    return _examples(
        np.frombuffer(images, np.uint8).reshape(-1, 28, 28, 1), np.frombuffer(labels, np.uint8)
    )


def _examples(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """Each example as its label byte then its pixels, sorted: TFDS stores them shuffled."""
    return sorted(
        bytes([int(label)]) + image.tobytes() for image, label in zip(images, labels, strict=True)
    )


def _digest(examples: list[bytes]) -> str:
    """One SHA-256 of a whole split: a failed comparison reads as two short hex strings."""
    return hashlib.sha256(b"".join(examples)).hexdigest()


@pytest.fixture(scope="module")
def fashion_after_mnist(shared_data, data_config, splits, tmp_path_factory) -> Path:
    """A TFDS folder where MNIST was prepared, then Fashion-MNIST by :func:`load_tfds_split`.

    MNIST's part is copied from the session's cache (its prepared dataset) and its
    extracted files are those the old preparation left (see :func:`_old_extractions`):
    preparing it again would add ~25 s for nothing more. Fashion-MNIST's preparation is
    real, from the official files, and is this module's only one.
    """
    tfds_dir = tmp_path_factory.mktemp("tfds")
    shutil.copytree(Path(data_config.tfds_dir) / "mnist", tfds_dir / "mnist")
    _old_extractions(tfds_dir, shared_data / "mnist")
    config = DataConfig(dataset="fashion_mnist", data_dir=str(shared_data), tfds_dir=str(tfds_dir))
    load_tfds_split(config, "test")  # prepares it
    return tfds_dir


def test_fashion_mnist_prepared_after_mnist_in_one_tfds_folder_is_fashion_mnist(
    shared_data, fashion_after_mnist
):
    config = DataConfig(
        dataset="fashion_mnist", data_dir=str(shared_data), tfds_dir=str(fashion_after_mnist)
    )
    images, labels = load_tfds_split(config, "test")
    prepared = _examples(images, labels)
    fashion = _official_test_split(shared_data / "fashion_mnist")
    digits = _official_test_split(shared_data / "mnist")
    # Example for example the official Fashion-MNIST test set (whose files have the SHA-256
    # TFDS registers: test_official_checksums_are_those_tfds_registers), not MNIST's.
    mnist_share = f"{len(set(prepared) & set(digits))} of {len(prepared)} are MNIST's"
    assert _digest(prepared) == _digest(fashion), mnist_share
    images, labels = load_tfds_split(replace(config, dataset="mnist"), "test")
    assert _digest(_examples(images, labels)) == _digest(digits)


def test_a_cache_poisoned_by_the_old_preparation_is_refused_in_one_line(
    shared_data, data_config, fashion_after_mnist, tmp_path, capsys
):
    """The poisoned cache is rebuilt as the old code wrote it, from the two preparations at
    hand, instead of a third one (~25 s).

    TFDS's FashionMNIST inherits MNIST's generator, so from MNIST's extracted files it
    writes MNIST's very records; its metadata is Fashion-MNIST's with MNIST's split sizes
    in bytes. Checked once against a real preparation by the old code: every file the
    same bytes, dataset_info.json the same JSON.
    """
    mnist = Path(data_config.tfds_dir) / "mnist" / "3.0.1"
    poisoned = tmp_path / "tfds" / "fashion_mnist" / "3.0.1"
    poisoned.mkdir(parents=True)
    for path in (fashion_after_mnist / "fashion_mnist" / "3.0.1").iterdir():
        if ".tfrecord" not in path.name:
            shutil.copy(path, poisoned / path.name)
    for path in mnist.glob("mnist-*.tfrecord*"):
        shutil.copy(path, poisoned / f"fashion_{path.name}")
    info = json.loads((poisoned / "dataset_info.json").read_text())
    sizes = {
        split["name"]: split["numBytes"]
        for split in json.loads((mnist / "dataset_info.json").read_text())["splits"]
    }
    for split in info["splits"]:
        split["numBytes"] = sizes[split["name"]]
    (poisoned / "dataset_info.json").write_text(json.dumps(info))

    config = DataConfig(
        dataset="fashion_mnist", data_dir=str(shared_data), tfds_dir=str(tmp_path / "tfds")
    )
    expected = (
        f"the prepared fashion_mnist in {poisoned} holds MNIST's test images, not "
        "Fashion-MNIST's (prepared from the other dataset's extracted files by an older "
        f"keras-vae); remove it with `rm -r {poisoned.parent}` and run again to prepare it afresh"
    )
    with pytest.raises(DataError) as refused:
        load_tfds_split(config, "test")
    assert str(refused.value) == expected
    # Through the commands' error path: that one line on stderr, exit code 2.
    assert run_cli(lambda argv: load_tfds_split(config, "test") and 0) == 2
    assert capsys.readouterr().err == f"error: {expected}\n"


def test_a_corrupt_file_stops_preparation_with_a_clear_error(shared_data, tmp_path):
    folder = _copy_dataset(shared_data / "mnist", tmp_path / "mnist")
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    config = DataConfig(data_dir=str(tmp_path), tfds_dir=str(tmp_path / "tfds"))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz is corrupt"):
        load_splits(config)


def test_config_rejects_unknown_choices():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar10'; choose one of mnist"):
        DataConfig(dataset="cifar10")
    with pytest.raises(ConfigError, match="unknown binarization 'soft'"):
        DataConfig(binarization="soft")


def test_splits_have_the_requested_sizes_and_real_content(splits):
    assert splits.train_images.shape == (4096, 28, 28, 1)
    assert splits.val_images.shape == (1000, 28, 28, 1)
    assert splits.test_images.shape == (10000, 28, 28, 1)
    assert splits.train_images.dtype == np.uint8
    assert set(np.unique(splits.test_labels)) == set(range(10))
    # MNIST digits cover about 13% of the pixels with ink (mean intensity ~0.13).
    assert 0.10 < splits.test_images.mean() / 255 < 0.16


def test_validation_size_must_leave_training_images(data_config):
    from dataclasses import replace

    with pytest.raises(DataError, match="validation_size 60000 leaves no training images"):
        load_splits(replace(data_config, validation_size=60000))


def test_dynamic_binarization_is_fresh_every_batch_and_reproducible():
    image = np.full((8, 28, 28, 1), 128, dtype=np.uint8)  # p = 0.5 everywhere

    def first_batches(seed):
        return [b.numpy() for b in training_dataset(image, 4, "dynamic", seed).take(3)]

    batches = first_batches(seed=7)
    for batch in batches:
        assert batch.shape == (4, 28, 28, 1) and batch.dtype == np.float32
        assert set(np.unique(batch)) == {0.0, 1.0}
        assert 0.45 < batch.mean() < 0.55
    assert not np.array_equal(batches[0], batches[1])
    assert not np.array_equal(batches[0][0], batches[0][1])
    for again, before in zip(first_batches(seed=7), batches, strict=True):
        np.testing.assert_array_equal(again, before)
    assert not np.array_equal(first_batches(seed=8)[0], batches[0])


def test_static_and_no_binarization(splits):
    images = splits.test_images[:16]
    static = next(iter(training_dataset(images, 16, "static", 0))).numpy()
    grey = next(iter(training_dataset(images, 16, "none", 0))).numpy()
    # The stream is shuffled: compare as sets of images, by their sums.
    expected_static = (images / 255.0 > 0.5).astype(np.float32)
    assert sorted(static.sum(axis=(1, 2, 3))) == sorted(expected_static.sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(
        sorted(grey.sum(axis=(1, 2, 3))), sorted((images / 255.0).sum(axis=(1, 2, 3))), rtol=1e-5
    )
    assert grey.min() >= 0.0 and grey.max() <= 1.0


def test_held_out_inputs_are_the_same_every_time(splits):
    first = held_out_inputs(splits.test_images[:100], "dynamic")
    np.testing.assert_array_equal(first, held_out_inputs(splits.test_images[:100], "dynamic"))
    assert not np.array_equal(first, binarize_fixed(splits.test_images[:100], "dynamic", seed=99))


def test_batch_larger_than_the_data_is_a_clear_error():
    with pytest.raises(DataError, match="batch_size 128 is larger than the 10 training images"):
        training_dataset(np.zeros((10, 28, 28, 1), np.uint8), 128, "dynamic", 0)


def test_prepared_fingerprints_are_those_of_the_official_files(shared_data):
    for dataset, splits in PREPARED_FINGERPRINTS.items():
        for split, prefix in (("train", "train"), ("test", "t10k")):
            folder = shared_data / dataset
            images = gzip.decompress((folder / f"{prefix}-images-idx3-ubyte.gz").read_bytes())
            labels = gzip.decompress((folder / f"{prefix}-labels-idx1-ubyte.gz").read_bytes())
            found = SplitFingerprint.of(
                np.frombuffer(images[16:], np.uint8), np.frombuffer(labels[8:], np.uint8)
            )
            assert found == splits[split], (dataset, split)


MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/train-images-idx3-ubyte.gz"


def test_offline_without_a_data_dir_fails_in_seconds_naming_both_ways_to_give_the_files(
    tmp_path,
):
    """Issue 14: offline, TFDS retried every file for 3 min 33 s (68 lines of warnings)
    before the error. Safe to run anywhere: the training downloads only if the probe
    reaches the host, and then this test is skipped before starting it."""
    if not unreachable([probe_address(MNIST_URL)]):
        pytest.skip("this machine reaches MNIST's download host: the training would download")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("KERAS_VAE_DATA_DIR", "TF_CPP_MIN_LOG_LEVEL")
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "keras_vae.train",
         "--tfds-dir", str(tmp_path / "tfds"), "--output-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-3000:]
    assert seconds < 20, f"{seconds:.1f} s"
    # One line, TensorFlow's and TFDS's own logging included (nothing without --verbose).
    assert result.stderr.count("\n") == 1, result.stderr[-3000:]
    assert result.stderr.startswith("error: cannot download mnist: storage.googleapis.com:443 ")
    assert "`make train DATA_DIR=<folder>`" in result.stderr and "--data-dir" in result.stderr
    assert not (tmp_path / "runs").exists()
    assert not list((tmp_path / "tfds").rglob("*.gz")), "nothing was downloaded"


def test_the_probe_tells_a_listening_port_from_a_closed_one_and_goes_through_proxies(
    monkeypatch,
):
    with socket.create_server(("127.0.0.1", 0)) as server:
        open_port = server.getsockname()[1]
        with socket.create_server(("127.0.0.1", 0)) as closed:
            closed_port = closed.getsockname()[1]
        started = time.monotonic()
        assert unreachable([("127.0.0.1", open_port), ("127.0.0.1", closed_port)]) == [
            f"127.0.0.1:{closed_port}"
        ]
        assert time.monotonic() - started < 2
    for name in ("https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert probe_address(MNIST_URL) == ("storage.googleapis.com", 443)
    assert probe_address("http://fashion-mnist.example/x.gz") == ("fashion-mnist.example", 80)
    # Behind a proxy, the proxy is what must be reachable (requests goes through it).
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert probe_address(MNIST_URL) == ("proxy.internal", 3128)
    monkeypatch.setenv("NO_PROXY", "storage.googleapis.com")
    assert probe_address(MNIST_URL) == ("storage.googleapis.com", 443)
