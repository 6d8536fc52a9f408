"""Which tf.distribute strategy the job runs under, whether this process is the chief, and
which shard of the data it reads.

TF reads TF_CONFIG itself (TFConfigClusterResolver): a cluster of more than one task gives
MultiWorkerMirroredStrategy; more than one local GPU gives MirroredStrategy; otherwise the
default strategy. Only the chief writes outputs; other workers write into a scratch folder
inside the work dir, as TensorFlow's multi-worker Keras tutorial does.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

import tensorflow as tf

from training.config import ConfigError
from training.inputs import Shard


@dataclass
class Runtime:
    strategy: tf.distribute.Strategy
    is_chief: bool
    worker_id: str  # "chief", "worker-1", ...
    shard: Shard = field(default_factory=Shard)  # one input pipeline per worker

    def work_dir_for(self, work_dir: str) -> str:
        return work_dir if self.is_chief else posixpath.join(work_dir, "workers", self.worker_id)


def _input_pipeline(cluster: dict, task_type: str, task_id: int) -> Shard:
    """The chief is pipeline 0, then the workers in order: tf.distribute's own numbering
    (tensorflow/python/distribute/multi_worker_util.py, id_in_cluster and worker_count)."""
    chiefs = len(cluster.get("chief", []))
    count = chiefs + len(cluster.get("worker", []))
    index = 0 if task_type == "chief" else task_id + chiefs
    return Shard(index=index, count=count)


def make_runtime(global_batch_size: int = 1) -> Runtime:
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster = resolver.cluster_spec().as_dict()
    tasks = sum(len(v) if isinstance(v, list) else len(v.keys()) for v in cluster.values())
    if tasks > 1:
        task_type, task_id = resolver.task_type, resolver.task_id
        shard = _input_pipeline(cluster, task_type, task_id)
        if global_batch_size % shard.count:
            raise ConfigError(f"--batch-size {global_batch_size} must be a multiple of the "
                              f"{shard.count} workers (each reads batch-size / workers examples per step)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
        return Runtime(strategy, chief, "chief" if chief else f"{task_type}-{task_id}", shard)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return Runtime(tf.distribute.MirroredStrategy(), True, "chief")
    return Runtime(tf.distribute.get_strategy(), True, "chief")
