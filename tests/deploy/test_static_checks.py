"""Dockerfiles and Kubernetes manifests, checked statically in the normal test run:
hadolint, kubernetes-validate (bundled schemas, pinned version), checkov."""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.kustomize import K8S, file_resources, kustomization_folders, render

KUBERNETES_VERSION = "1.33.0"
BIN = pathlib.Path(sys.executable).parent
DOCKERFILES = [REPO / "Dockerfile.train", REPO / "Dockerfile.serve", REPO / "Dockerfile.client"]
# Every kustomization folder of k8s/ but k8s/kserve/, whose custom resource neither
# kubernetes-validate nor checkov covers (test_kserve.py): every manifest they can check.
KUSTOMIZATIONS = [f for f in kustomization_folders() if f.name != "kserve"]


def manifests_in(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")


MANIFESTS = [p for folder in KUSTOMIZATIONS for p in manifests_in(folder)]


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed: run `make install`")
    return str(path)


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    result = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: str(p.relative_to(REPO / "k8s")))
def test_manifest_is_valid_kubernetes(manifest):
    import kubernetes_validate

    for document in documents(manifest):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", kustomization_folders(), ids=lambda p: str(p.relative_to(REPO)))
def test_kustomization_lists_every_manifest(folder):
    kustomization = documents(folder / "kustomization.yaml")[0]
    assert sorted(file_resources(folder)) == sorted(p.name for p in manifests_in(folder))
    assert kustomization["namespace"] == "transfer-serve"


@pytest.mark.parametrize("folder", kustomization_folders(), ids=lambda p: str(p.relative_to(REPO)))
def test_rendered_kustomization_is_valid_kubernetes(folder):
    """After the patches (the storage class parameter), as `kubectl apply -k` sends it."""
    import kubernetes_validate

    for document in render(folder):
        if document["apiVersion"].startswith("serving.kserve.io/"):
            continue  # a custom resource: test_kserve.py
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_deploying_starts_no_evaluation():
    # The evaluation Job needs a served model and runs once: applying an overlay must not
    # start it (before any model exists), nor must re-running it re-apply the training Jobs.
    kinds = lambda folder: {(d["kind"], d["metadata"]["name"]) for d in render(folder)}
    evaluation = kinds(K8S / "evaluate")
    assert ("Job", "evaluate") in evaluation and not any(kind == "Job" for kind, _ in evaluation - {("Job", "evaluate")})
    for folder in kustomization_folders():
        if folder.name != "evaluate":
            assert not any(name.startswith("evaluat") for _, name in kinds(folder)), folder


def _checkov(*target: str) -> dict:
    result = subprocess.run([tool("checkov"), *target, "--output", "json", "--skip-download"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


@pytest.mark.parametrize("target", [("-d", "k8s", "--framework", "kubernetes"),
                                    ("-f", "Dockerfile.train", "-f", "Dockerfile.serve", "-f", "Dockerfile.client",
                                     "--framework", "dockerfile")],
                         ids=["kubernetes", "dockerfiles"])
def test_checkov_finds_nothing_but_justified_skips(target):
    for report in _checkov(*target):
        results = report["results"]
        failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
        assert failed == [], failed
        assert results["passed_checks"], "checkov checked nothing"
        if report.get("check_type") == "kubernetes":  # -d k8s must descend into every folder
            checked = {pathlib.PurePosixPath(c["file_path"]).parts[-2:] for c in results["passed_checks"]}
            workloads = {p.parts[-2:] for p in MANIFESTS
                         if any(d["kind"] in ("Job", "Deployment") for d in documents(p))}
            assert workloads <= checked, sorted(workloads - checked)
        for skipped in results["skipped_checks"]:
            reason = skipped["check_result"].get("suppress_comment", "")
            assert len(reason) > 20, f"unjustified skip: {skipped['check_id']}"


def test_training_and_serving_containers_run_as_non_root_with_a_read_only_root():
    for manifest in MANIFESTS:
        for document in documents(manifest):
            spec = document.get("spec", {}).get("template", {}).get("spec")
            if not spec:
                continue
            assert spec["securityContext"]["runAsNonRoot"] is True
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
                assert context["capabilities"]["drop"] == ["ALL"]


def test_gpu_job_has_the_gpu_limit_and_toleration():
    job = documents(K8S / "overlays" / "single-node" / "train-job.yaml")[0]
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert key in job["spec"]


def test_multiworker_job_builds_tf_config_from_its_completion_index():
    service, job = documents(K8S / "overlays" / "multi-worker" / "train-multiworker.yaml")
    assert service["spec"]["clusterIP"] == "None" and job["spec"]["completionMode"] == "Indexed"
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "JOB_COMPLETION_INDEX" in script and "TF_CONFIG" in script
    assert script.count(".train-workers:2222") == job["spec"]["completions"]


def test_the_evaluation_job_asks_the_serving_deployment_for_what_its_config_serves():
    """A --label the served config does not define fails every run ("Unrecognized servable
    version label"): the Job asks what Dockerfile.serve's models.config serves, through the
    serving Service's REST port."""
    import re
    from urllib.parse import urlsplit

    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    (job,) = [d for d in documents(K8S / "evaluate" / "job.yaml") if d["kind"] == "Job"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    flag = lambda name: args[args.index(name) + 1] if name in args else None
    (config_file,) = re.findall(r"--model_config_file=/config/([\w.]+)", (REPO / "Dockerfile.serve").read_text())
    config = text_format.Parse((REPO / "serving" / "config" / config_file).read_text(),
                               model_server_config_pb2.ModelServerConfig())
    served = {m.name: m for m in config.model_config_list.config}
    assert flag("--model") in served
    label = flag("--label")
    assert label is None or label in served[flag("--model")].version_labels, \
        f"--label {label}: {config_file} defines {sorted(served[flag('--model')].version_labels) or 'no labels'}"
    (rest_port,) = re.findall(r"--rest_api_port=(\d+)", (REPO / "Dockerfile.serve").read_text())
    url = urlsplit(flag("--rest"))
    service = [d for d in documents(K8S / "base" / "serve.yaml")
               if d["kind"] == "Service" and d["metadata"]["name"] == url.hostname][0]
    assert service["spec"].get("clusterIP") != "None"
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    assert url.scheme == "http" and http["port"] == url.port and http["targetPort"] == "http"
    (deployment,) = [d for d in documents(K8S / "base" / "serve.yaml") if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "http", "containerPort": int(rest_port)} in container["ports"]
