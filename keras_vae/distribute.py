"""tf.distribute for the same train_step: one device, all local devices, or many workers.

The strategy must exist before TensorFlow runs anything (MultiWorkerMirroredStrategy
sets up the cluster's collectives at construction), so training creates it first.
Workers are described by the standard ``TF_CONFIG`` variable; the one with
``task.index`` 0 (or the ``chief`` task, if the cluster has one) is the chief.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keras_vae.config import STRATEGIES
from keras_vae.errors import ConfigError, require_choice

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class Role:
    """Where this process sits in the cluster."""

    is_chief: bool = True
    index: int = 0
    workers: int = 1


def cluster_role(strategy_name: str) -> Role:
    """Read ``TF_CONFIG`` for a multi-worker run; every other run is its own chief."""
    if strategy_name != "multi_worker":
        return Role()
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            "--strategy multi_worker needs TF_CONFIG describing the cluster; "
            "use `python -m keras_vae.launch` locally or set it on each host"
        )
    try:
        tf_config = json.loads(raw)
        cluster, task = tf_config["cluster"], tf_config["task"]
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}, '
            '"task": {"type": "worker", "index": 0}}'
        ) from None
    workers = sum(len(cluster.get(name, [])) for name in ("chief", "worker"))
    is_chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return Role(is_chief=is_chief, index=index if kind == "worker" else 0, workers=workers)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy called ``name`` (one of ``STRATEGIES``).

    A name is checked before TensorFlow is imported, so that a typo costs no start-up.
    """
    require_choice("strategy", name, STRATEGIES)
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def with_shard_policy(dataset, policy: str):
    """Tell tf.data how to split the input between workers (``data``: by element)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = {
        "data": tf.data.experimental.AutoShardPolicy.DATA,
        "auto": tf.data.experimental.AutoShardPolicy.AUTO,
        "off": tf.data.experimental.AutoShardPolicy.OFF,
    }[policy]
    return dataset.with_options(options)


class Replicas:
    """What a custom ``train_step`` must do itself under tf.distribute, and why.

    ``fit`` runs the step once per replica, each on 1/R of the global batch, and the
    optimizer sums the replicas' gradients: :meth:`share` divides a replica's loss by R,
    so that the update is the gradient of the mean over the global batch, whatever R.

    Keras 3.15 averages a multi-worker step's outputs across workers with
    ``reduce(axis=0)``, which fails on scalars: :meth:`outputs` gives each a length-1
    axis that the average removes.
    """

    @staticmethod
    def share(loss):
        import tensorflow as tf

        return loss / tf.distribute.get_strategy().num_replicas_in_sync

    @staticmethod
    def outputs(results: dict) -> dict:
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
            strategy.extended._in_multi_worker_mode()
        )
        if not multi_worker:
            return results
        return {name: tf.reshape(value, (1,)) for name, value in results.items()}
