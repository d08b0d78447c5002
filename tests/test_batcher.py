"""The batcher on a real onnxruntime session: fairness between large and small requests."""

from __future__ import annotations

import asyncio

import numpy as np

from serving import kserve
from serving.batcher import Batcher
from serving.codec import Values
from serving.errors import ApiError
from serving.metrics import Metrics
from serving.vae_api import IMAGE_VALUES
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


def test_a_bad_request_in_a_batch_gets_its_400_and_the_others_their_answers(exported_repo):
    """Values are checked by the batcher's thread once a batch is assembled: the
    request holding NaN (and the one sent as bytes 0..255) is answered the same 400 a
    handler would give, and the requests batched beside them are answered as if alone;
    a large request, served in slices, is checked whole before it is queued."""
    model = encoder(exported_repo)
    rng = np.random.default_rng(1)
    good = [rng.random((1, *model.item_shape), dtype=np.float32) for _ in range(6)]
    nan = good[0].copy()
    nan[0, 3, 4, 0] = np.nan
    bytes_like = np.full((2, *model.item_shape), 200.0, np.float32)
    large = np.ones((100, *model.item_shape), np.float32)
    large[70, 0, 0, 0] = -1.0
    values = IMAGE_VALUES

    async def scenario() -> tuple[list, int]:
        batcher = Batcher(model, Metrics(), max_batch=64, max_delay=0.05, inline_rows=0)
        batcher.start()
        try:
            inputs = [*good[:3], nan, bytes_like, *good[3:], large]
            answers = await asyncio.gather(
                *(batcher.submit(x, values) for x in inputs), return_exceptions=True
            )
            return answers, batcher.depth
        finally:
            await batcher.stop()

    answers, depth = asyncio.run(scenario())
    assert depth == 0
    for x, answer in zip(good, [*answers[:3], *answers[5:8]], strict=True):
        np.testing.assert_allclose(answer[Z_MEAN], model.run(x)[Z_MEAN], atol=1e-5)
    refusals = [answers[3], answers[4], answers[8]]
    assert all(isinstance(r, ApiError) and r.status == 400 for r in refusals), refusals
    assert refusals[0].message == "images contains NaN or Inf; send finite numbers"
    assert refusals[1].message == "pixel values must be in [0, 1], got [200, 200]; divide by 255"
    assert refusals[2].message == "pixel values must be in [0, 1], got [-1, 1]"


def test_a_batch_of_requests_worded_by_two_protocols_is_checked_as_one(exported_repo):
    """Requests checked by one rule but worded for different protocols (``images`` of
    ``/v1/encode``, an Open Inference Protocol input) share a batch and its one check:
    the good ones are answered, and a bad one gets the message of its own protocol."""
    model = encoder(exported_repo)
    rng = np.random.default_rng(2)
    good = [rng.random((1, *model.item_shape), dtype=np.float32) for _ in range(4)]
    bad = good[0].copy()
    bad[0, 5, 5, 0] = np.nan
    v1, v2 = IMAGE_VALUES, kserve.input_values(model)

    async def scenario(requests: list[tuple[np.ndarray, Values]]) -> list:
        metrics = Metrics()
        batcher = Batcher(model, metrics, max_batch=64, max_delay=0.05, inline_rows=0)
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.submit(x, values) for x, values in requests), return_exceptions=True
            )
        finally:
            await batcher.stop()

    answers = asyncio.run(scenario([(x, v1 if i % 2 else v2) for i, x in enumerate(good)]))
    for x, answer in zip(good, answers, strict=True):
        np.testing.assert_allclose(answer[Z_MEAN], model.run(x)[Z_MEAN], atol=1e-5)

    answers = asyncio.run(scenario([(good[1], v1), (bad, v2), (good[2], v1)]))
    assert isinstance(answers[1], ApiError) and answers[1].status == 400
    assert (
        answers[1].message == f"input {model.input_name!r} contains NaN or Inf; send finite numbers"
    )
    for x, answer in zip([good[1], good[2]], [answers[0], answers[2]], strict=True):
        np.testing.assert_allclose(answer[Z_MEAN], model.run(x)[Z_MEAN], atol=1e-5)
