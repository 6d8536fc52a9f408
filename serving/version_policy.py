"""TF Serving's version policy: which versions on disk are aspired (file_system_storage_path_source.cc) and
which served ones to unload (availability_preserving_policy.cc). Both are pure functions of the version sets."""
from __future__ import annotations

from tensorflow_serving.config import model_server_config_pb2


def wanted_versions(config: model_server_config_pb2.ModelConfig, on_disk: list[int]) -> list[int]:
    """The aspired versions: what file_system_storage_path_source.cc emits for the policy."""
    policy = config.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(on_disk)
    if which == "specific":
        return sorted(v for v in on_disk if v in set(policy.specific.versions))
    count = policy.latest.num_versions if which == "latest" and policy.latest.num_versions else 1
    return list(on_disk[-count:])


def versions_to_unload(serving: set, aspired: set) -> list[int]:
    """AvailabilityPreservingPolicy::GetNextAction, all its unloads at once: unaspired versions
    go when an aspired version serves (or nothing is aspired); otherwise all but the newest."""
    unaspired = sorted(serving - aspired)
    if not aspired or aspired & serving:
        return unaspired
    return unaspired[:-1]
