"""Exported ONNX models opened with onnxruntime: the one reader of ``<repo>/onnx``.

The service (``serving``), its in-process twin ``LocalVae``, ``keras_vae.evaluate --onnx``
and export all open models through here, so each measures and serves what the others
do. It sits below all of them: onnxruntime and numpy only, no TensorFlow, no HTTP stack,
and nothing here imports ``serving`` or ``keras_vae`` (training imports neither it nor
onnxruntime). Which versions are complete and whether their files match their manifests
is decided by :mod:`vae_contract.repository`, which needs no onnxruntime at all.

- :mod:`vae_runtime.engine`: :class:`OnnxModel`, one session with its contract checked.
- :mod:`vae_runtime.repository`: :func:`load`, :func:`load_all` and :func:`open_version`,
  the verified versions as sessions. Failures are ``vae_contract.ModelRepositoryError``.
"""

from __future__ import annotations

from vae_runtime.engine import OnnxModel
from vae_runtime.repository import load, load_all, open_version

__all__ = ["OnnxModel", "load", "load_all", "open_version"]
