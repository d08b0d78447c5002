"""Where batcher.py, kserve.py, tfserving.py and vae_api.py still import :class:`OnnxModel`
from; it is defined in :mod:`vae_runtime.engine`, below the service and keras_vae alike."""

from __future__ import annotations

from vae_runtime.engine import OnnxModel

__all__ = ["OnnxModel"]
