"""The loaded models and their batchers: what the HTTP layer delegates to."""

from __future__ import annotations

import numpy as np

from serving.batcher import Batcher
from serving.config import ServingConfig
from serving.engine import OnnxModel
from serving.errors import ApiError
from serving.metrics import Metrics
from serving.offload import Offload
from serving.repository import load_all
from vae_contract import ModelRepositoryError, choose_version


class Service:
    """Every version of both networks, loaded and warmed up before the first request."""

    def __init__(self, config: ServingConfig, metrics: Metrics | None = None):
        self.config = config
        self.metrics = metrics or Metrics()
        # Complete versions only, each verified against its manifests (serving.repository).
        self.models: dict[str, dict[int, OnnxModel]] = load_all(config.repo, config.threads)
        self.batchers: dict[tuple[str, int], Batcher] = {}
        self.offload = Offload(config.offload_min_bytes)
        self.ready = False

    async def start(self) -> None:
        self.offload.start()
        for name, versions in self.models.items():
            for version, model in versions.items():
                model.warm_up((1, 8, self.config.max_batch_size))
                batcher = Batcher(
                    model,
                    self.metrics,
                    max_batch=self.config.max_batch_size,
                    max_delay=self.config.max_delay_ms / 1000.0,
                    max_queue=self.config.max_queue,
                    timeout=self.config.timeout_s,
                    batching=self.config.batching,
                    inline_rows=self.config.inline_rows,
                )
                batcher.start()
                self.batchers[name, version] = batcher
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for batcher in self.batchers.values():
            await batcher.stop()
        self.offload.stop()

    @staticmethod
    def check_repository(config: ServingConfig) -> None:
        """Load every model once and drop it: a RepositoryError if any is missing or corrupt."""
        load_all(config.repo, threads=1)

    def model(self, name: str, version: int | None = None) -> OnnxModel:
        """The model ``name`` at ``version`` (default: the latest), or a 404 that lists them."""
        versions = self.models.get(name)
        if versions is None:
            raise ApiError(404, f"unknown model {name!r}; models: {', '.join(self.models)}")
        try:
            return versions[choose_version(name, versions, version)]
        except ModelRepositoryError as error:
            raise ApiError(404, str(error)) from None

    def admit(self, name: str, version: int | None = None) -> OnnxModel:
        """The model to run a request on, or a 503 before any parsing if its queue is full."""
        model = self.model(name, version)
        self.check_room(model)
        return model

    def check_room(self, model: OnnxModel) -> None:
        self.batchers[model.name, model.version].check_room()

    async def run(self, model: OnnxModel, inputs: np.ndarray) -> dict[str, np.ndarray]:
        return await self.batchers[model.name, model.version].submit(inputs)

    def describe(self) -> dict:
        return {
            name: {"versions": sorted(versions), "latest": versions[max(versions)].describe()}
            for name, versions in self.models.items()
        }
