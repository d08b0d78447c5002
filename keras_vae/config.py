"""Typed configuration for training, with defaults that work.

One dataclass per concern; each field carries its help text beside its default
(:func:`vae_contract.settings.setting`), from which ``python -m keras_vae.train`` makes
its flags. Flags override the defaults, and the effective configuration is written
beside every run as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_vae.errors import ConfigError, require_choice
from vae_contract import IMAGE_SHAPE
from vae_contract.settings import setting

DATASETS = ("mnist", "fashion_mnist")
ARCHITECTURES = ("conv", "resnet")
STRATEGIES = ("default", "mirrored", "multi_worker")
SHARD_POLICIES = ("data", "auto", "off")
LR_SCHEDULES = ("constant", "cosine")
ACTIVATIONS = ("relu", "elu", "swish")
BINARIZATIONS = ("dynamic", "static", "none")
DATA_DIR_ENV = "KERAS_VAE_DATA_DIR"
# The networks' plan: the image side, then the side after each stride-2 convolution.
RESOLUTIONS = tuple(IMAGE_SHAPE[0] // 2**level for level in range(3))
_PLAN = " -> ".join(map(str, RESOLUTIONS))


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class DataConfig:
    """Which dataset, where it comes from, and how images are turned into inputs."""

    dataset: str = setting("mnist", "the images to model", choices=DATASETS)
    data_dir: str | None = setting(
        help="folder with the four official .gz files (or one sub-folder per dataset); "
        f"unset: ${DATA_DIR_ENV}, else TFDS downloads them",
        factory=lambda: os.environ.get(DATA_DIR_ENV) or None,
    )
    tfds_dir: str | None = setting(
        None, "where TFDS keeps the prepared dataset (unset: TFDS's own default)"
    )
    binarization: str = setting(
        "dynamic",
        "dynamic: a fresh Bernoulli sample of each training image every epoch; "
        "static: threshold 0.5; none: grey levels",
        choices=BINARIZATIONS,
    )
    validation_size: int = setting(
        5000, "images held out of the training split to validate on after each epoch"
    )
    train_size: int = setting(
        0, "use only the first N training images (0: all), for quick experiments"
    )

    def __post_init__(self) -> None:
        require_choice("dataset", self.dataset, DATASETS)
        require_choice("binarization", self.binarization, BINARIZATIONS)
        _require(
            self.validation_size >= 0,
            f"validation_size must be >= 0, got {self.validation_size}",
        )
        _require(self.train_size >= 0, f"train_size must be >= 0, got {self.train_size}")


@dataclass
class ModelConfig:
    """Architecture of the encoder and decoder (defaults: the keras.io convolutional VAE)."""

    latent_dim: int = setting(
        16, "size of the latent space (2 also draws the latent map and the manifold)"
    )
    conv_filters: tuple[int, ...] = setting(
        (32, 64), f"filters of the two stride-2 convolutions ({_PLAN})"
    )
    hidden_units: int = setting(256, "width of the dense layer before the latent space")
    architecture: str = setting(
        "conv",
        f"conv: the keras.io networks; resnet: the same {_PLAN} plan with residual "
        "blocks at each resolution, for quality",
        choices=ARCHITECTURES,
    )
    residual_blocks: int = setting(1, "residual blocks per resolution (resnet only)")
    activation: str = setting(
        "relu",
        "hidden-layer non-linearity; smooth ones (elu, swish) often fit likelihoods better",
        choices=ACTIVATIONS,
    )

    def __post_init__(self) -> None:
        self.conv_filters = tuple(int(f) for f in self.conv_filters)
        require_choice("architecture", self.architecture, ARCHITECTURES)
        require_choice("activation", self.activation, ACTIVATIONS)
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
            f"conv_filters must be two positive integers ({_PLAN}), got {self.conv_filters}",
        )
        _require(self.hidden_units >= 1, f"hidden_units must be >= 1, got {self.hidden_units}")


@dataclass
class TrainConfig:
    """Optimisation, the ELBO's weighting, reproducibility and where results go."""

    epochs: int = setting(30, "passes over the training images")
    batch_size: int = setting(128, "images per step: the global batch, split across replicas")
    learning_rate: float = setting(1e-3, "Adam's learning rate (its start, with a schedule)")
    lr_schedule: str = setting(
        "constant",
        "cosine: decay the learning rate to 5 % of its start over the whole run",
        choices=LR_SCHEDULES,
    )
    beta: float = setting(1.0, "weight of the KL term (beta-VAE); 1.0 is the true ELBO")
    kl_warmup_epochs: int = setting(
        0, "linear KL warm-up from 0 to beta over this many epochs (0: off)"
    )
    iw_samples: int = setting(
        1,
        "importance samples per image in the training objective: 1 is the ELBO (analytic "
        "KL); k > 1 is the IWAE bound (Burda et al.), tighter, at k decoder passes per image",
    )
    iw_start_epoch: int = setting(
        0,
        "with k > 1 importance samples: the epoch from which the k-sample bound replaces "
        "the ELBO (0: from the start); the epochs before train on the cheaper ELBO",
    )
    seed: int = setting(0, "seeds the weights, the shuffling, the binarization and sampling")
    strategy: str = setting(
        "default",
        "tf.distribute: default (one device), mirrored (all local devices) or "
        "multi_worker (the cluster in TF_CONFIG)",
        choices=STRATEGIES,
    )
    shard_policy: str = setting(
        "data",
        "how workers split the input: data (every worker skips the others' elements), "
        "auto (tf.data decides) or off (each worker reads everything)",
        choices=SHARD_POLICIES,
    )
    output_dir: str = setting("artifacts/runs", "where run folders go")
    run_name: str | None = setting(
        None, "run folder name (unset: the time, the dataset and the latent size)"
    )

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        require_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _require(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        require_choice("strategy", self.strategy, STRATEGIES)
        require_choice("shard_policy", self.shard_policy, SHARD_POLICIES)
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
    require_choice("preset", name, preset_names())
    return json.loads((PRESETS_DIR / f"{name}.json").read_text())
