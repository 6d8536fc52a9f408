"""bench/op_profile.py: a tf.profiler trace summed per op type and per pass."""
import pytest

from tests.bench.conftest import load_script

xplane_pb2 = pytest.importorskip("tensorflow.tsl.profiler.protobuf.xplane_pb2")
op_profile = load_script("op_profile")


def _space(events: list[tuple[str, int]], plane_name: str = "/host:CPU"):
    """One plane whose single line holds events (name, duration in microseconds)."""
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name=plane_name)
    line = plane.lines.add(name="tf_Compute/1")
    for index, (name, micros) in enumerate(events, start=1):
        plane.event_metadata[index].id = index
        plane.event_metadata[index].name = name
        line.events.add(metadata_id=index, duration_ps=micros * 1_000_000)
    return space


def test_op_events_are_summed_per_pass_and_op_type():
    space = _space([
        ("StatefulPartitionedCall/model/conv/Conv2D:Conv2D", 30),
        ("StatefulPartitionedCall/model/conv_2/Conv2D:Conv2D", 20),
        ("StatefulPartitionedCall/gradient_tape/model/conv/Conv2DBackpropFilter:Conv2DBackpropFilter", 70),
        ("StatefulPartitionedCall/rm_sprop/Sqrt:Sqrt", 5),
        ("StatefulPartitionedCall/model/depthwise/depthwise:_MklNativeDepthwiseConv2dNative", 9),  # oneDNN's
    ])
    assert op_profile.op_times(space) == {
        ("forward", "Conv2D"): 50.0, ("backward", "Conv2DBackpropFilter"): 70.0, ("update", "Sqrt"): 5.0,
        ("forward", "_MklNativeDepthwiseConv2dNative"): 9.0}


def test_function_calls_and_runtime_events_are_not_counted_as_ops():
    space = _space([
        ("StatefulPartitionedCall:StatefulPartitionedCall", 1000),  # contains the ops below
        ("ExecutorState::Process", 900),
        ("Iterator::Root::Prefetch", 800),
        ("ThreadpoolListener::StartRegion", 700),
        ("model/dense/MatMul:MatMul", 10),
    ])
    assert op_profile.op_times(space) == {("forward", "MatMul"): 10.0}


def test_only_the_host_plane_is_read():
    assert op_profile.op_times(_space([("model/dense/MatMul:MatMul", 10)], plane_name="/device:GPU:0")) == {}


def test_the_summary_gives_each_pass_per_step_and_the_costliest_op_first():
    text = op_profile.summary({("forward", "Conv2D"): 4000.0, ("backward", "Conv2DBackpropFilter"): 6000.0}, steps=2)
    lines = text.splitlines()
    assert any(line.split()[:3] == ["forward", "2.0", "ms"] for line in lines)
    assert any(line.split()[:3] == ["backward", "3.0", "ms"] for line in lines)
    costliest = lines[lines.index(next(line for line in lines if line.startswith("the "))) + 1]
    assert costliest.split()[:2] == ["backward", "Conv2DBackpropFilter"]
