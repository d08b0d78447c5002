"""The int8 variant: quantized from a real export, measured, refused or published, served.

The session's small run (latent 2, 3 epochs) is quantized with a smaller calibration set and
NLL protocol than `make export`'s, for speed; the figures are real all the same. Each test
works on a copy of the shared export, which other tests expect as it is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import pytest

from tests.conftest import REPO, run_module
from tests.serving_helpers import running_service
from vae_contract import DECODER, ENCODER, INT8, NETWORKS, model_name

SMALL = {"calibration_images": 256, "nll_images": 100, "nll_k": 10}
SMALL_FLAGS = ["--calibration-images", "256", "--nll-images", "100", "--nll-k", "10"]
ENCODER_INT8, DECODER_INT8 = (model_name(n, INT8) for n in NETWORKS)


@pytest.fixture(scope="module")
def int8_repo(exported_repo, trained_run, tmp_path_factory):
    """A copy of the export with the int8 variant of version 1 published beside it."""
    from export.quantize import quantize_version
    from keras_vae.runs import load_config

    repo = tmp_path_factory.mktemp("int8") / "models"
    shutil.copytree(exported_repo, repo)
    result = quantize_version(repo, 1, load_config(trained_run), progress=False, **SMALL)
    assert [p.relative_to(repo).as_posix() for p in result.folders] == [
        f"onnx/{ENCODER_INT8}/1",
        f"onnx/{DECODER_INT8}/1",
    ]
    return repo


def session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_int8_graphs_keep_the_contract_and_are_qdq(int8_repo):
    import onnx

    for network in NETWORKS:
        ours = session(int8_repo / "onnx" / network / "1" / "model.onnx")
        theirs = session(int8_repo / "onnx" / model_name(network, INT8) / "1" / "model.onnx")
        for get in ("get_inputs", "get_outputs"):
            expected = [(t.name, t.shape, t.type) for t in getattr(ours, get)()]
            assert [(t.name, t.shape, t.type) for t in getattr(theirs, get)()] == expected
        model = onnx.load(str(int8_repo / "onnx" / model_name(network, INT8) / "1" / "model.onnx"))
        ops = {node.op_type for node in model.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        metadata = {p.key: p.value for p in model.metadata_props}
        assert metadata["keras_vae.variant"] == INT8
        assert metadata["keras_vae.source_model"] == network
        assert metadata["keras_vae.latent_dim"] == "2"  # the float32 graph's, kept
    assert [t.shape for t in theirs.get_outputs()] == [["batch", 28, 28, 1]] * 2


def test_int8_outputs_stay_close_to_float32(int8_repo, splits):
    """Tolerances from 8-bit activations: a uint8 grid over a calibrated range of width R
    rounds each value by up to R/510, and a few such layers move z_mean by a small part of
    its spread over the data and the Bernoulli means (the output layer stays float) by a
    fraction of a percent on average. The README's 5-epoch model gave mean |diff| 0.015 in
    z_mean (spread ~1) and 0.0015 in probs, max 0.063. The bounds, several times that,
    fail a broken quantization (wrong scales or ranges: errors the size of the values)
    without failing on rounding; the NLL check is the finer test."""
    from tests.serving_helpers import pixels

    images = pixels(splits, 256)
    z = np.random.default_rng(3).standard_normal((256, 2)).astype(np.float32)
    feeds = {ENCODER: {"images": images}, DECODER: {"z": z}}
    outputs = {}
    for network in NETWORKS:
        for variant, name in (("float32", network), (INT8, model_name(network, INT8))):
            graph = session(int8_repo / "onnx" / name / "1" / "model.onnx")
            names = [o.name for o in graph.get_outputs()]
            outputs[network, variant] = dict(
                zip(names, graph.run(names, feeds[network]), strict=True)
            )
    z_mean = outputs[ENCODER, "float32"]["z_mean"]
    spread = z_mean.std(axis=0).mean()
    error = np.abs(outputs[ENCODER, INT8]["z_mean"] - z_mean)
    assert error.mean() < 0.1 * spread, (error.mean(), spread)
    probs = np.abs(outputs[DECODER, INT8]["probs"] - outputs[DECODER, "float32"]["probs"])
    assert probs.mean() < 0.02 and probs.max() < 0.5, (probs.mean(), probs.max())


def test_the_manifest_records_source_calibration_speed_and_nll_cost(int8_repo):
    from vae_contract.repository import scan_onnx, verify

    verified = verify(scan_onnx(int8_repo, INT8).choose(1))  # the reader's checks pass
    for network in NETWORKS:
        manifest = verified.manifests[network]
        source = json.loads((int8_repo / "onnx" / network / "1" / "manifest.json").read_text())
        assert manifest["model_name"] == model_name(network, INT8)
        variant = manifest["variant"]
        assert variant["source"] == {
            "model_name": network,
            "version": 1,
            "export_id": source["export_id"],
            "sha256": source["files"]["model.onnx"]["sha256"],
        }
        assert manifest["source_run"] == source["source_run"]
        assert variant["quantization"]["format"] == "QDQ"
        assert variant["calibration"]["split"] == "train"
        assert variant["calibration"]["images"] == 256
        timings = variant["speed"]["timings"]
        assert [t["batch"] for t in timings] == [1, 64]
        for t in timings:  # measured on a shared machine: present and sane, not a value
            assert t["float32_ms"] > 0 and t["int8_ms"] > 0 and 0 < t["speedup"] < 100
            assert t["calls_per_round"] >= 1
        assert "intra_op_num_threads=1" in variant["speed"]["method"]
        nll = variant["nll"]
        assert (nll["k"], nll["images"], nll["seed"]) == (10, 100, 0)
        assert nll["nll_cost"] == pytest.approx(
            nll["int8_test_nll"] - nll["float32_test_nll"], abs=1e-3
        )
        assert abs(nll["nll_cost"]) < 1.0 and nll["max_nll_increase"] == 1.0
        assert 50 < nll["float32_test_nll"] < 400  # nats per MNIST image, a real figure


def test_a_cost_above_the_limit_publishes_nothing_of_the_variant(exported_repo, tmp_path, capsys):
    """The command line's own entry point, in this process (TensorFlow is loaded already):
    run_cli's return value is the process's exit status."""
    from export.__main__ import main
    from keras_vae.errors import run_cli

    repo = tmp_path / "models"
    shutil.copytree(exported_repo, repo)
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))
    argv = ["quantize", "--repo", str(repo), "--max-nll-increase", "-1", *SMALL_FLAGS]
    assert run_cli(main, argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: int8 variant of version 1 not published: its test NLL")
    assert "above --max-nll-increase -1; version 1 (float32) stays published" in lines[-1]
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before  # no staging left


def test_a_variant_is_never_overwritten(int8_repo):
    done = run_module("export", "quantize", "--repo", str(int8_repo), "--version", "1")
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        "exists; a variant is never overwritten (remove it first)"
    ), done.stderr


def test_triton_configs_of_the_variant_parse(int8_repo):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for network in NETWORKS:
        configs = {}
        for name in (network, model_name(network, INT8)):
            text = (int8_repo / "onnx" / name / "config.pbtxt").read_text()
            configs[name] = text_format.Parse(text, model_config_pb2.ModelConfig())
        variant = configs[model_name(network, INT8)]
        assert variant.name == model_name(network, INT8)
        variant.name = network
        assert variant == configs[network]  # the same tensors, sizes and batching


def test_float32_readers_ignore_the_variant_and_the_service_serves_it(int8_repo, splits):
    from tests.serving_helpers import pixels
    from vae_runtime import load_all

    served = load_all(int8_repo)
    assert {m.path.parent.parent.name for v in served.values() for m in v.values()} == {
        ENCODER,
        DECODER,
    }
    images = pixels(splits, 4)
    graph = session(int8_repo / "onnx" / ENCODER_INT8 / "1" / "model.onnx")
    expected = graph.run(["z_mean"], {"images": images})[0]
    with running_service(int8_repo, "--variant", INT8, "--poll-s", "0") as url:
        answer = httpx.post(url + "/v1/encode", json={"images": images.tolist()}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["version"] == 1
        np.testing.assert_allclose(np.array(body["z_mean"]), expected, atol=1e-5)
        served = httpx.get(url + "/readyz", timeout=10).json()["models"]
        for network in NETWORKS:  # each graph says which build it is
            assert served[network]["latest"]["metadata"]["keras_vae.variant"] == INT8


def test_the_service_refuses_a_variant_the_repository_lacks(exported_repo):
    done = run_module("serving", "--repo", str(exported_repo), "--variant", INT8, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert 'make export ARGS="--quantize int8"' in done.stderr


# Publishes version 1's float32 pair again as its int8 variant, with the real staging() and
# publish(), and is killed by SIGKILL after the first of its two renames.
KILLED_VARIANT_PUBLISH = textwrap.dedent(
    """
    import json, os, shutil, signal, sys, uuid
    from pathlib import Path
    from export import repository

    repo = Path(sys.argv[1])
    targets = repository.variant_dirs(1, "int8")
    export_id = uuid.uuid4().hex
    with repository.staging(repo) as stage:
        for (fmt, network), relative in targets.items():
            shutil.copytree(repo / fmt / network / "1", stage / relative)
            manifest = json.loads((stage / relative / "manifest.json").read_text())
            manifest.update(model_name=relative.parent.name, export_id=export_id)
            (stage / relative / "manifest.json").write_text(json.dumps(manifest))
        rename = os.rename

        def rename_then_die(source, target):
            rename(source, target)
            os.kill(os.getpid(), signal.SIGKILL)

        os.rename = rename_then_die
        repository.publish(stage, repo, 1, export_id, targets)
    """
)


def test_a_variant_killed_while_publishing_is_removed_by_the_next_export(exported_repo, tmp_path):
    from export.repository import staging
    from vae_contract import ModelRepositoryError
    from vae_runtime import load_all

    repo = tmp_path / "models"
    shutil.copytree(exported_repo, repo)
    killed = subprocess.run([sys.executable, "-c", KILLED_VARIANT_PUBLISH, str(repo)], cwd=REPO)
    assert killed.returncode == -9
    assert (repo / "onnx" / ENCODER_INT8 / "1").is_dir()
    assert not (repo / "onnx" / DECODER_INT8 / "1").exists()
    incomplete = r"no complete version of the int8 variant \(only incomplete versions: \[1\]\)"
    with pytest.raises(ModelRepositoryError, match=incomplete):
        load_all(repo, variant=INT8)
    assert set(load_all(repo)) == {ENCODER, DECODER}  # the float32 pair is served meanwhile
    with staging(repo):  # what the next export does first
        pass
    assert not (repo / "onnx" / ENCODER_INT8 / "1").exists()
    assert (repo / "onnx" / ENCODER / "1" / "model.onnx").is_file()
