"""k8s/kserve/: the KServe InferenceService, the alternative to k8s/base/serve.yaml's Deployment.

Kubernetes' own schemas (kubernetes-validate) and checkov do not cover this custom resource,
so it is checked here: what it serves and with which TF Serving release, and, where the kserve
SDK is installed, every field against the SDK's generated InferenceService model classes.
The SDK is not a dev dependency: it requires protobuf<7 and psutil<6, which would downgrade the
protobuf TensorFlow and the serving API run on (see docs/kubernetes.md, section KServe).
"""
import pathlib
import re

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.kustomize import file_resources, render
from tests.deploy.pins import TF_SERVING_VERSION

KSERVE = REPO / "k8s" / "kserve"
INFERENCE_SERVICE = KSERVE / "inferenceservice.yaml"


def documents(path: pathlib.Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


@pytest.fixture
def isvc() -> dict:
    (document,) = documents(INFERENCE_SERVICE)
    return document


def served_model_folder() -> str:
    """The folder serving/config/models.config serves, under the models volume."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse((REPO / "serving" / "config" / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    return pathlib.PurePosixPath(model.base_path).name


def test_inferenceservice_serves_the_published_model_with_the_pinned_tf_serving(isvc):
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    # KServe runs tensorflow/serving:<runtimeVersion>; its default (2.6.2) predates these models.
    assert model["runtimeVersion"] == TF_SERVING_VERSION
    scheme, _, location = model["storageUri"].partition("://")
    claim, _, folder = location.partition("/")
    claims = [d["metadata"]["name"] for d in render(KSERVE) if d["kind"] == "PersistentVolumeClaim"]
    assert scheme == "pvc" and claim in claims, f"{model['storageUri']} is not on a PVC k8s/kserve/ deploys"
    assert folder == served_model_folder()


def test_inferenceservice_runs_as_non_root_with_a_read_only_root(isvc):
    predictor = isvc["spec"]["predictor"]
    assert predictor["securityContext"]["runAsNonRoot"] is True
    context = predictor["model"]["securityContext"]
    assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
    assert context["capabilities"]["drop"] == ["ALL"]


def test_inferenceservice_mounts_a_writable_tmp_as_serve_yaml_does(isvc):
    """With a read-only root, TF Serving's /tmp must be a volume: the same emptyDir as serve.yaml's."""
    def tmp_volume(volumes, mounts):
        (mount,) = [m for m in mounts if m["mountPath"] == "/tmp"]
        (volume,) = [v for v in volumes if v["name"] == mount["name"]]
        assert not mount.get("readOnly")
        return {k: v for k, v in volume.items() if k != "name"}

    (deployment,) = [d for d in documents(REPO / "k8s" / "base" / "serve.yaml") if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    predictor = isvc["spec"]["predictor"]
    assert tmp_volume(predictor["volumes"], predictor["model"]["volumeMounts"]) == \
        tmp_volume(pod["volumes"], pod["containers"][0]["volumeMounts"]) == {"emptyDir": {}}


def test_kserve_kustomization_lists_every_manifest():
    manifests = sorted(p.name for p in KSERVE.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(file_resources(KSERVE)) == manifests


# --- against the kserve SDK, where it is installed ----------------------------------------------

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
              "datetime": str, "date": str, "ResourceQuantity": (str, int, float)}
LIST = re.compile(r"^[Ll]ist\[(.+)\]$")  # the generators spell list[T], List[T]
DICT = re.compile(r"^(?:dict\(|Dict\[)str, (.+)[)\]]$")  # and dict(str, T), Dict[str, T]


def sdk_errors(value, type_name: str, where: str) -> list[str]:
    """What in `value` the SDK's generated model `type_name` does not define: unknown fields,
    values of the wrong type, missing required fields (the models' own client-side validation)."""
    if match := LIST.match(type_name):
        if not isinstance(value, list):
            return [f"{where}: expected a list"]
        return [e for i, item in enumerate(value) for e in sdk_errors(item, match.group(1), f"{where}[{i}]")]
    if match := DICT.match(type_name):
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping"]
        return [e for key, item in value.items() for e in sdk_errors(item, match.group(1), f"{where}.{key}")]
    if type_name in PRIMITIVES:
        return [] if isinstance(value, PRIMITIVES[type_name]) else [f"{where}: expected {type_name}, got {value!r}"]
    model = sdk_model(type_name)
    if not isinstance(value, dict):
        return [f"{where}: expected a {type_name} mapping"]
    fields = {key: attribute for attribute, key in model.attribute_map.items()}
    errors = [f"{where}.{key}: not a field of {type_name}" for key in value if key not in fields]
    for key, item in value.items():
        if key in fields:
            errors += sdk_errors(item, model.openapi_types[fields[key]], f"{where}.{key}")
    try:
        model(**{fields[key]: item for key, item in value.items() if key in fields})
    except (TypeError, ValueError) as err:
        errors.append(f"{where}: {err}")
    return errors


def sdk_model(type_name: str):
    import kserve
    import kubernetes.client

    for namespace in (kserve, kubernetes.client):
        if hasattr(namespace, type_name):
            return getattr(namespace, type_name)
    raise AssertionError(f"neither kserve nor kubernetes.client defines {type_name}")


@pytest.fixture
def kserve_sdk():
    return pytest.importorskip("kserve", reason="the kserve SDK is not installed here (it conflicts with this "
                                                "project's protobuf); `pip install kserve` in a separate venv to run this")


def test_inferenceservice_matches_the_kserve_sdk_models(kserve_sdk, isvc):
    assert sdk_errors(isvc, "V1beta1InferenceService", "InferenceService") == []


def test_the_sdk_check_reports_a_misspelled_field(kserve_sdk, isvc):
    model = isvc["spec"]["predictor"]["model"]
    model["runtimeVersoin"] = model.pop("runtimeVersion")
    errors = sdk_errors(isvc, "V1beta1InferenceService", "InferenceService")
    assert errors == ["InferenceService.spec.predictor.model.runtimeVersoin: not a field of V1beta1ModelSpec"]
