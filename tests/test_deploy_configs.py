"""The servers' configuration files, parsed by the servers' own protobuf definitions.

TF Serving's files are read with ``tensorflow_serving`` (tensorflow-serving-api, installed
``--no-deps`` by ``make install``) and Triton's with ``tritonclient.grpc.model_config_pb2``;
a file that only looks right to a string comparison fails here. The real Triton core of
``nvidia-pytriton`` (in ``.venv-peers``, built by ``make bench-peers``) then loads the ONNX
repository, when it is there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_module
from vae_contract import (
    DECODER,
    ENCODER,
    INPUTS,
    MAX_BATCH_SIZE,
    MAX_REQUEST_ITEMS,
    NETWORKS,
    OUTPUTS,
    SIGNATURE,
)


def model_server_config():
    """An empty ``tensorflow.serving.ModelServerConfig`` (imported here: it loads TensorFlow)."""
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2.ModelServerConfig()


def batching_parameters_class():
    """``tensorflow.serving.BatchingParameters``, which tensorflow-serving-api does not ship.

    Declared here with the field numbers and types of TF Serving's
    ``tensorflow_serving/servables/tensorflow/session_bundle_config.proto`` (2.21), beside
    a ``SessionBundleConfig`` that holds it in field 3, as ``--batching_parameters_file``
    is read. Only the text form is parsed, and it is parsed by field name, so a misspelt
    or unknown field in our file fails as it would in the server.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    proto = descriptor_pb2.FileDescriptorProto(
        name="keras_vae_test/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    field = descriptor_pb2.FieldDescriptorProto
    batching = proto.message_type.add(name="BatchingParameters")
    for name, number, kind in [
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
        ("enable_large_batch_splitting", 8, "BoolValue"),
        ("max_execution_batch_size", 9, "Int64Value"),
    ]:
        batching.field.add(
            name=name,
            number=number,
            type=field.TYPE_MESSAGE,
            type_name=f".google.protobuf.{kind}",
            label=field.LABEL_OPTIONAL,
        )
    batching.field.add(
        name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED
    )
    batching.field.add(
        name="pad_variable_length_inputs",
        number=7,
        type=field.TYPE_BOOL,
        label=field.LABEL_OPTIONAL,
    )
    bundle = proto.message_type.add(name="SessionBundleConfig")
    bundle.field.add(
        name="batching_parameters",
        number=3,
        type=field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.BatchingParameters",
        label=field.LABEL_OPTIONAL,
    )
    pool.Add(proto)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
        get(pool.FindMessageTypeByName("tensorflow.serving.SessionBundleConfig")),
    )


def test_batching_config_accepts_every_request_the_service_accepts(exported_repo):
    from google.protobuf import text_format

    from serving.config import ServingConfig

    batching_parameters, session_bundle_config = batching_parameters_class()
    text = (exported_repo / "tf" / "batching.config").read_text()
    params = text_format.Parse(text, batching_parameters())
    service = ServingConfig()
    # One place for the sizes: the service's defaults are the contract's.
    assert service.max_request_items == MAX_REQUEST_ITEMS == 1024
    assert service.max_batch_size == MAX_BATCH_SIZE == 64
    # A request of up to 1,024 rows is taken, and split into model calls of 64.
    assert params.max_batch_size.value == MAX_REQUEST_ITEMS
    assert params.enable_large_batch_splitting.value is True
    assert params.max_execution_batch_size.value == MAX_BATCH_SIZE
    assert params.max_execution_batch_size.value <= params.max_batch_size.value
    assert params.batch_timeout_micros.value == 2000
    assert params.max_enqueued_batches.value == 100
    assert params.num_batch_threads.value == 2
    assert not params.allowed_batch_sizes and not params.pad_variable_length_inputs
    assert not params.HasField("thread_pool_name")
    # The server reads the file into SessionBundleConfig.batching_parameters.
    bundle = text_format.Parse(f"batching_parameters {{\n{text}}}\n", session_bundle_config())
    assert bundle.batching_parameters == params


def test_models_configs_parse_with_tf_serving_protos_and_name_real_folders(exported_repo):
    from google.protobuf import text_format

    tf_root = exported_repo / "tf"
    for name, base in [("models.config", tf_root.resolve()), ("models.docker.config", "/models")]:
        config = text_format.Parse((tf_root / name).read_text(), model_server_config())
        entries = config.model_config_list.config
        assert [e.name for e in entries] == list(NETWORKS)
        for entry in entries:
            assert entry.base_path == f"{base}/{entry.name}"
            assert entry.model_platform == "tensorflow"
            assert not entry.HasField("model_version_policy")  # default: the latest version
    for network in NETWORKS:  # the host paths lead to the SavedModels
        assert (tf_root.resolve() / network / "1" / "saved_model.pb").is_file()


