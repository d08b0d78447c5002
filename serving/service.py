"""The loaded models and their batchers: what the HTTP layer delegates to."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from serving.batcher import Batcher
from serving.codec import Values
from serving.config import ServingConfig
from serving.errors import ApiError, StartupError
from serving.metrics import Metrics
from serving.offload import Offload
from vae_contract import ModelRepositoryError, choose_version
from vae_contract.repository import OnnxVersion, scan_onnx
from vae_runtime import OnnxModel, load_all, open_version

log = logging.getLogger(__name__)


def load_at_start(config: ServingConfig, threads: int) -> dict[str, dict[int, OnnxModel]]:
    """Every complete version of both networks, verified, or a StartupError.

    A repository the service cannot serve at start-up stops it (``python -m serving`` exits
    2 with the reader's one line); one met by a later scan is only logged (:meth:`_poll`).
    """
    try:
        return load_all(config.repo, threads, config.variant)
    except ModelRepositoryError as error:
        raise StartupError(str(error)) from None


class Service:
    """Every version of both networks, loaded and warmed up before the first request.

    Every ``poll_s`` seconds the repository is scanned again, as TF Serving and Triton
    do, and each new complete version is verified, loaded and warmed up off the event
    loop, then published with both its networks in one step: a request sees the new
    pair or the old one, never one network of each. A damaged new version is logged
    once and not served; versions removed from disk are served until a restart.
    """

    def __init__(self, config: ServingConfig, metrics: Metrics | None = None):
        self.config = config
        self.metrics = metrics or Metrics()
        # Complete versions only, each verified against its manifests (vae_runtime).
        self.models = load_at_start(config, config.threads)
        self.batchers: dict[tuple[str, int], Batcher] = {}
        self.offload = Offload(config.offload_min_bytes)
        self.ready = False
        self._poller: asyncio.Task | None = None
        self._refused: set[int] = set()  # new versions that failed to load, logged once

    async def start(self) -> None:
        self.offload.start()
        for versions in self.models.values():
            for model in versions.values():
                self._warm_up(model)
                self._start_batcher(model)
        self.ready = True
        if self.config.poll_s > 0:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    def _warm_up(self, model: OnnxModel) -> None:
        model.warm_up((1, 8, self.config.max_batch_size))

    def _start_batcher(self, model: OnnxModel) -> None:
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
        self.batchers[model.name, model.version] = batcher

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.poll_s)
            try:
                await self.load_new_versions()
            except ModelRepositoryError as error:  # e.g. the repository was moved away
                log.warning("scanning for new versions: %s", error)
            except Exception:  # keep polling whatever one scan met
                log.exception("scanning %s for new versions failed", self.config.repo)

    async def load_new_versions(self) -> list[int]:
        """Load, warm up and publish every complete version not served yet."""
        loaded = {v for versions in self.models.values() for v in versions}
        found = await asyncio.to_thread(scan_onnx, self.config.repo, self.config.variant)
        published = []
        for number, version in sorted(found.complete.items()):
            if number in loaded or number in self._refused:
                continue
            try:
                models = await asyncio.to_thread(self._open_warm, version)
            except ModelRepositoryError as error:
                self._refused.add(number)
                log.warning("new version %d not served: %s", number, error)
                continue
            for model in models.values():
                self._start_batcher(model)
            for name, model in models.items():  # both networks, with no await between
                self.models.setdefault(name, {})[number] = model
            published.append(number)
            log.warning("serving new version %d of %s", number, ", ".join(models))
        return published

    def _open_warm(self, version: OnnxVersion) -> dict[str, OnnxModel]:
        models = open_version(version, self.config.threads)
        for model in models.values():
            self._warm_up(model)
        return models

    async def stop(self) -> None:
        self.ready = False
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        for batcher in self.batchers.values():
            await batcher.stop()
        self.offload.stop()

    @staticmethod
    def check_repository(config: ServingConfig) -> None:
        """Load every model once and drop it: a StartupError if any is missing or corrupt."""
        load_at_start(config, threads=1)

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

    async def run(
        self, model: OnnxModel, inputs: np.ndarray, values: Values | None = None
    ) -> dict[str, np.ndarray]:
        """``model``'s outputs for ``inputs``, batched; ``values`` checks them on the way."""
        return await self.batchers[model.name, model.version].submit(inputs, values)

    def describe(self) -> dict:
        return {
            name: {"versions": sorted(versions), "latest": versions[max(versions)].describe()}
            for name, versions in self.models.items()
        }
