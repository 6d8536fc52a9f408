"""Which tf.distribute strategy the job runs under, and whether this process is the chief.

TF reads TF_CONFIG itself (TFConfigClusterResolver): a cluster of more than one task gives
MultiWorkerMirroredStrategy; more than one local GPU gives MirroredStrategy; otherwise the
default strategy. Only the chief writes outputs; other workers write into a scratch folder
inside the work dir, as TensorFlow's multi-worker Keras tutorial does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import tensorflow as tf


@dataclass
class Runtime:
    strategy: tf.distribute.Strategy
    is_chief: bool
    worker_id: str  # "chief", "worker-1", ...

    def work_dir_for(self, work_dir: str) -> str:
        return work_dir if self.is_chief else os.path.join(work_dir, "workers", self.worker_id)


def make_runtime() -> Runtime:
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster = resolver.cluster_spec().as_dict()
    tasks = sum(len(v) if isinstance(v, list) else len(v.keys()) for v in cluster.values())
    if tasks > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        task_type, task_id = resolver.task_type, resolver.task_id
        chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
        return Runtime(strategy, chief, "chief" if chief else f"{task_type}-{task_id}")
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return Runtime(tf.distribute.MirroredStrategy(), True, "chief")
    return Runtime(tf.distribute.get_strategy(), True, "chief")
