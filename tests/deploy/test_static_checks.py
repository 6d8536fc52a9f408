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

KUBERNETES_VERSION = "1.33.0"
BIN = pathlib.Path(sys.executable).parent
DOCKERFILES = [REPO / "Dockerfile.train", REPO / "Dockerfile.serve"]
MANIFESTS = sorted(p for p in (REPO / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


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


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(manifest):
    import kubernetes_validate

    for document in documents(manifest):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = documents(REPO / "k8s" / "kustomization.yaml")[0]
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)


def _checkov(*target: str) -> dict:
    result = subprocess.run([tool("checkov"), *target, "--output", "json", "--skip-download"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    reports = json.loads(result.stdout)
    return reports if isinstance(reports, list) else [reports]


@pytest.mark.parametrize("target", [("-d", "k8s", "--framework", "kubernetes"),
                                    ("-f", "Dockerfile.train", "-f", "Dockerfile.serve", "--framework", "dockerfile")],
                         ids=["kubernetes", "dockerfiles"])
def test_checkov_finds_nothing_but_justified_skips(target):
    for report in _checkov(*target):
        results = report["results"]
        failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
        assert failed == [], failed
        assert results["passed_checks"], "checkov checked nothing"
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
    job = documents(REPO / "k8s" / "train-job.yaml")[0]
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    for key in ("backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        assert key in job["spec"]


def test_multiworker_job_builds_tf_config_from_its_completion_index():
    service, job = documents(REPO / "k8s" / "train-multiworker.yaml")
    assert service["spec"]["clusterIP"] == "None" and job["spec"]["completionMode"] == "Indexed"
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "JOB_COMPLETION_INDEX" in script and "TF_CONFIG" in script
    assert script.count(".train-workers:2222") == job["spec"]["completions"]
