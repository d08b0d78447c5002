"""The model repository under faults: killed exports, flipped bits, swapped networks.

Every test works on a copy of the real exported repository (the session's small run),
and loads it with the same loader the service, LocalVae and ``evaluate --onnx`` use.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_module

ENCODER, DECODER = "vae_encoder", "vae_decoder"

# Publishes a copy of version 1 as version 2 with the real staging() and publish(), and
# is killed with SIGKILL after ``renames`` of the four renames: what kill -9 at that
# moment leaves behind. Only the timing of the kill is arranged; the shipped code runs.
KILLED_PUBLISH = textwrap.dedent(
    """
    import json, os, shutil, signal, sys, uuid
    from pathlib import Path
    from export import repository

    repo, renames = Path(sys.argv[1]), int(sys.argv[2])
    export_id = uuid.uuid4().hex
    with repository.staging(repo) as stage:
        for relative in repository.version_dirs(repo, 2).values():
            shutil.copytree(repo / relative.parent / "1", stage / relative)
            manifest = json.loads((stage / relative / "manifest.json").read_text())
            manifest.update(version=2, export_id=export_id)
            (stage / relative / "manifest.json").write_text(json.dumps(manifest))
        rename, done = os.rename, []

        def rename_then_die(source, target):
            if len(done) == renames:
                os.kill(os.getpid(), signal.SIGKILL)
            rename(source, target)
            done.append(target)

        os.rename = rename_then_die
        repository.publish(stage, repo, 2, export_id)
        os.kill(os.getpid(), signal.SIGKILL)  # after the last rename, before the clean-up
    """
)

# Holds a staging folder (prints its path), then dies by SIGKILL or, told on stdin, exits.
HOLD_STAGING = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from export.repository import staging

    with staging(Path(sys.argv[1])) as stage:
        (stage / "partial.bin").write_bytes(bytes(1 << 20))
        print(stage, flush=True)
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.read()
    """
)


@pytest.fixture
def repo(exported_repo, tmp_path) -> Path:
    """A private copy of the exported repository (version 1), free to damage."""
    return Path(shutil.copytree(exported_repo, tmp_path / "models"))


def python(script: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, text=True, **kwargs)


def serve(repo: Path) -> subprocess.CompletedProcess:
    """``python -m serving`` on ``repo``: it must refuse before listening."""
    return run_module("serving", "--repo", str(repo), "--port", "0", timeout=60)


