"""A running service picks up new versions from its repository, whole pairs only."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.serving_helpers import running_service
from vae_contract import NETWORKS


def add_version(repo: Path, number: int, networks: tuple[str, ...] = NETWORKS) -> None:
    """Version ``number`` as a copy of version 1, its manifests naming their new folder."""
    for network in networks:
        target = repo / "onnx" / network / str(number)
        shutil.copytree(repo / "onnx" / network / "1", target)
        manifest = target / "manifest.json"
        document = json.loads(manifest.read_text())
        document["version"] = number
        manifest.write_text(json.dumps(document))


def versions(url: str) -> dict[str, list[int]]:
    models = httpx.get(url + "/readyz", timeout=10).json()["models"]
    return {name: entry["versions"] for name, entry in models.items()}


def wait_for(url: str, expected: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while set(map(tuple, versions(url).values())) != {tuple(expected)}:
        assert time.monotonic() < deadline, versions(url)
        time.sleep(0.2)


@pytest.fixture()
def repo(exported_repo, tmp_path) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(exported_repo / "onnx", copy / "onnx")
    return copy


def test_new_versions_are_served_without_a_restart(repo, tmp_path):
    log = tmp_path / "service.log"
    with running_service(repo, "--poll-s", "0.3", log=log) as url:
        assert versions(url) == {network: [1] for network in NETWORKS}
        add_version(repo, 2)
        wait_for(url, [1, 2])
        sampled = httpx.post(url + "/v1/sample", json={"n": 1}, timeout=10)
        assert sampled.status_code == 200 and sampled.json()["version"] == 2

        # Half a pair (a kill between two renames) is never served.
        add_version(repo, 3, networks=NETWORKS[:1])
        # A damaged new version is refused with one line, and the service keeps serving.
        add_version(repo, 4)
        model = repo / "onnx" / NETWORKS[1] / "4" / "model.onnx"
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
        time.sleep(2)
        assert versions(url) == {network: [1, 2] for network in NETWORKS}
        assert httpx.post(url + "/v1/sample", json={"n": 1}).json()["version"] == 2
    lines = log.read_text().splitlines()
    assert any("serving new version 2" in line for line in lines)
    refused = [line for line in lines if "new version 4 not served" in line]
    assert len(refused) == 1 and "model.onnx" in refused[0]
    assert "Traceback" not in log.read_text()


def test_polling_off_keeps_the_versions_of_the_start(repo):
    with running_service(repo, "--poll-s", "0") as url:
        add_version(repo, 2)
        time.sleep(1.5)
        assert versions(url) == {network: [1] for network in NETWORKS}