def test_warmup_records_parse_as_prediction_logs_and_replay(exported_repo):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    for network in NETWORKS:
        folder = exported_repo / "tf" / network / "1"
        records = tf.data.TFRecordDataset(str(folder / "assets.extra/tf_serving_warmup_requests"))
        logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]
        assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
        signature = tf.saved_model.load(str(folder)).signatures[SIGNATURE]
        sizes = []
        for log in logs:
            request = log.predict_log.request
            assert request.model_spec.name == network
            assert request.model_spec.signature_name == SIGNATURE
            assert list(request.inputs) == [INPUTS[network]]
            batch = tf.make_ndarray(request.inputs[INPUTS[network]])
            assert batch.dtype == np.float32
            sizes.append(len(batch))
            outputs = signature(**{INPUTS[network]: tf.constant(batch)})
            assert set(OUTPUTS[network]) <= set(outputs)
            assert all(v.shape[0] == len(batch) for v in outputs.values())
        assert sizes == [1, 8, MAX_BATCH_SIZE]


def onnx_dims(value_info) -> list[int | str]:
    return [d.dim_value or d.dim_param for d in value_info.type.tensor_type.shape.dim]


def expected_triton_config(network: str, model_path: Path):
    """What config.pbtxt must say, from the ONNX graph itself (names, dims) and the contract."""
    import onnx
    from tritonclient.grpc import model_config_pb2 as mc

    graph = onnx.load(str(model_path)).graph
    (graph_input,) = graph.input
    dims = {v.name: onnx_dims(v) for v in [*graph.input, *graph.output]}
    assert all(not isinstance(d[0], int) for d in dims.values())  # a dynamic batch dimension
    config = mc.ModelConfig(
        name=network,
        backend="onnxruntime",
        max_batch_size=MAX_REQUEST_ITEMS,
        version_policy=mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1)),
        input=[
            mc.ModelInput(
                name=graph_input.name, data_type=mc.TYPE_FP32, dims=dims[graph_input.name][1:]
            )
        ],
        output=[
            mc.ModelOutput(name=o.name, data_type=mc.TYPE_FP32, dims=dims[o.name][1:])
            for o in graph.output
        ],
        instance_group=[mc.ModelInstanceGroup(count=1, kind=mc.ModelInstanceGroup.KIND_CPU)],
        dynamic_batching=mc.ModelDynamicBatching(
            preferred_batch_size=[16, MAX_BATCH_SIZE], max_queue_delay_microseconds=2000
        ),
    )
    for size in (1, MAX_BATCH_SIZE):
        warmup = config.model_warmup.add(name=f"zeros_batch_{size}", batch_size=size)
        warmup.inputs[graph_input.name].CopyFrom(
            mc.ModelWarmup.Input(
                data_type=mc.TYPE_FP32, dims=dims[graph_input.name][1:], zero_data=True
            )
        )
    return config


def test_triton_configs_parse_with_tritons_proto_and_match_the_graphs(exported_repo):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    for network in NETWORKS:
        folder = exported_repo / "onnx" / network
        config = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
        expected = expected_triton_config(network, folder / "1" / "model.onnx")
        assert config == expected, text_format.MessageToString(config)
        # The values, spelled out (the comparison above also rules out any other field).
        assert config.name == network == folder.name
        assert config.backend == "onnxruntime" and not config.platform
        assert config.max_batch_size == MAX_REQUEST_ITEMS
        assert config.version_policy.WhichOneof("policy_choice") == "latest"
        assert [i.name for i in config.input] == [INPUTS[network]]
        assert [o.name for o in config.output] == list(OUTPUTS[network])
        latent = 2  # the session's trained run
        in_dims = [28, 28, 1] if network == ENCODER else [latent]
        out_dims = [latent] if network == ENCODER else [28, 28, 1]
        assert list(config.input[0].dims) == in_dims
        assert all(list(o.dims) == out_dims for o in config.output)
        batching = config.dynamic_batching
        assert max(batching.preferred_batch_size) <= config.max_batch_size
        assert [w.batch_size for w in config.model_warmup] == [1, MAX_BATCH_SIZE]
        assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert {DECODER, ENCODER} == {p.parent.name for p in exported_repo.glob("onnx/*/config.pbtxt")}


