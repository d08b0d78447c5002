"""keras-vae: a variational autoencoder from Keras 3 training to production serving.

Importing the package is cheap; TensorFlow is loaded only by the modules that
need it (``model``, ``data``, ``train``, ``evaluate``).
"""

__version__ = "0.1.0"
