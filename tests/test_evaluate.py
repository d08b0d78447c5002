"""``evaluate --onnx`` measures only versions exported from the run it writes into.

A repository holds the exports of many runs; its latest version may be another run's.
These tests give the shared export (version 1 of the ``small`` run) a newer neighbour
owned by another run, by copying its folders and rewriting the manifests' ``source_run``.
Manifests list the files they describe but are not themselves hashed, so the copied
versions stay valid for the verified loader: what changes is only whose they are.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keras_vae.errors import KerasVaeError
from keras_vae.evaluate import build_parser, protocol, version_of_run
from keras_vae.runs import load_config
from tests.conftest import run_module
from vae_contract import NETWORKS


def _rewrite(repo: Path, version: int, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to both networks' ONNX manifests of ``version``."""
    for network in NETWORKS:
        path = repo / "onnx" / network / str(version) / "manifest.json"
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))


def _copy_version(repo: Path, source: int, target: int, run: str) -> None:
    """Publish a copy of ``source`` as version ``target``, recorded as exported from ``run``."""
    for network in NETWORKS:
        folder = repo / "onnx" / network
        shutil.copytree(folder / str(source), folder / str(target))

    def owned_by_run(manifest: dict[str, Any]) -> None:
        manifest["version"] = target
        manifest["source_run"]["run"] = run

    _rewrite(repo, target, owned_by_run)


@pytest.fixture
def repo(exported_repo, tmp_path) -> Path:
    """A copy of the shared repository: version 1 from ``small``, version 2 from ``other``."""
    copy = tmp_path / "models"
    shutil.copytree(exported_repo, copy)
    _copy_version(copy, 1, 2, "other")
    return copy


def test_the_newest_version_of_the_run_is_chosen_not_the_newest_of_the_repository(
    trained_run, repo
):
    config = load_config(trained_run)
    assert version_of_run(repo, trained_run, config) == 1
    assert version_of_run(repo, trained_run, config, 1) == 1
    _copy_version(repo, 1, 3, trained_run.name)
    assert version_of_run(repo, trained_run, config) == 3

    # A run of the same name trained with another configuration is another run.
    def another_latent_size(manifest: dict[str, Any]) -> None:
        manifest["source_run"]["config"]["model"]["latent_dim"] = 16

    _rewrite(repo, 3, another_latent_size)
    assert version_of_run(repo, trained_run, config) == 1

    # Where the data was read from is no part of a run's identity (export may override it).
    def data_elsewhere(manifest: dict[str, Any]) -> None:
        manifest["source_run"]["config"]["data"].update(data_dir="/a", tfds_dir="/a/tfds")

    _rewrite(repo, 1, data_elsewhere)
    assert version_of_run(repo, trained_run, config) == 1


def test_another_runs_version_is_refused_in_one_line_naming_the_owners(trained_run, repo):
    config = load_config(trained_run)
    with pytest.raises(KerasVaeError) as refused:
        version_of_run(repo, trained_run, config, 2)
    assert str(refused.value) == (
        f"ONNX version 2 in {repo / 'onnx'} was not exported from run {trained_run} "
        "(run small: version 1; run other: version 2); pass a version of this run, "
        "or leave --onnx-version out"
    )
    _rewrite(repo, 1, lambda manifest: manifest["source_run"].update(run="older"))
    with pytest.raises(KerasVaeError) as refused:
        version_of_run(repo, trained_run, config)
    assert str(refused.value) == (
        f"no ONNX version in {repo / 'onnx'} was exported from run {trained_run} "
        "(run older: version 1; run other: version 2); "
        f'export it first (`make export ARGS="{trained_run}"`)'
    )

    def same_name_other_model(manifest: dict[str, Any]) -> None:
        manifest["source_run"]["run"] = trained_run.name
        manifest["source_run"]["config"]["model"]["latent_dim"] = 16

    _rewrite(repo, 2, same_name_other_model)
    with pytest.raises(KerasVaeError, match=r"\(run older: version 1; another run named small "):
        version_of_run(repo, trained_run, config)


def test_evaluate_records_its_own_runs_version_and_leaves_the_record_alone_if_none(
    trained_run, repo, tmp_path
):
    run = tmp_path / trained_run.name  # a copy, under its name: the shared run stays as it is
    shutil.copytree(trained_run, run)
    args = ("--k", "2", "--images", "50", "--onnx", str(repo))
    result = run_module("keras_vae.evaluate", str(run), *args)
    assert result.returncode == 0, result.stderr
    assert f"ONNX version 1 from {repo}, exported from this run" in result.stdout
    recorded = json.loads((run / "metrics.json").read_text())["first_50_test_images"]
    assert recorded["onnx_version"] == 1 and recorded["onnx_latent_dim"] == 2

    # The run's only version now belongs to another run: refused, nothing written.
    _rewrite(repo, 1, lambda manifest: manifest["source_run"].update(run="older"))
    before = (run / "metrics.json").read_bytes()
    for extra in ((), ("--onnx-version", "2")):
        refused = run_module("keras_vae.evaluate", str(run), *args, *extra)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1 and "run other: version 2" in refused.stderr
    assert (run / "metrics.json").read_bytes() == before


def test_the_default_nll_is_a_quick_estimate_and_full_is_the_headline_protocol():
    """Issue 14: the default was the headline protocol, up to an hour on two cores."""

    def chosen(*flags: str) -> tuple[int, int]:
        return protocol(build_parser().parse_args(list(flags)))

    assert chosen() == (100, 2000)  # (K, images; 0 = all)
    assert chosen("--full") == (1000, 0)
    assert chosen("--full", "--images", "500") == (1000, 500)  # explicit flags win
    assert chosen("--k", "20") == (20, 2000)
    assert chosen("--k", "0") == (0, 0)  # the ELBO alone takes seconds: every image
    with pytest.raises(KerasVaeError, match="must be >= 0"):
        chosen("--images", "-1")
