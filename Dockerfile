# The keras-vae service (python -m serving): onnxruntime on uvicorn, the `serve` extra
# only, no TensorFlow. Not built in CI (there is no docker there); the steps it runs
# are those of `pip install ".[serve]"` in a fresh virtualenv. Run by
# deploy/serving/keras-vae.yaml; by hand:
#   docker build -t registry.example.com/keras-vae:0.1.0 .
#   docker run --rm -p 8080:8080 -v "$PWD/artifacts/models:/models:ro" \
#     registry.example.com/keras-vae:0.1.0 --repo /models --host 0.0.0.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the service imports (.dockerignore keeps the rest of the tree out).
WORKDIR /src
COPY pyproject.toml README.md ./
COPY vae_contract/ vae_contract/
COPY vae_runtime/ vae_runtime/
COPY serving/ serving/
RUN pip install ".[serve]" \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin vae \
    && rm -rf /src

WORKDIR /
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "serving"]
CMD ["--repo", "/models", "--host", "0.0.0.0"]
