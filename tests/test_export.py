"""Export: layout, contract names, parity, manifests, versions and atomicity, on a real model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import REPO, run_module

ONNX = "onnx/{}/{}/model.onnx"


def test_repository_layout_and_tf_serving_config(exported_repo):
    for fmt in ("tf", "onnx"):
        for network in ("vae_encoder", "vae_decoder"):
            beside = ["config.pbtxt"] if fmt == "onnx" else []  # Triton's, beside its versions
            assert sorted(p.name for p in (exported_repo / fmt / network).iterdir()) == [
                "1",
                *beside,
            ]
    saved = exported_repo / "tf" / "vae_encoder" / "1"
    assert (saved / "saved_model.pb").is_file() and (saved / "variables").is_dir()
    assert (saved / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 0
    config = (exported_repo / "tf" / "models.config").read_text()
    assert config.count("config {") == 2
    assert f'base_path: "{(exported_repo / "tf" / "vae_decoder").resolve()}"' in config
    assert (
        'base_path: "/models/vae_encoder"'
        in (exported_repo / "tf" / "models.docker.config").read_text()
    )
    assert "max_batch_size" in (exported_repo / "tf" / "batching.config").read_text()
    assert not list(exported_repo.glob(".staging-*"))


def test_savedmodel_signatures_carry_the_contract_names(exported_repo):
    import tensorflow as tf

    expected = {
        "vae_encoder": ({"images": [None, 28, 28, 1]}, {"z_mean", "z_log_var"}),
        "vae_decoder": ({"z": [None, 2]}, {"probs", "logits"}),
    }
    for network, (inputs, outputs) in expected.items():
        loaded = tf.saved_model.load(str(exported_repo / "tf" / network / "1"))
        signature = loaded.signatures["serving_default"]
        specs = signature.structured_input_signature[1]
        assert {name: spec.shape.as_list() for name, spec in specs.items()} == inputs
        assert set(signature.structured_outputs) == outputs


def test_saved_model_cli_shows_exactly_the_contract_names(exported_repo):
    cli = shutil.which("saved_model_cli", path=str(REPO / ".venv" / "bin")) or shutil.which(
        "saved_model_cli"
    )
    assert cli, "saved_model_cli comes with tensorflow"
    shown = subprocess.run(
        [cli, "show", "--dir", str(exported_repo / "tf" / "vae_encoder" / "1"), "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "inputs['images']" in shown
    assert "outputs['z_mean']" in shown and "outputs['z_log_var']" in shown
    assert "(-1, 28, 28, 1)" in shown


def test_onnx_graphs_have_contract_names_dynamic_batch_and_metadata(exported_repo):
    import onnx

    for network, inputs, outputs in [
        ("vae_encoder", ["images"], ["z_mean", "z_log_var"]),
        ("vae_decoder", ["z"], ["probs", "logits"]),
    ]:
        model = onnx.load(str(exported_repo / ONNX.format(network, 1)))
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == inputs
        assert [o.name for o in model.graph.output] == outputs
        for value in [*model.graph.input, *model.graph.output]:
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
        assert model.opset_import[0].version >= 17
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["keras_vae.latent_dim"] == "2"
        assert meta["keras_vae.model_version"] == "1"
        assert meta["keras_vae.dataset"] == "mnist"
        assert float(meta["keras_vae.test_elbo"]) < 0
        ops = {node.op_type for node in model.graph.node}
        assert not any("Random" in op for op in ops), ops


def test_manifests_record_checksums_parity_and_source(exported_repo, trained_run):
    from export.manifest import sha256

    export_ids = set()
    for folder in [
        exported_repo / fmt / n / "1"
        for fmt in ("tf", "onnx")
        for n in ("vae_encoder", "vae_decoder")
    ]:
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["version"] == 1 and manifest["latent_dim"] == 2
        assert manifest["source_run"]["run"] == trained_run.name
        assert manifest["source_run"]["config"]["model"]["latent_dim"] == 2
        assert {"tensorflow-cpu", "tf2onnx", "onnxruntime"} <= set(manifest["tools"])
        for name, entry in manifest["files"].items():
            assert sha256(folder / name) == entry["sha256"]
            assert (folder / name).stat().st_size == entry["bytes"]
        results = manifest["parity"]["results"]
        assert {r["fmt"] for r in results} == {"tf_saved_model", "onnx"}
        for result in results:
            assert result["examples"] == 200
            assert all(0 <= d <= 1e-4 for d in result["max_abs_diff"].values())
        assert manifest["parity"]["tolerance"] == {"atol": 1e-4, "rtol": 1e-5}
        export_ids.add(manifest["export_id"])
    assert len(export_ids) == 1  # what ties the four folders of one export together


def test_parity_tolerance_grows_with_the_magnitude_of_a_value():
    from export.parity import ParityError, compare

    # float32 rounding of a logit of -30 through a deep decoder: 1.4e-4 off, 5e-6 relative.
    reference = {"logits": np.array([[-30.0, 0.5]]), "probs": np.array([[1e-13, 0.62]])}
    candidate = {"logits": np.array([[-30.00014, 0.50002]]), "probs": reference["probs"]}
    report = compare("vae_decoder", "onnx", reference, candidate, atol=1e-4, rtol=1e-5)
    assert report.max_abs_diff["logits"] == pytest.approx(1.4e-4, rel=1e-3)
    with pytest.raises(ParityError, match=r"logits differs .* where Keras gives -30"):
        compare("vae_decoder", "onnx", reference, candidate, atol=1e-4, rtol=0.0)
    near_zero = {"logits": np.array([[-30.0, 0.5003]]), "probs": reference["probs"]}
    with pytest.raises(ParityError, match="where Keras gives 0.5"):
        compare("vae_decoder", "onnx", reference, near_zero, atol=1e-4, rtol=1e-5)
    broken = {"logits": np.array([[np.nan, 0.5]]), "probs": reference["probs"]}
    with pytest.raises(ParityError, match="nothing was exported"):
        compare("vae_decoder", "onnx", reference, broken, atol=1e-4, rtol=1e-5)


def test_onnx_and_savedmodel_match_the_keras_model_on_real_images(
    exported_repo, trained_run, splits
):
    from export.build import keras_outputs
    from export.onnx_graph import onnx_outputs
    from export.savedmodel import savedmodel_outputs
    from keras_vae.data import held_out_inputs
    from keras_vae.runs import load_vae

    vae = load_vae(trained_run / "model.keras")
    images = held_out_inputs(splits.test_images[-37:], "dynamic")  # odd batch, other images
    reference = keras_outputs(vae, "vae_encoder", images)
    for outputs in (
        onnx_outputs(exported_repo / ONNX.format("vae_encoder", 1), "vae_encoder", images),
        savedmodel_outputs(exported_repo / "tf/vae_encoder/1", "vae_encoder", images),
    ):
        for name in ("z_mean", "z_log_var"):
            np.testing.assert_allclose(outputs[name], reference[name], atol=1e-4)


def test_onnx_files_run_with_onnxruntime_and_numpy_only(exported_repo, tmp_path):
    images = np.random.default_rng(3).random((5, 28, 28, 1), dtype=np.float32)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import onnxruntime as ort
        repo = {str(exported_repo)!r}
        encoder = ort.InferenceSession(repo + "/onnx/vae_encoder/1/model.onnx")
        decoder = ort.InferenceSession(repo + "/onnx/vae_decoder/1/model.onnx")
        images = np.load({str(tmp_path / "images.npy")!r})
        z_mean, z_log_var = encoder.run(["z_mean", "z_log_var"], {{"images": images}})
        eps = np.random.default_rng(0).standard_normal(z_mean.shape).astype(np.float32)
        z = z_mean + np.exp(0.5 * z_log_var) * eps
        (probs,) = decoder.run(["probs"], {{"z": z}})
        print(json.dumps({{
            "tensorflow_imported": any(m.split(".")[0] == "tensorflow" for m in sys.modules),
            "z_mean": list(z_mean.shape), "probs": list(probs.shape),
            "probs_min": float(probs.min()), "probs_max": float(probs.max()),
        }}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["tensorflow_imported"] is False
    assert report["z_mean"] == [5, 2] and report["probs"] == [5, 28, 28, 1]
    assert 0.0 <= report["probs_min"] <= report["probs_max"] <= 1.0


def test_versions_increment_are_never_overwritten_and_stale_staging_goes(trained_run, tmp_path):
    from export.build import export_run
    from keras_vae.errors import KerasVaeError

    repo = tmp_path / "models"
    # What a killed export leaves: a staging folder no live process holds. The next
    # export removes it (tests/test_repository.py kills real processes).
    stale = repo / ".staging-killed"
    (stale / "onnx").mkdir(parents=True)
    (stale / "onnx" / "model.onnx").write_bytes(bytes(1000))
    assert export_run(trained_run, repo, examples=50).version == 1
    assert not stale.exists()
    assert export_run(trained_run, repo, examples=50).version == 2
    before = (repo / ONNX.format("vae_encoder", 1)).read_bytes()
    with pytest.raises(KerasVaeError, match="version 1 already exists"):
        export_run(trained_run, repo, version=1, examples=50)
    assert (repo / ONNX.format("vae_encoder", 1)).read_bytes() == before
    assert export_run(trained_run, repo, version=7, examples=50).version == 7
    assert sorted(int(p.name) for p in (repo / "tf" / "vae_decoder").iterdir()) == [1, 2, 7]


def test_a_failed_parity_check_publishes_nothing(trained_run, tmp_path):
    from export.build import export_run
    from export.parity import ParityError

    repo = tmp_path / "models"
    with pytest.raises(ParityError, match="nothing was exported"):
        export_run(trained_run, repo, atol=1e-12, examples=50, rtol=0.0)
    leftovers = [p for p in repo.rglob("*")] if repo.exists() else []
    assert leftovers == []


def test_export_cli_reports_parity_and_explains_bad_inputs(trained_run, tmp_path):
    result = run_module(
        "export", str(trained_run), "--repo", str(tmp_path / "m"), "--parity-examples", "20"
    )
    assert result.returncode == 0, result.stderr
    assert "version 1 published" in result.stdout and "onnx" in result.stdout

    missing = run_module("export", str(tmp_path / "nope"), "--repo", str(tmp_path / "m"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    unwritable = run_module("export", str(trained_run), "--repo", str(blocker / "repo"))
    assert unwritable.returncode == 2 and "cannot write" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr


def test_a_model_file_that_is_not_a_vae_is_refused(trained_run, tmp_path):
    import keras

    fake = tmp_path / "fake-run"
    fake.mkdir()
    shutil.copy(trained_run / "config.json", fake / "config.json")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]).save(fake / "model.keras")
    result = run_module("export", str(fake), "--repo", str(tmp_path / "m"))
    assert result.returncode == 2 and "not a keras_vae VAE" in result.stderr
    (fake / "model.keras").write_bytes(b"garbage")
    result = run_module("export", str(fake), "--repo", str(tmp_path / "m"))
    assert result.returncode == 2 and "cannot load" in result.stderr
    assert not (tmp_path / "m" / "tf").exists()


def test_export_without_tf_serving_protos_is_refused_before_any_work(
    trained_run, tmp_path, monkeypatch
):
    """The warm-up records need tensorflow-serving-api; its absence is said in one line, first."""
    from export.build import export_run
    from keras_vae.errors import KerasVaeError

    for name in [m for m in sys.modules if m.startswith("tensorflow_serving")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorflow_serving", None)  # import fails
    with pytest.raises(
        KerasVaeError, match=r'pip install --no-deps "tensorflow-serving-api==2\.21'
    ):
        export_run(trained_run, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
