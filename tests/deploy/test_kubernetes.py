"""What each kustomization of k8s/ deploys, rendered without kubectl (tests/deploy/kustomize.py):
one training Job per overlay, probes that survive a slow first load, scaling that reaches new
replicas, no `replicas` fighting the HPA, and the storage class as one parameter."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.dockerfile import SERVE_DOCKERFILE, instructions
from tests.deploy.kustomize import K8S, documents, kustomization_folders, objects, render

OVERLAYS = sorted((K8S / "overlays").iterdir())
SERVING = K8S / "base"


def serving_container(rendered: list[dict]) -> dict:
    (deployment,) = objects(rendered, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def entrypoint_flags() -> list[str]:
    import json

    (entrypoint,) = [args for keyword, args in instructions(SERVE_DOCKERFILE) if keyword == "ENTRYPOINT"]
    return json.loads(entrypoint)


def grpc_port() -> int:
    (flag,) = [f for f in entrypoint_flags() if f.startswith("--port=")]
    return int(flag.split("=")[1])


def test_there_are_single_node_and_multi_worker_overlays():
    assert [p.name for p in OVERLAYS] == ["multi-worker", "single-node"]


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_each_overlay_starts_exactly_one_training_job_and_the_serving_deployment(overlay):
    rendered = render(overlay)
    jobs = objects(rendered, "Job")
    assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
    assert jobs[0]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "training"
    assert [d["metadata"]["name"] for d in objects(rendered, "Deployment")] == ["model-serve"]


def test_the_base_starts_no_job():
    assert objects(render(SERVING), "Job") == []


@pytest.mark.parametrize("folder", kustomization_folders(), ids=lambda p: str(p.relative_to(K8S)))
def test_no_deployment_sets_replicas_that_an_hpa_scales(folder):
    rendered = render(folder)
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in objects(rendered, "HorizontalPodAutoscaler")}
    fighting = [d["metadata"]["name"] for d in objects(rendered, "Deployment")
                if d["metadata"]["name"] in scaled and "replicas" in d["spec"]]
    assert fighting == []


def test_the_hpa_targets_the_serving_deployment():
    rendered = render(SERVING)
    (hpa,) = objects(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == objects(rendered, "Deployment")[0]["metadata"]["name"]


def test_serving_probes_are_grpc_health_checks_on_the_servers_grpc_port():
    assert "--enable_grpc_healthcheck_service=true" in entrypoint_flags()
    container = serving_container(render(SERVING))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port(), probe


def test_the_startup_probe_outlasts_a_slow_first_load_before_liveness_applies():
    container = serving_container(render(SERVING))
    budget = lambda probe: container[probe]["periodSeconds"] * container[probe]["failureThreshold"]
    # TF Serving opens no port until every model has a version loaded (server_core.cc
    # WaitUntilModelsAvailable): liveness alone restarted a pod loading for more than ~90 s.
    assert budget("startupProbe") >= 30 * 60 > budget("livenessProbe")


def test_a_deleted_serving_pod_drains_before_it_is_killed():
    rendered = render(SERVING)
    pod = objects(rendered, "Deployment")[0]["spec"]["template"]["spec"]
    command = serving_container(rendered)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and 0 < int(command[1]) < pod["terminationGracePeriodSeconds"]


def test_a_headless_grpc_service_lists_every_serving_pod():
    rendered = render(SERVING)
    pod_labels = objects(rendered, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    headless = [s for s in objects(rendered, "Service") if s["spec"].get("clusterIP") == "None"]
    (service,) = [s for s in headless if s["spec"]["selector"].items() <= pod_labels.items()]
    (port,) = service["spec"]["ports"]
    assert port["port"] == grpc_port() and port["appProtocol"] == "grpc"
    # Beside it, the ClusterIP Service for REST and short-lived clients stays.
    assert any(s["spec"].get("clusterIP") != "None" and s["spec"]["selector"].items() <= pod_labels.items()
               for s in objects(rendered, "Service"))


def test_thread_flags_come_from_the_containers_cpu_limit():
    container = serving_container(render(SERVING))
    env = {e["name"]: e["valueFrom"]["resourceFieldRef"] for e in container["env"] if "valueFrom" in e}
    flags = dict(a.split("=", 1) for a in container["args"])
    for flag in ("--tensorflow_intra_op_parallelism", "--tensorflow_inter_op_parallelism", "--rest_api_num_threads"):
        (variable,) = re.fullmatch(r"\$\((\w+)\)", flags[flag]).groups()
        assert env[variable]["resource"] == "limits.cpu" and env[variable]["containerName"] == container["name"]
    assert "cpu" in container["resources"]["limits"]


def test_every_variable_the_serving_args_use_is_defined():
    """Kubernetes passes an undefined $(VAR) on literally, which TF Serving refuses as a number."""
    container = serving_container(render(SERVING))
    used = {v for a in container["args"] for v in re.findall(r"\$\((\w+)\)", a)}
    assert used <= {e["name"] for e in container["env"]}


def rwx_claims(rendered: list[dict]) -> list[dict]:
    return [c for c in objects(rendered, "PersistentVolumeClaim") if "ReadWriteMany" in c["spec"]["accessModes"]]


@pytest.mark.parametrize("folder", kustomization_folders(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_shared_claim_gets_the_storage_class_parameter(folder):
    classes = {c["spec"].get("storageClassName") for c in rwx_claims(render(folder))}
    assert classes <= {parameter_value()}, classes


def parameter_value() -> str:
    """The storage class, set in exactly one place of k8s/ (a kustomization's patch)."""
    places = [(path, op["value"]) for path in K8S.rglob("kustomization.yaml")
              for patch in documents(path)[0].get("patches", [])
              for op in yaml.safe_load(patch["patch"]) if op["path"] == "/spec/storageClassName"]
    (place,) = places
    manifests = [p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"
                 and re.search(r"^\s*storageClassName:", p.read_text(), re.MULTILINE)]
    assert manifests == [], f"storageClassName restated in {manifests}"
    return place[1]


def test_the_storage_class_parameter_is_set_and_reaches_every_shared_claim():
    claims = rwx_claims(render(K8S / "volumes"))
    assert {c["metadata"]["name"] for c in claims} == {"models", "tfds-cache", "train-work"}
    assert all(c["spec"]["storageClassName"] == parameter_value() for c in claims)


def test_the_evaluation_job_runs_the_small_client_image_not_the_training_image():
    (job,) = objects(render(K8S / "evaluate"), "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    training_images = {c["image"] for o in OVERLAYS for j in objects(render(o), "Job")
                       for c in j["spec"]["template"]["spec"]["containers"]}
    assert container["image"] not in training_images
    assert container["image"].split("/")[-1].split(":")[0] == "predict"
    assert "--rest" in container["args"], "the client image has no TensorFlow, so no gRPC protos"


@pytest.mark.parametrize("folder", kustomization_folders(), ids=lambda p: str(p.relative_to(K8S)))
def test_rendering_matches_kubectl_kustomize(folder):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the rendering in tests/deploy/kustomize.py is checked against it where it is")
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    key = lambda d: (d["kind"], d["metadata"]["name"])
    assert sorted(yaml.safe_load_all(result.stdout), key=key) == sorted(render(folder), key=key)