def test_config_command_rewrites_models_config_for_a_moved_repository(exported_repo, tmp_path):
    from google.protobuf import text_format

    moved = tmp_path / "moved"
    shutil.copytree(exported_repo, moved)
    (moved / "tf" / "batching.config").unlink()
    (moved / "onnx" / ENCODER / "config.pbtxt").unlink()

    def base_paths() -> list[str]:
        text = (moved / "tf" / "models.config").read_text()
        config = text_format.Parse(text, model_server_config())
        return [entry.base_path for entry in config.model_config_list.config]

    # Copied as is, it still names the old place: the silent break this command fixes.
    assert base_paths()[0].startswith(str(exported_repo.resolve()))
    done = run_module("export", "config", "--repo", str(moved), timeout=60)
    assert done.returncode == 0, done.stderr
    assert base_paths() == [f"{(moved / 'tf').resolve()}/{n}" for n in NETWORKS]
    for path in [moved / "tf" / "batching.config", moved / "onnx" / ENCODER / "config.pbtxt"]:
        assert path.is_file() and str(path) in done.stdout
    assert (moved / "onnx" / ENCODER / "config.pbtxt").read_text() == (
        exported_repo / "onnx" / ENCODER / "config.pbtxt"
    ).read_text()

    done = run_module("export", "config", "--repo", str(moved), "--base", "/srv/vae/tf")
    assert done.returncode == 0, done.stderr
    assert base_paths() == [f"/srv/vae/tf/{n}" for n in NETWORKS]
    printed = run_module("export", "config", "--repo", str(moved), "--base", "gs://b/m", "--print")
    assert printed.returncode == 0 and 'base_path: "gs://b/m/vae_decoder"' in printed.stdout
    assert base_paths() == [f"/srv/vae/tf/{n}" for n in NETWORKS]  # --print writes nothing
    leftovers = [p for p in moved.rglob("*") if p.name.startswith("partial-")]  # atomic.py
    assert leftovers == []

    refused = run_module("export", "config", "--repo", str(moved), "--base", "models")
    assert refused.returncode == 2
    assert "--base must be an absolute path or a URI" in refused.stderr
    assert "Traceback" not in refused.stderr
    missing = run_module("export", "config", "--repo", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


PEERS_TRITON = REPO / ".venv-peers" / "lib"
SKIP_TRITON = (
    "the real Triton core comes with nvidia-pytriton in .venv-peers, which is absent "
    "(as in CI); build it with `make bench-peers`, then run this test again"
)


def triton_core() -> Path | None:
    """The ``tritonserver`` folder inside .venv-peers' pytriton package, if installed."""
    found = sorted(
        PEERS_TRITON.glob("python3*/site-packages/pytriton/tritonserver/bin/tritonserver")
    )
    return found[0].parents[1] if found else None


def run_triton(core: Path, repository: Path) -> tuple[int, str]:
    """Start Triton on ``repository`` without autocompletion; it stops by itself on errors."""
    done = subprocess.run(
        [
            str(core / "bin" / "tritonserver"),
            f"--model-repository={repository}",
            f"--backend-directory={core / 'backends'}",
            "--disable-auto-complete-config",  # our config.pbtxt alone must be complete
            "--allow-http=false",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--exit-on-error=true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def test_the_real_triton_core_accepts_the_configs_and_stops_only_at_the_backend(
    exported_repo, tmp_path
):
    """Triton 2.51 parses and validates each config.pbtxt, then needs onnxruntime's backend.

    pytriton's Triton has only the Python backend, so loading must fail there and nowhere
    earlier. A copy whose config breaks one rule shows that the validation is real.
    """
    core = triton_core()
    if core is None:
        pytest.skip(SKIP_TRITON)
    good = tmp_path / "good"
    shutil.copytree(exported_repo / "onnx", good)
    code, log = run_triton(core, good)
    assert code != 0, log
    backend = "unable to find backend library for backend 'onnxruntime'"
    for network in NETWORKS:
        assert f'"loading: {network}:1"' in log, log
        assert f"failed to load '{network}' version 1: Invalid argument: {backend}" in log, log
    errors = [line for line in log.splitlines() if re.match(r"E\d{4} ", line)]
    others = [e for e in errors if backend not in e and "CudaDriverHelper" not in e]
    assert others == [], log  # no GPU here: the CUDA line is expected, nothing else

    bad = tmp_path / "bad"
    shutil.copytree(exported_repo / "onnx", bad)
    config = bad / ENCODER / "config.pbtxt"
    config.write_text(
        config.read_text().replace(f"max_batch_size: {MAX_REQUEST_ITEMS}", "max_batch_size: 8")
    )
    code, log = run_triton(core, bad)
    assert code != 0
    assert "dynamic batching preferred size must be <= max batch size for vae_encoder" in log, log
    assert f'"loading: {ENCODER}:1"' not in log and f'"loading: {DECODER}:1"' in log


def test_tf_serving_api_matches_tensorflow_and_make_installs_it_without_deps():
    """Its protos must be those of the TensorFlow release installed (2.21 with 2.21)."""
    from importlib.metadata import version

    from export.tf_serving_config import TF_SERVING_API

    tensorflow = version("tensorflow-cpu").split(".")[:2]
    assert version("tensorflow-serving-api").split(".")[:2] == tensorflow
    assert f"tensorflow-serving-api=={'.'.join(tensorflow)}.*" == TF_SERVING_API
    makefile = (REPO / "Makefile").read_text()
    assert f'pip install --quiet --no-deps "{TF_SERVING_API}"' in makefile
