"""Reading the ONNX half of a model repository: which versions are whole, which files are sound.

Every reader of ``<repo>/onnx`` goes through :func:`scan_onnx` and :func:`verify`: the
service, :class:`serving.client.LocalVae`, ``keras_vae.evaluate --onnx`` and export (through
:mod:`vae_runtime`, which opens the sessions and adds the onnxruntime checks), and the
benchmarks. This module needs neither TensorFlow nor onnxruntime, only the standard library.

**Complete or incomplete.** ``export`` renames each version folder into place whole (see
``export/repository.py``), the ONNX folders last. A version is *complete* for an ONNX reader
when both ``onnx/vae_encoder/N`` and ``onnx/vae_decoder/N`` exist. An export killed between
two renames leaves fewer: that version is *incomplete*. When no version is asked for, the
latest complete one is chosen and each incomplete one is reported in one line: an
interrupted export must not take down a service whose previous version is intact (TF
Serving and Triton likewise keep serving what they have). Asked for by number, an
incomplete version is refused, since nothing else may stand in for what was asked.

**Variants.** An int8 build of version N lives beside it as ``vae_encoder_int8/N`` and
``vae_decoder_int8/N`` (:func:`vae_contract.model_name`). A reader scans one variant at a
time (``scan_onnx(repo, variant)``), with the same rules; the float32 pair is the default,
and no float32 reader looks at a variant's folders.

**Damaged.** A folder is renamed with its contents, so nothing *inside* a present folder can
be missing because an export was interrupted. A file missing there, a manifest naming
another network or version, a file whose size or SHA-256 differs from its manifest, or
two manifests of one version from different exports: these mean the disk or a person
changed an exported model. :func:`verify` refuses such a version with one line naming the
file and the fix, rather than passing over it, because serving an older version would hide
the damage and loading it would serve wrong numbers.

The manifest keys read here are written by ``export/build.py`` (``manifest``):
``model_name``, ``version``, ``format``, ``latent_dim``, ``files`` (``{name: {bytes,
sha256}}``), ``source_run.run`` and ``export_id`` (absent from manifests written before it
existed; the run name and latent size are then what tie a pair together).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vae_contract import (
    DECODER,
    ENCODER,
    FLOAT32,
    NETWORKS,
    ONNX_DIR,
    ONNX_FILE,
    TF_DIR,
    VARIANTS,
    model_name,
)

MANIFEST_FILE = "manifest.json"
FORMAT_NAMES = {ONNX_DIR: "onnx", TF_DIR: "tf_saved_model"}  # a manifest's "format"
REEXPORT = "export the run again (`make export`)"


class ModelRepositoryError(Exception):
    """The model repository is missing, incomplete, damaged, or lacks the asked-for version."""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _refuse(path: Path, what: str, fix: str = REEXPORT) -> ModelRepositoryError:
    return ModelRepositoryError(f"cannot load {path}: {what}; {fix}")


@dataclass(frozen=True)
class OnnxVersion:
    """Both networks' folders of one version are present (their files are not yet verified).

    ``variant`` picks which build's folders: ``int8`` reads ``vae_encoder_int8/N`` and
    ``vae_decoder_int8/N`` (see :func:`vae_contract.model_name`).
    """

    root: Path  # <repo>/onnx
    number: int
    variant: str = FLOAT32

    def folder(self, network: str) -> Path:
        return self.root / model_name(network, self.variant) / str(self.number)

    def model_path(self, network: str) -> Path:
        return self.folder(network) / ONNX_FILE


@dataclass(frozen=True)
class OnnxRepository:
    """What :func:`scan_onnx` found: complete versions, and why the others are not."""

    root: Path
    complete: dict[int, OnnxVersion]
    incomplete: dict[int, str]

    def choose(self, number: int | None = None) -> OnnxVersion:
        """``number``, or the latest complete version when None (:func:`choose_version`);
        an incomplete one is refused with what is missing, since it cannot stand in."""
        if number in self.incomplete:
            raise ModelRepositoryError(
                f"version {number} in {self.root} is incomplete ({self.incomplete[number]}); "
                f"choose a complete version ({sorted(self.complete)}) or export again"
            )
        return self.complete[choose_version(str(self.root), self.complete, number)]

    def warnings(self, above: int = 0) -> list[str]:
        """One line per incomplete version above ``above``: for readers that pass over them."""
        return [
            f"version {number} in {self.root} is incomplete ({why}) and is not loaded"
            for number, why in sorted(self.incomplete.items())
            if number > above
        ]


def scan_onnx(repo: str | Path, variant: str = FLOAT32) -> OnnxRepository:
    """Every version of ``variant`` under ``<repo>/onnx``, sorted into complete and incomplete.

    Only folder names are read: cheap enough for every start-up. A repository with no
    complete version at all is an error that says what to run. The folders of other
    variants are not looked at.
    """
    if variant not in VARIANTS:
        raise ModelRepositoryError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    root = Path(repo) / ONNX_DIR
    if not root.is_dir():
        raise ModelRepositoryError(
            f"no ONNX model repository at {root}; run `make export` or pass --repo"
        )
    present: dict[str, set[int]] = {}
    for network in NETWORKS:
        folder = root / model_name(network, variant)
        present[network] = {
            int(p.name)
            for p in (folder.iterdir() if folder.is_dir() else [])
            if p.name.isascii() and p.name.isdigit() and p.is_dir()
        }
    complete, incomplete = {}, {}
    for number in set().union(*present.values()):
        missing = [n for n in NETWORKS if number not in present[n]]
        if missing:
            folders = " and ".join(f"{model_name(n, variant)}/{number}" for n in missing)
            incomplete[number] = f"{folders} missing: an export was interrupted"
        else:
            complete[number] = OnnxVersion(root, number, variant)
    if not complete:
        found = f" (only incomplete versions: {sorted(incomplete)})" if incomplete else ""
        what = "" if variant == FLOAT32 else f" of the {variant} variant"
        command = (
            "make export" if variant == FLOAT32 else f'make export ARGS="--quantize {variant}"'
        )
        raise ModelRepositoryError(
            f"{root} holds no complete version{what}{found}; run `{command}` or pass --repo"
        )
    return OnnxRepository(root, complete, incomplete)


@dataclass(frozen=True)
class VerifiedVersion:
    """A version whose files match their manifests and whose networks belong together."""

    version: OnnxVersion
    manifests: dict[str, dict[str, Any]]
    models: dict[str, bytes]  # the verified model.onnx bytes: load these, not the file again

    @property
    def latent_dim(self) -> int:
        return int(self.manifests[ENCODER]["latent_dim"])


def read_manifest(version: OnnxVersion, network: str) -> dict[str, Any]:
    """The manifest of ``network`` at ``version``, checked to describe that very folder."""
    folder = version.folder(network)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        what = f"there is no {MANIFEST_FILE} beside it to verify it against"
        raise _refuse(folder / ONNX_FILE, what)
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _refuse(path, f"not a readable manifest ({error})") from None
    expected = {
        "model_name": model_name(network, version.variant),
        "version": version.number,
        "format": FORMAT_NAMES[ONNX_DIR],
    }
    if not isinstance(document, dict):
        raise _refuse(path, "not a readable manifest (not a JSON object)")
    for key, value in expected.items():
        if document.get(key) != value:
            raise _refuse(
                path,
                f"it describes {key} {document.get(key)!r}, not {value!r} (folders swapped, "
                "renamed or copied from elsewhere)",
            )
    files = document.get("files")
    if not isinstance(files, dict) or ONNX_FILE not in files:
        raise _refuse(path, f"it lists no {ONNX_FILE} with its size and SHA-256")
    if not isinstance(document.get("latent_dim"), int):
        raise _refuse(path, "it records no integer latent_dim")
    return document


def _check_files(folder: Path, manifest: Mapping[str, Any], number: int) -> bytes:
    """Size and SHA-256 of every file the manifest lists; the model's bytes as read."""
    model = b""
    fix = f"{REEXPORT}, or remove version {number}"
    for name, entry in manifest["files"].items():
        path = folder / name
        try:
            size, digest = entry["bytes"], entry["sha256"]
            content = path.read_bytes() if name == ONNX_FILE else None
            actual_size = len(content) if content is not None else path.stat().st_size
        except (TypeError, KeyError):
            what = f"its entry for {name} lacks bytes or sha256"
            raise _refuse(folder / MANIFEST_FILE, what) from None
        except OSError as error:
            raise _refuse(path, f"{error.strerror} though {MANIFEST_FILE} lists it", fix) from None
        if actual_size != size:
            what = f"{actual_size} bytes where {MANIFEST_FILE} says {size} (damaged or replaced)"
            raise _refuse(path, what, fix)
        actual = hashlib.sha256(content).hexdigest() if content is not None else sha256(path)
        if actual != digest:
            what = (
                f"its SHA-256 {actual[:12]}… differs from {digest[:12]}… in {MANIFEST_FILE} "
                "(damaged or replaced)"
            )
            raise _refuse(path, what, fix)
        if content is not None:
            model = content
    return model


