"""Keep TensorFlow's and TFDS's own chatter out of keras-vae's output, unless ``--verbose``.

TensorFlow prints C++ INFO lines at import and during training, TFDS logs through absl
and draws tqdm bars while it prepares a dataset; in a log file, and worse with two
workers interleaved, they bury keras-vae's own lines. The commands call
:func:`silence_libraries` first thing, because TensorFlow reads its C++ log level only
once, when it is imported. Library users who import keras-vae are left alone.
"""

from __future__ import annotations

import logging
import os

# Set by silence_libraries(); read by keras_vae.data before TFDS draws its bars.
quiet = False


def silence_libraries(verbose: bool = False) -> None:
    """Hide the libraries' INFO/WARNING lines and progress bars (errors still show).

    Call before TensorFlow is imported. A ``TF_CPP_MIN_LOG_LEVEL`` already set by the
    user is kept, so anyone can ask TensorFlow for more without ``--verbose``.
    """
    global quiet
    if verbose:
        return
    quiet = True
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++: errors only
    from absl import logging as absl_logging  # TFDS logs through absl

    absl_logging.set_verbosity(absl_logging.ERROR)
    for name in ("tensorflow", "absl", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def silence_tfds_progress() -> None:
    """Turn TFDS's tqdm bars off, if :func:`silence_libraries` asked for quiet.

    Separate because importing TFDS is deferred until data is needed.
    """
    if quiet:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
