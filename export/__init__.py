"""Trained run -> deployable, versioned artifacts: SavedModels for TF Serving, ONNX graphs.

Run ``python -m export --help``. The tensor names are the contract shared with
``serving/`` and with other teams; they live here and in the artifacts' metadata.
"""
