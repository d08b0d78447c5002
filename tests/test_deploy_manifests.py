"""The Kubernetes manifests of deploy/, checked against Kubernetes and against the code.

Every resource passes ``kubernetes-validate --strict`` (its schemas ship in the package:
no cluster, no network), which refuses unknown or misplaced fields. The KServe
InferenceService is a custom resource that it cannot know: its KServe fields are checked
here, and what it shares with a pod (the container, the resources) is validated as a pod.
Then each manifest is held to the code it runs: the service's flags go through the real
``python -m serving`` parser, its probes are the service's routes, the files TF Serving
and Triton are pointed at are the ones export writes, at the paths the volume mounts give
them, and the model names are the contract's. The service and, when it is installed,
the real Triton core start with the manifests' own arguments.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import httpx
import pytest
import yaml

from export.deploy_configs import write_tf_serving_configs, write_triton_configs
from export.tf_serving_config import (
    BATCHING_CONFIG,
    DOCKER_BASE,
    DOCKER_MODELS_CONFIG,
    TF_SERVING_API,
)
from export.triton_config import TRITON_CONFIG
from serving import operations
from serving.__main__ import build_parser
from serving.config import ServingConfig
from tests.conftest import REPO
from tests.serving_helpers import free_port, running_service
from tests.test_deploy_configs import SKIP_TRITON, triton_core
from vae_contract import ENCODER, NETWORKS, ONNX_DIR, TF_DIR

DEPLOY = REPO / "deploy"
SERVING = DEPLOY / "serving"
# The newest Kubernetes release kubernetes-validate ships schemas for, and an older one
# that clusters still run. A schema that drops or changes a field fails one of them.
KUBERNETES_VERSIONS = ("1.33", "1.37")
KSERVE_API = "serving.kserve.io/v1beta1"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def resource(path: Path, kind: str) -> dict:
    (found,) = [doc for doc in documents(path) if doc["kind"] == kind]
    return found


def the_container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def flag_values(args: list[str]) -> dict[str, list[str]]:
    """``--name=value`` arguments (TF Serving's and Triton's form) by name; a bare flag: ''."""
    values: dict[str, list[str]] = {}
    for arg in args:
        assert arg.startswith("--"), arg
        name, _, value = arg[2:].partition("=")
        values.setdefault(name, []).append(value)
    return values


def flag(args: list[str], name: str) -> str:
    (value,) = flag_values(args)[name]
    return value


def volume_path(pod_spec: dict, container: dict, path: str) -> tuple[str, PurePosixPath]:
    """Where a path the container sees lives: (PersistentVolumeClaim, path inside it).

    Read through the container's volume mounts (the deepest that holds ``path``) and
    their subPath, as the kubelet does.
    """
    path = PurePosixPath(path)
    mounts = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    (volume,) = [v for v in pod_spec["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    inside = PurePosixPath(mount.get("subPath", "")) / path.relative_to(mount["mountPath"])
    return claim, inside


def cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def models_claim() -> str:
    return resource(SERVING / "models.yaml", "PersistentVolumeClaim")["metadata"]["name"]


def image_tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


# --- Kubernetes' own schemas ---------------------------------------------------------------


def kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess:
    versions = [arg for version in KUBERNETES_VERSIONS for arg in ("-k", version)]
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", *versions, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_manifest_passes_kubernetes_validate_strict():
    """Each resource is checked against each version; only the KServe CRD has no schema."""
    paths = sorted(DEPLOY.rglob("*.yaml"))
    assert DEPLOY / "k8s-multi-worker.yaml" in paths  # the training manifests too
    done = kubernetes_validate(*paths)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for path in paths:
        for doc in documents(path):
            kind, name = doc["kind"], doc["metadata"]["name"]
            for version in KUBERNETES_VERSIONS:
                if doc["apiVersion"] == KSERVE_API:
                    expected = f"WARN {path} Couldn't find schema for kind {kind}"
                else:
                    expected = f"INFO {path} passed for resource {kind.lower()}/{name} "
                    expected += f"against version {version}"
                assert any(line.startswith(expected) for line in lines), done.stdout
    kserve = [line for line in lines if line.startswith("WARN")]
    assert all("InferenceService" in line for line in kserve), done.stdout


def test_strict_validation_refuses_a_misplaced_field(tmp_path):
    """The check above is not vacuous: one misspelt probe field fails it."""
    broken = tmp_path / "keras-vae.yaml"
    text = (SERVING / "keras-vae.yaml").read_text()
    broken.write_text(text.replace("path: /readyz", "paht: /readyz"))
    done = kubernetes_validate(broken)
    assert done.returncode != 0
    assert "'paht' was unexpected" in done.stdout, done.stdout


# --- the keras-vae service -------------------------------------------------------------------


def service_config(container: dict) -> ServingConfig:
    """The manifest's arguments, through the real parser and the settings' own checks."""
    parser = build_parser()
    try:
        parsed = parser.parse_args(container["args"])
    except SystemExit:  # argparse has printed why
        pytest.fail(f"python -m serving refuses the arguments {container['args']}")
    # Each flag spelt in full: argparse would also take a prefix (--worker for --workers).
    flags = {option for action in parser._actions for option in action.option_strings}
    for arg in container["args"]:
        assert arg.partition("=")[0] in flags, f"{arg} is not a flag of python -m serving"
    return ServingConfig(**vars(parsed))


def test_the_service_deployment_runs_the_real_cli_with_its_real_probes():
    path = SERVING / "keras-vae.yaml"
    deployment = resource(path, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = the_container(deployment)
    # No `command`: the image's entrypoint is `python -m serving`, and `args` its flags.
    assert "command" not in container
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert json.loads(entrypoint.group(1)) == ["python", "-m", "serving"]
    config = service_config(container)
    assert config.host == "0.0.0.0"  # reachable by the kubelet's probes and the Service

    # The model repository is the vae-models volume, whole and read-only.
    assert volume_path(pod, container, config.repo) == (models_claim(), PurePosixPath("."))
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == config.repo]
    assert mount["readOnly"] is True

    # The port the service listens on (its default) is the one the probes and Service use.
    (port,) = [p for p in container["ports"] if p["name"] == "http"]
    assert port["containerPort"] == config.port
    routes = {name: (route, methods) for route, name, _, methods in operations.routes(None)}
    for probe, route in [
        ("readinessProbe", "readyz"),
        ("livenessProbe", "healthz"),
        ("startupProbe", "healthz"),
    ]:
        get = container[probe]["httpGet"]
        assert get["port"] == "http"
        assert (get["path"], "GET" in routes[route][1]) == (routes[route][0], True)

    # One core per worker, each worker with one onnxruntime thread (0 would count the
    # node's cores, not the pod's).
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]  # Guaranteed: the measured cores
    assert config.intra_op_threads == 1
    assert cpus(resources["limits"]["cpu"]) == config.workers >= 2

    # A rolling update drains: the preStop pause plus the graceful stop fit in the grace.
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + config.graceful_timeout_s

    # The Service and the autoscaler reach this Deployment.
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = resource(path, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == "http"

    hpa = resource(path, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_the_service_starts_with_the_deployments_arguments_and_answers_its_probes(
    exported_repo,
):
    """The manifest's flags on a real repository; only --repo (the volume) and --host
    (loopback here, not every interface) are replaced, and a free port is added."""
    deployment = resource(SERVING / "keras-vae.yaml", "Deployment")
    container = the_container(deployment)
    kept = [a for a in container["args"] if not a.startswith(("--repo", "--host"))]
    assert len(kept) == len(container["args"]) - 2
    with running_service(exported_repo, *kept) as url:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            answer = httpx.get(url + container[probe]["httpGet"]["path"], timeout=10)
            assert answer.status_code == 200, (probe, answer.text)
        models = httpx.get(url + "/readyz", timeout=10).json()["models"]
        assert sorted(models) == sorted(NETWORKS)


# --- TF Serving ------------------------------------------------------------------------------


def test_tf_serving_reads_the_files_export_writes(tmp_path):
    deployment = resource(SERVING / "tf-serving.yaml", "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = the_container(deployment)
    assert container["command"] == ["tensorflow_model_server"]
    args = container["args"]
    claim = models_claim()

    # The files TF Serving is given are on the volume where export writes them.
    written = {
        PurePosixPath(TF_DIR) / p.relative_to(tmp_path / TF_DIR).as_posix()
        for p in write_tf_serving_configs(tmp_path / TF_DIR)
    }
    models_config = volume_path(pod, container, flag(args, "model_config_file"))
    batching = volume_path(pod, container, flag(args, "batching_parameters_file"))
    assert models_config == (claim, PurePosixPath(TF_DIR) / DOCKER_MODELS_CONFIG)
    assert batching == (claim, PurePosixPath(TF_DIR) / BATCHING_CONFIG)
    assert {models_config[1], batching[1]} <= written
    assert flag(args, "enable_batching") == "true"

    # Each base_path in that file names the model's folder on the volume.
    text = (tmp_path / TF_DIR / DOCKER_MODELS_CONFIG).read_text()
    bases = dict(re.findall(r'name: "([^"]+)"\s+base_path: "([^"]+)"', text))
    assert sorted(bases) == sorted(NETWORKS)
    for network, base in bases.items():
        assert PurePosixPath(base).is_relative_to(DOCKER_BASE)
        assert volume_path(pod, container, base) == (claim, PurePosixPath(TF_DIR) / network)

    # The probes ask the REST port for a model of the contract.
    rest = int(flag(args, "rest_api_port"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["rest"], ports["grpc"]) == (rest, int(flag(args, "port")))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (f"/v1/models/{ENCODER}", "rest")

    # The server's release is the one whose protos wrote the warm-up records.
    release = re.search(r"==(\d+\.\d+)\.\*", TF_SERVING_API).group(1)
    assert container["image"].startswith("tensorflow/serving:")
    assert image_tag(container["image"]).startswith(release + ".")
    cores = cpus(container["resources"]["limits"]["cpu"])
    assert int(flag(args, "tensorflow_intra_op_parallelism")) == cores


# --- Triton ----------------------------------------------------------------------------------


def triton_deployment() -> tuple[dict, dict]:
    deployment = resource(SERVING / "triton.yaml", "Deployment")
    return deployment["spec"]["template"]["spec"], the_container(deployment)


def test_triton_serves_the_onnx_repository_with_exports_configs(tmp_path):
    pod, container = triton_deployment()
    assert container["command"] == ["tritonserver"]
    args = container["args"]
    repository = flag(args, "model-repository")
    assert volume_path(pod, container, repository) == (models_claim(), PurePosixPath(ONNX_DIR))
    written = write_triton_configs(tmp_path / ONNX_DIR, latent_dim=16)
    for network in NETWORKS:
        config = PurePosixPath(repository) / network / TRITON_CONFIG
        inside = volume_path(pod, container, str(config))[1]
        assert tmp_path / inside in written
    assert "--disable-auto-complete-config" in args  # those configs, nothing filled in

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(flag(args, "http-port"))
    assert ports["grpc"] == int(flag(args, "grpc-port"))
    for probe, path in [
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
        ("startupProbe", "/v2/health/ready"),
    ]:
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}

    # onnxruntime's threads: as many as the pod's CPUs, in one pool for both models.
    backend = flag_values(args)["backend-config"]
    cores = cpus(container["resources"]["limits"]["cpu"])
    assert "onnxruntime,enable-global-threadpool=1" in backend
    assert f"onnxruntime,intra_op_thread_count={cores:g}" in backend
    assert container["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert image_tag(container["image"]).endswith("-py3")


def test_the_real_triton_core_takes_the_deployments_arguments(request, tmp_path):
    """Triton 2.51 (nvidia-pytriton's core) with the Deployment's own arguments: every
    flag is accepted and both models reach loading, then stop where they must, at the
    onnxruntime backend that pytriton lacks. The volume is a copy of an exported ONNX
    repository and the ports are free ones; the backend folder is pytriton's."""
    core = triton_core()
    if core is None:
        pytest.skip(SKIP_TRITON)
    exported_repo = request.getfixturevalue("exported_repo")
    pod, container = triton_deployment()
    repository = tmp_path / ONNX_DIR
    shutil.copytree(exported_repo / ONNX_DIR, repository)
    args = []
    for arg in container["args"]:
        name = arg.partition("=")[0]
        if name == "--model-repository":
            arg = f"{name}={repository}"
        elif name.endswith("-port"):
            arg = f"{name}={free_port()}"
        args.append(arg)
    done = subprocess.run(
        [str(core / "bin" / "tritonserver"), *args, f"--backend-directory={core / 'backends'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    log = done.stdout + done.stderr
    assert done.returncode != 0, log
    assert "model_control_mode               | MODE_POLL" in log, log
    backend = "unable to find backend library for backend 'onnxruntime'"
    for network in NETWORKS:
        assert f'"loading: {network}:1"' in log, log
        assert f"failed to load '{network}' version 1: Invalid argument: {backend}" in log
    errors = [line for line in log.splitlines() if re.match(r"E\d{4} ", line)]
    assert [e for e in errors if backend not in e and "CudaDriverHelper" not in e] == [], log


# --- KServe ----------------------------------------------------------------------------------

# KServe's own fields, from its Go types (pkg/apis/serving/v1beta1, release 0.20): those of
# a predictor that are not a pod's (ComponentExtensionSpec and the model), and those of a
# model that are not a container's (ModelSpec). The rest must validate as a pod's.
KSERVE_PREDICTOR_FIELDS = {
    "model",
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "autoScaling",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "storageUris",
    "storageContainerName",
    "workerSpec",
}
KSERVE_MODEL_FIELDS = {
    "modelFormat",
    "runtime",
    "runtimeVersion",
    "protocolVersion",
    "storageUri",
    "storage",
    "confidential",
}
KSERVE_SCALE_METRICS = {"cpu", "memory", "concurrency", "rps"}  # the CRD's enum


def test_the_kserve_inference_service_is_well_formed():
    (isvc,) = documents(SERVING / "kserve.yaml")
    assert (isvc["apiVersion"], isvc["kind"]) == (KSERVE_API, "InferenceService")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"])
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"
    assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    assert set(isvc["spec"]) == {"predictor"}
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]

    # ONNX on KServe's Triton runtime, over the Open Inference Protocol (v2): KServe's
    # ONNX guide requires v2, or no runtime is found.
    assert model["modelFormat"] == {"name": "onnx"}
    assert (model["protocolVersion"], model["runtime"]) == ("v2", "kserve-tritonserver")
    # The image is the Triton release of deploy/serving/triton.yaml.
    _, triton = triton_deployment()
    assert model["runtimeVersion"] == image_tag(triton["image"])
    # Triton's model repository is onnx/ of the same volume.
    storage = re.fullmatch(r"pvc://([^/]+)/(.+)", model["storageUri"])
    assert storage and storage.groups() == (models_claim(), ONNX_DIR)
    # Flags added to the runtime's: the ones the Triton Deployment passes (and the real
    # core accepts, above), for the same CPUs.
    assert set(model["args"]) <= set(triton["args"])
    assert model["resources"] == triton["resources"]

    assert predictor["scaleMetric"] in KSERVE_SCALE_METRICS
    assert predictor["scaleMetric"] == "cpu" and 0 < predictor["scaleTarget"] <= 100
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_kserve_predictor_is_a_valid_pod_apart_from_kserves_fields(version):
    """What KServe does not define is Kubernetes': it must validate as a pod, strictly."""
    from kubernetes_validate.utils import validate

    (isvc,) = documents(SERVING / "kserve.yaml")
    predictor = isvc["spec"]["predictor"]
    pod_fields = {k: v for k, v in predictor.items() if k not in KSERVE_PREDICTOR_FIELDS}
    model = predictor["model"]
    container = {k: v for k, v in model.items() if k not in KSERVE_MODEL_FIELDS}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": isvc["metadata"]["name"]},
        "spec": {**pod_fields, "containers": [{"name": "kserve-container", **container}]},
    }
    validate(pod, version, strict=True)
    assert container["resources"]["limits"]["cpu"]  # not empty: KServe fields were split off


# --- the README ------------------------------------------------------------------------------


def test_the_readme_section_names_every_serving_manifest():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Deploying on Kubernetes", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"deploy/serving/[\w.-]+\.yaml", section))
    on_disk = {p.relative_to(REPO).as_posix() for p in SERVING.glob("*.yaml")}
    assert named == on_disk
