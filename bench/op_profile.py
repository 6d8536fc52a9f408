"""Where a training step's time goes, by TensorFlow op: a `tf.profiler` trace summed per op type and per pass.

Used by bench/phase2_step.py --profile-steps. The trace is TensorFlow's own (`tf.profiler.experimental`,
written as `<logdir>/plugins/profile/<run>/<host>.xplane.pb`, the file TensorBoard's profile plugin reads);
this module only adds its events up, so the figures can be printed where the benchmark runs:
- each executed op is one event named "<op name>:<op type>" on a tf_Compute / Eigen thread of the
  "/host:CPU" plane (TensorFlow's executor TraceMe, tensorflow/core/common_runtime/executor.cc);
- an op's pass is read from its name: ops under "gradient_tape/" are the backward pass, ops of the
  optimizer (its name scope, e.g. "rm_sprop/") the update, everything else the forward pass (and the loss).
Times are summed over threads, so with two cores they can add up to more than the wall time.
"""
from __future__ import annotations

import collections
import glob
import os
import re
from typing import Callable

OP_TYPE = re.compile(r"_?[A-Z][A-Za-z0-9_]*")  # "Conv2D", or a rewritten op such as oneDNN's "_MklNativeConv2D"
FUNCTION_CALLS = ("PartitionedCall", "StatefulPartitionedCall")  # contain other ops' events: not counted
PASSES = ("forward", "backward", "update")


def capture(run: Callable[[], None], logdir: str):
    """Trace `run()` with tf.profiler and return the host's XPlane (tensorflow.tsl's XSpace proto)."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tf.profiler.experimental.start(logdir)
    try:
        run()
    finally:
        tf.profiler.experimental.stop()
    files = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")), key=os.path.getmtime)
    if not files:
        raise RuntimeError(f"tf.profiler wrote no trace under {logdir}")
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as f:
        space.ParseFromString(f.read())
    return space


def pass_of(op_name: str, optimizer_scope: str) -> str:
    """'backward' for the gradient tape's ops, 'update' for the optimizer's, else 'forward'."""
    scopes = op_name.split("/")
    if "gradient_tape" in scopes:
        return "backward"
    if optimizer_scope in scopes:
        return "update"
    return "forward"


def op_times(space, optimizer_scope: str = "rm_sprop") -> dict[tuple[str, str], float]:
    """(pass, op type) -> microseconds summed over the host plane's op events."""
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {key: metadata.name for key, metadata in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                op_name, _, op_type = name.rpartition(":")
                if not op_name or not OP_TYPE.fullmatch(op_type) or op_type in FUNCTION_CALLS or "::" in name:
                    continue  # not an op event (the executor's and tf.data's own TraceMes have other forms)
                totals[(pass_of(op_name, optimizer_scope), op_type)] += event.duration_ps / 1e6
    return dict(totals)


def summary(totals: dict[tuple[str, str], float], steps: int, top: int = 12) -> str:
    """Per pass, then the op types that take the most time, in ms per step and as a share of all ops."""
    whole = sum(totals.values()) or 1.0
    lines = ["op time per step (summed over threads):"]
    for name in PASSES:
        spent = sum(us for (pass_name, _), us in totals.items() if pass_name == name)
        lines.append(f"  {name:9} {spent / steps / 1e3:8.1f} ms  {spent / whole:6.1%}")
    lines.append(f"  {'all':9} {whole / steps / 1e3:8.1f} ms")
    lines.append(f"the {top} costliest (pass, op type):")
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    for (pass_name, op_type), us in ranked:
        lines.append(f"  {pass_name:9} {op_type:40} {us / steps / 1e3:8.1f} ms  {us / whole:6.1%}")
    return "\n".join(lines)