def _check_pair(version: OnnxVersion, manifests: Mapping[str, Mapping[str, Any]]) -> None:
    """The encoder and decoder of a version come from one export of one run."""
    encoder, decoder = manifests[ENCODER], manifests[DECODER]
    facts = [
        ("latent size", encoder["latent_dim"], decoder["latent_dim"]),
        ("run", _run(encoder), _run(decoder)),
    ]
    if "export_id" in encoder or "export_id" in decoder:  # older exports wrote none
        facts.append(("export", encoder.get("export_id"), decoder.get("export_id")))
    for fact, mine, theirs in facts:
        if mine != theirs:
            raise _refuse(
                version.model_path(DECODER),
                f"its {fact} is {theirs!r} but the encoder's is {mine!r} "
                f"({version.model_path(ENCODER)}): the two do not belong together",
                f"{REEXPORT}, or remove version {version.number}",
            )


def _run(manifest: Mapping[str, Any]) -> Any:
    source = manifest.get("source_run")
    return source.get("run") if isinstance(source, dict) else None


def verify(version: OnnxVersion) -> VerifiedVersion:
    """Read both networks of ``version`` and check them, or a ModelRepositoryError.

    Checked: each manifest describes its own folder (network, version, format); every
    file it lists has its recorded size and SHA-256; both come from one export of one
    run with one latent size. The model bytes returned are those that were hashed, so
    what is loaded is what was checked.
    """
    manifests = {network: read_manifest(version, network) for network in NETWORKS}
    _check_pair(version, manifests)
    models = {
        network: _check_files(version.folder(network), manifests[network], version.number)
        for network in NETWORKS
    }
    return VerifiedVersion(version, manifests, models)


def onnx_versions(repo: str | Path) -> dict[str, dict[int, Path]]:
    """``{network: {version: model.onnx path}}`` of every complete version (not verified)."""
    found = scan_onnx(repo)
    return {
        network: {number: v.model_path(network) for number, v in found.complete.items()}
        for network in NETWORKS
    }


def choose_version(name: str, versions: Mapping[int, Any], version: int | None) -> int:
    """``version``, or the latest when None; an error that lists the versions there are.

    The one rule for choosing a version, whether among a repository's folders
    (:meth:`OnnxRepository.choose`) or the service's loaded models; ``name`` says whose.
    """
    if version is None:
        return max(versions)
    if version not in versions:
        raise ModelRepositoryError(f"{name} has no version {version}; versions: {sorted(versions)}")
    return version
