"""The dataset loader and the tf.data pipelines, on the real MNIST files."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from keras_vae.config import DataConfig
from keras_vae.data import (
    OFFICIAL_FILES,
    binarize_fixed,
    check_official_files,
    held_out_inputs,
    load_splits,
    resolve_manual_dir,
    training_dataset,
)
from keras_vae.errors import ConfigError, DataError


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
    check_official_files(shared_data / "mnist")
    check_official_files(shared_data / "fashion_mnist")


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
        victim.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        check_official_files(folder)


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