def assert_refused(result: subprocess.CompletedProcess, start: str) -> None:
    """Exit 2 with one line, ``error: <start>...``, and no traceback."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {start}")


def onnx_file(repo: Path, network: str, version: int = 1) -> Path:
    return repo / "onnx" / network / str(version) / "model.onnx"


def rewrite_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("renames", [3, 4])
def test_a_kill_while_publishing_is_not_served_and_the_next_export_cleans_up(
    repo, renames, caplog, capsys
):
    from export.repository import staging
    from serving.client import LocalVae
    from vae_contract import ModelRepositoryError
    from vae_runtime import load_all

    killed = python(KILLED_PUBLISH, str(repo), str(renames))
    assert killed.wait(60) == -9
    assert len(list(repo.glob(".staging-*"))) == 1
    complete = renames == 4
    # Both SavedModels and the ONNX encoder are published; with 3 renames, not the decoder.
    assert onnx_file(repo, ENCODER, 2).is_file()
    assert onnx_file(repo, DECODER, 2).is_file() is complete
    assert (repo / "tf" / DECODER / "2").is_dir()

    with caplog.at_level(logging.WARNING, logger="vae_runtime.repository"):
        served = load_all(repo)
        local = LocalVae(repo)
    expected = [1, 2] if complete else [1]
    assert {n: sorted(v) for n, v in served.items()} == {ENCODER: expected, DECODER: expected}
    assert local.encoder.version == local.decoder.version == expected[-1]
    if not complete:
        assert "version 2 in" in caplog.text and "vae_decoder/2 missing" in caplog.text
        with pytest.raises(ModelRepositoryError, match=r"version 2 in .* is incomplete"):
            LocalVae(repo, version=2)

    with staging(repo):  # how every export begins
        pass
    notes = capsys.readouterr().out
    assert not list(repo.glob(".staging-*")) and "left by a killed export" in notes
    left = sorted(str(p.relative_to(repo)) for p in repo.glob("*/*/2"))
    if complete:  # killed after its last rename: a whole version, kept
        assert left == [f"{fmt}/{n}/2" for fmt in ("onnx", "tf") for n in (DECODER, ENCODER)]
    else:
        assert left == [] and "version 2 was only partly published" in notes
    assert LocalVae(repo).encoder.version == expected[-1]


def test_a_stale_staging_folder_is_removed_but_not_a_live_ones(repo, capsys):
    from export.repository import staging

    live = python(HOLD_STAGING, str(repo), "live", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        live_folder = Path(live.stdout.readline().strip())
        stale = python(HOLD_STAGING, str(repo), "kill", stdout=subprocess.PIPE)
        stale_folder = Path(stale.stdout.readline().strip())
        assert stale.wait(60) == -9 and stale_folder.is_dir()
        with staging(repo) as mine:
            assert mine.is_dir()
        assert not stale_folder.exists()
        assert live_folder.is_dir(), "a live export's staging folder was removed"
        assert f"removed {stale_folder} (1.0 MB) left by a killed export" in capsys.readouterr().out
    finally:
        live.communicate("", timeout=60)
    assert live.returncode == 0 and not live_folder.exists()
    assert not list(repo.glob(".staging-*"))


def test_a_flipped_byte_in_a_model_is_refused_naming_the_file(repo):
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from keras_vae.errors import KerasVaeError
    from keras_vae.evaluate import onnx_networks
    from serving.client import LocalVae
    from vae_contract import ModelRepositoryError

    path = onnx_file(repo, DECODER)
    good = path.read_bytes()
    weights = max(onnx.load(str(path)).graph.initializer, key=lambda t: len(t.raw_data))
    largest = int(np.abs(numpy_helper.to_array(weights)).argmax())
    damaged = bytearray(good)
    damaged[good.find(weights.raw_data) + 4 * largest + 2] ^= 0x80  # doubles or halves it
    damaged = bytes(damaged)
    path.write_bytes(damaged)
    # The danger: onnxruntime loads it without a word and answers other numbers.
    z = np.random.default_rng(0).standard_normal((16, 2)).astype(np.float32)
    answers = [ort.InferenceSession(model).run(["probs"], {"z": z})[0] for model in (good, damaged)]
    assert np.abs(answers[0] - answers[1]).max() > 1e-4

    message = f"cannot load {path}: its SHA-256 "
    assert_refused(serve(repo), message)
    with pytest.raises(ModelRepositoryError, match=f"^{re.escape(message)}.*make export"):
        LocalVae(repo)
    with pytest.raises(KerasVaeError, match=f"^{re.escape(message)}"):
        onnx_networks(repo)


def test_swapped_encoder_and_decoder_are_refused(repo):
    from vae_contract import ModelRepositoryError
    from vae_runtime import load_all

    encoder, decoder = onnx_file(repo, ENCODER), onnx_file(repo, DECODER)
    files = encoder.read_bytes(), decoder.read_bytes()

    # The two files swapped, each manifest left in its folder: sizes and hashes disagree.
    encoder.write_bytes(files[1])
    decoder.write_bytes(files[0])
    assert_refused(serve(repo), f"cannot load {encoder}: {len(files[1])} bytes where manifest")

    # The manifests follow the files (whole folders swapped): each names the other network.
    manifests = [(f.parent / "manifest.json").read_bytes() for f in (encoder, decoder)]
    (encoder.parent / "manifest.json").write_bytes(manifests[1])
    (decoder.parent / "manifest.json").write_bytes(manifests[0])
    with pytest.raises(
        ModelRepositoryError, match="describes model_name 'vae_decoder', not 'vae_en"
    ):
        load_all(repo)

    # Manifests rewritten to fit (a hand-made repository): the graphs themselves are checked.
    from vae_contract.repository import sha256

    for network, path in ((ENCODER, encoder), (DECODER, decoder)):
        files_table = {"model.onnx": {"bytes": path.stat().st_size, "sha256": sha256(path)}}
        rewrite_manifest(path.parent, model_name=network, files=files_table)
    not_an_encoder = f"cannot load {re.escape(str(encoder))}: its graph .* is not a vae_encoder"
    with pytest.raises(ModelRepositoryError, match=not_an_encoder):
        load_all(repo)


def test_an_encoder_and_decoder_of_different_exports_are_refused(repo):
    from vae_contract import ModelRepositoryError
    from vae_runtime import load_all

    decoder = onnx_file(repo, DECODER)
    rewrite_manifest(decoder.parent, export_id="another-export")
    mixed = f"cannot load {re.escape(str(decoder))}: its export is 'another-export' but"
    with pytest.raises(ModelRepositoryError, match=mixed):
        load_all(repo)
    source = json.loads((decoder.parent / "manifest.json").read_text())["source_run"]
    rewrite_manifest(decoder.parent, source_run={**source, "run": "another-run"})
    with pytest.raises(ModelRepositoryError, match="its run is 'another-run' but the encoder's is"):
        load_all(repo)
    rewrite_manifest(decoder.parent, latent_dim=3)
    with pytest.raises(ModelRepositoryError, match="its latent size is 3 but the encoder's is 2"):
        load_all(repo)


def test_a_repository_without_a_whole_version_or_manifest_is_refused(repo):
    shutil.rmtree(repo / "onnx" / DECODER / "1")
    assert_refused(serve(repo), f"{repo / 'onnx'} holds no complete version (only incomplete")

    shutil.copytree(repo / "onnx" / ENCODER / "1", repo / "onnx" / DECODER / "1")
    (repo / "onnx" / DECODER / "1" / "manifest.json").unlink()
    from vae_contract import ModelRepositoryError
    from vae_runtime import load_all

    with pytest.raises(ModelRepositoryError, match="there is no manifest.json beside it"):
        load_all(repo)
