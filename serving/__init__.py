"""An onnxruntime HTTP service for the exported VAE; it never imports TensorFlow.

``python -m serving --repo artifacts/models`` serves the latest ONNX versions;
:mod:`serving.client` calls it, or runs the ONNX files in-process.
"""
