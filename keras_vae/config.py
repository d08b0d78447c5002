"""Typed configuration for training, with defaults that work.

One dataclass per concern; command-line flags override the defaults, and the
effective configuration is written beside every run as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_vae.errors import ConfigError

DATASETS = ("mnist", "fashion_mnist")
ARCHITECTURES = ("conv", "resnet")
STRATEGIES = ("default", "mirrored", "multi_worker")
SHARD_POLICIES = ("data", "auto", "off")
LR_SCHEDULES = ("constant", "cosine")
ACTIVATIONS = ("relu", "elu", "swish")
BINARIZATIONS = ("dynamic", "static", "none")
DATA_DIR_ENV = "KERAS_VAE_DATA_DIR"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class DataConfig:
    """Which dataset, where it comes from, and how images are turned into inputs."""

    dataset: str = "mnist"
    # Folder with the four official .gz files (or with one sub-folder per
    # dataset); None means TFDS downloads them as usual.
    data_dir: str | None = field(default_factory=lambda: os.environ.get(DATA_DIR_ENV) or None)
    # Where TFDS keeps the prepared dataset; None means TFDS's own default.
    tfds_dir: str | None = None
    binarization: str = "dynamic"
    # Images held out of the training split to validate on after each epoch.
    validation_size: int = 5000
    # Use only the first N training images (0 = all); for quick experiments.
    train_size: int = 0

    def __post_init__(self) -> None:
        _require(
            self.dataset in DATASETS,
            f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}",
        )
        _require(
            self.binarization in BINARIZATIONS,
            f"unknown binarization {self.binarization!r}; choose one of {', '.join(BINARIZATIONS)}",
        )
        _require(
            self.validation_size >= 0,
            f"validation_size must be >= 0, got {self.validation_size}",
        )
        _require(self.train_size >= 0, f"train_size must be >= 0, got {self.train_size}")


@dataclass
class ModelConfig:
    """Architecture of the encoder and decoder (defaults: the keras.io convolutional VAE)."""

    latent_dim: int = 16
    conv_filters: tuple[int, ...] = (32, 64)
    hidden_units: int = 256
    # "conv": the keras.io networks; "resnet": the same 28 -> 14 -> 7 plan with
    # residual blocks at each resolution, for quality.
    architecture: str = "conv"
    residual_blocks: int = 1
    # Hidden-layer non-linearity; smooth ones (elu, swish) often fit likelihoods better.
    activation: str = "relu"

    def __post_init__(self) -> None:
        self.conv_filters = tuple(int(f) for f in self.conv_filters)
        _require(
            self.architecture in ARCHITECTURES,
            f"unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}",
        )
        _require(
            self.activation in ACTIVATIONS,
            f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}",
        )
        _require(
            self.residual_blocks >= 0,
            f"residual_blocks must be >= 0, got {self.residual_blocks}",
        )
        _require(
            self.latent_dim >= 1,
            f"latent_dim must be a positive integer, got {self.latent_dim}; try 2 or 16",
        )
        _require(
            len(self.conv_filters) == 2 and all(f >= 1 for f in self.conv_filters),
            f"conv_filters must be two positive integers (28 -> 14 -> 7), got {self.conv_filters}",
        )
        _require(self.hidden_units >= 1, f"hidden_units must be >= 1, got {self.hidden_units}")


@dataclass
class TrainConfig:
    """Optimisation, the ELBO's weighting, reproducibility and where results go."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    # "cosine" decays the learning rate to 5 % of its start over the whole run.
    lr_schedule: str = "constant"
    # Weight of the KL term (beta-VAE); 1.0 is the true ELBO.
    beta: float = 1.0
    # Linear KL warm-up from 0 to beta over this many epochs (0 = off).
    kl_warmup_epochs: int = 0
    # Importance samples per image in the training objective: 1 is the ELBO (analytic
    # KL); k > 1 is the IWAE bound (Burda et al.), tighter, at k decoder passes per image.
    iw_samples: int = 1
    # With iw_samples > 1: the epoch from which the k-sample bound replaces the ELBO
    # (0 = from the start); the epochs before train on the cheaper ELBO.
    iw_start_epoch: int = 0
    seed: int = 0
    # tf.distribute: "default" (one device), "mirrored" (all local devices) or
    # "multi_worker" (the cluster in TF_CONFIG). batch_size is the global batch.
    strategy: str = "default"
    # How workers split the input: "data" (every worker skips the others' elements),
    # "auto" (tf.data decides) or "off" (each worker reads everything).
    shard_policy: str = "data"
    output_dir: str = "artifacts/runs"
    run_name: str | None = None

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        _require(
            self.lr_schedule in LR_SCHEDULES,
            f"unknown lr_schedule {self.lr_schedule!r}; choose one of {', '.join(LR_SCHEDULES)}",
        )
        _require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        _require(
            self.strategy in STRATEGIES,
            f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}",
        )
        _require(
            self.shard_policy in SHARD_POLICIES,
            f"unknown shard_policy {self.shard_policy!r}; "
            f"choose one of {', '.join(SHARD_POLICIES)}",
        )
        _require(self.iw_samples >= 1, f"iw_samples must be >= 1, got {self.iw_samples}")
        _require(
            0 <= self.iw_start_epoch < self.epochs,
            f"iw_start_epoch must be in [0, epochs), got {self.iw_start_epoch}",
        )
        _require(
            self.kl_warmup_epochs >= 0,
            f"kl_warmup_epochs must be >= 0, got {self.kl_warmup_epochs}",
        )


@dataclass
class RunConfig:
    """Everything that defines a training run; saved as the run's ``config.json``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        try:
            return cls(
                data=DataConfig(**values.get("data", {})),
                model=ModelConfig(**values.get("model", {})),
                train=TrainConfig(**values.get("train", {})),
            )
        except TypeError as error:  # an unknown or misspelt key
            raise ConfigError(f"invalid configuration: {error}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise ConfigError(f"no configuration at {path}; is this a run folder?") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} is not valid JSON ({error})") from None


PRESETS_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_preset(name: str) -> dict[str, Any]:
    """A named partial configuration ({"data": ..., "model": ..., "train": ...})."""
    path = PRESETS_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")
    return json.loads(path.read_text())
