"""The batcher on a real onnxruntime session: fairness between large and small requests."""

from __future__ import annotations

import asyncio

import numpy as np

from serving.batcher import Batcher
from serving.metrics import Metrics
from vae_contract import ENCODER, Z_MEAN
from vae_runtime import OnnxModel


def encoder(repo) -> OnnxModel:
    return OnnxModel(repo / "onnx" / ENCODER / "1" / "model.onnx", ENCODER, 1)


def test_a_small_request_is_not_stuck_behind_a_large_one(exported_repo, splits):
    """1,024-row requests are served in slices, one at a time: a one-image request that
    arrives behind two of them is answered with the first slice, not after 32 batches;
    the large ones keep their order, and each answer, reassembled from its slices,
    equals one onnxruntime call."""
    model = encoder(exported_repo)
    rng = np.random.default_rng(0)
    large = rng.random((1024, *model.item_shape), dtype=np.float32)
    small = rng.random((1, *model.item_shape), dtype=np.float32)

    async def scenario() -> tuple[list[str], dict, dict]:
        batcher = Batcher(model, Metrics(), max_batch=64, max_delay=0.0, inline_rows=0)
        batcher.start()
        finished: list[str] = []

        async def submit(name: str, inputs: np.ndarray) -> dict:
            outputs = await batcher.submit(inputs)
            finished.append(name)
            return outputs

        try:
            big = asyncio.ensure_future(submit("large", large))
            second = asyncio.ensure_future(submit("second large", large[::-1].copy()))
            await asyncio.sleep(0)  # the large ones are queued first
            one = asyncio.ensure_future(submit("small", small))
            await second
            return finished, await big, await one
        finally:
            await batcher.stop()

    order, big, one = asyncio.run(scenario())
    assert order == ["small", "large", "second large"]
    expected = model.run(large)
    assert big[Z_MEAN].shape == (1024, model.latent_dim)
    np.testing.assert_allclose(big[Z_MEAN], expected[Z_MEAN], atol=1e-5)
    np.testing.assert_allclose(one[Z_MEAN], model.run(small)[Z_MEAN], atol=1e-5)


def test_a_request_past_its_deadline_gets_504_and_never_hangs(exported_repo):
    """A large request that times out between slices gets its 504, and nothing of it is
    left queued. (A request that expired between two deadline sweeps used to be dropped
    from its batch unanswered, and its caller waited forever.)"""
    model = encoder(exported_repo)
    metrics = Metrics()
    inputs = np.zeros((1024, *model.item_shape), np.float32)

    async def scenario() -> tuple[int, int]:
        batcher = Batcher(model, metrics, max_batch=8, max_delay=0.0, timeout=0.05)
        batcher.start()
        try:
            try:
                await asyncio.wait_for(batcher.submit(inputs), 10)
                status = 200
            except Exception as error:  # noqa: BLE001 - the ApiError's status is checked
                status = getattr(error, "status", 0)
            await asyncio.sleep(0.1)
            return status, batcher.depth
        finally:
            await batcher.stop()

    status, depth = asyncio.run(scenario())
    assert status == 504
    assert depth == 0
