"""Server-side batching: TF Serving's queue rules, padding and errors, on a stand-in model."""
import os
import threading
import time

import numpy as np
import pytest

from serving.batching import BatchingOptions, BatchScheduler
from serving.config_protos import BatchingParameters, parse_text_file
from serving.errors import ServingError

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "serving", "config")


class Recorder:
    """A stand-in Session: doubles its input and records the batch sizes it ran."""

    def __init__(self, delay=0.0, fail=False):
        self.sizes, self.delay, self.fail = [], delay, fail

    def __call__(self, inputs):
        self.sizes.append(len(inputs["x"]))
        time.sleep(self.delay)
        if self.fail:
            raise ValueError("the whole batch failed")
        return {"y": inputs["x"] * 2, "n": np.arange(len(inputs["x"]))}


@pytest.fixture
def scheduler_for():
    made = []

    def make(**options):
        scheduler = BatchScheduler(BatchingOptions(**options))
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.stop()


def submit_together(queue, requests):
    results, errors = [None] * len(requests), [None] * len(requests)

    def one(i):
        try:
            results[i] = queue.submit({"x": requests[i]})
        except Exception as err:  # noqa: BLE001
            errors[i] = err

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_a_task_over_max_batch_size_gets_tf_servings_invalid_argument(scheduler_for):
    queue = scheduler_for(max_batch_size=32).add_queue(Recorder())
    with pytest.raises(ServingError) as info:
        queue.submit({"x": np.zeros(33)})
    assert info.value.code.name == "INVALID_ARGUMENT"
    assert info.value.message == "Task size 33 is larger than maximum input batch size 32"
    assert queue.submit({"x": np.ones(32)})["y"].shape == (32,)


def test_concurrent_requests_share_a_padded_batch_and_each_gets_its_own_rows(scheduler_for):
    recorder = Recorder()
    queue = scheduler_for(max_batch_size=8, batch_timeout_micros=1_000_000, num_batch_threads=1,
                          allowed_batch_sizes=(4, 8)).add_queue(recorder)
    requests = [np.full(size, float(i)) for i, size in enumerate([1, 2, 2])]
    results, errors = submit_together(queue, requests)
    assert errors == [None, None, None]
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request * 2)
        assert len(result["n"]) == len(request)
    assert sum(recorder.sizes) in (8, 12) and all(size in (4, 8) for size in recorder.sizes)
    assert recorder.sizes[0] == 8, "the three requests (5 rows) ran as one batch padded to 8"


def test_a_full_queue_refuses_with_unavailable(scheduler_for):
    queue = scheduler_for(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1).add_queue(
        Recorder(delay=0.5))
    results, errors = submit_together(queue, [np.ones(1)] * 4)
    refused = [e for e in errors if e is not None]
    assert refused and all(e.code.name == "UNAVAILABLE" and "queue" in e.message and "full" in e.message
                           for e in refused)
    assert any(r is not None for r in results)


def test_a_failing_batch_fails_every_request_in_it(scheduler_for):
    queue = scheduler_for(max_batch_size=8, batch_timeout_micros=1_000_000, num_batch_threads=1).add_queue(
        Recorder(fail=True))
    _, errors = submit_together(queue, [np.ones(1), np.ones(2)])
    assert [str(e) for e in errors] == ["the whole batch failed"] * 2


def test_inputs_of_different_shapes_cannot_share_a_batch_without_padding(scheduler_for):
    queue = scheduler_for(max_batch_size=8, batch_timeout_micros=1_000_000, num_batch_threads=1).add_queue(Recorder())
    _, errors = submit_together(queue, [np.ones((1, 2)), np.ones((1, 3))])  # both within the 1 s timeout
    assert all(e.code.name == "FAILED_PRECONDITION" and "padding is turned off" in e.message for e in errors)


def test_the_shipped_batching_parameters_become_these_options():
    options = BatchingOptions.from_proto(parse_text_file(os.path.join(CONFIG_DIR, "batching_parameters.txt"),
                                                         BatchingParameters))
    assert options == BatchingOptions(max_batch_size=32, batch_timeout_micros=0, max_enqueued_batches=16,
                                      num_batch_threads=2, allowed_batch_sizes=())
    assert [options.padded_size(n) for n in (1, 5, 32)] == [1, 5, 32], "no padding without allowed sizes"
    padded = BatchingOptions(max_batch_size=32, allowed_batch_sizes=(4, 8, 16, 32))
    assert [padded.padded_size(n) for n in (1, 4, 5, 17, 32)] == [4, 4, 8, 32, 32]


def test_defaults_are_tf_servings_and_bad_parameters_are_refused_in_one_line():
    assert BatchingOptions.from_proto(BatchingParameters()).max_batch_size == 1000
    with pytest.raises(ValueError, match="Last entry in allowed_batch_sizes must match max_batch_size; last "
                                         "entry was 16; expected 32"):
        BatchingOptions.from_proto(BatchingParameters(max_batch_size={"value": 32}, allowed_batch_sizes=[8, 16]))


def test_unknown_fields_in_the_parameters_file_are_refused(tmp_path):
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 32 }\nmax_batch_sizes { value: 3 }\n")
    with pytest.raises(ValueError, match="has no field named \"max_batch_sizes\""):
        parse_text_file(str(path), BatchingParameters)


def in_thread(call, seconds=20):
    """call() in a thread; its result or error, or AssertionError if it is still blocked after `seconds`."""
    outcome = {}

    def run():
        try:
            outcome["result"] = call()
        except Exception as err:  # noqa: BLE001
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    return outcome


def test_a_request_that_chose_a_queue_before_its_version_was_unloaded_is_still_answered(scheduler_for):
    # The race: a request picks its servable's queue, the version is unloaded (the queue closed and,
    # being empty, dropped by the scheduler), then the request submits. It must still run.
    scheduler = scheduler_for(max_batch_size=8, num_batch_threads=1)
    queue = scheduler.add_queue(Recorder())
    scheduler.remove_queue(queue)
    deadline = time.monotonic() + 10
    while queue in scheduler._queues and time.monotonic() < deadline:
        time.sleep(0.01)
    assert queue not in scheduler._queues, "the scheduler drops a closed empty queue"
    outcome = in_thread(lambda: queue.submit({"x": np.ones(3)}))
    np.testing.assert_array_equal(outcome["result"]["y"], np.full(3, 2.0))
    with pytest.raises(ServingError, match="Task size 9 is larger than maximum input batch size 8"):
        queue.submit({"x": np.ones(9)})


def submit_in_background(queue, count, rows=1):
    outcomes = [{} for _ in range(count)]

    def one(i):
        try:
            outcomes[i]["result"] = queue.submit({"x": np.ones(rows)})
        except Exception as err:  # noqa: BLE001
            outcomes[i]["error"] = err

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    return outcomes, threads


def wait_until_queued(scheduler, queue, recorder, count):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with scheduler.condition:
            if sum(len(b.tasks) for b in queue._batches) + len(recorder.sizes) >= count:
                return
        time.sleep(0.01)
    raise AssertionError("the tasks were never queued")


def stop_with_three_queued(scheduler_for, delay, **stop_args):
    """Three one-row tasks queued on a one-thread scheduler, then stop(); every task's outcome."""
    scheduler = scheduler_for(max_batch_size=1, num_batch_threads=1)
    recorder = Recorder(delay=delay)
    queue = scheduler.add_queue(recorder)
    outcomes, threads = submit_in_background(queue, 3)
    wait_until_queued(scheduler, queue, recorder, 3)
    scheduler.stop(**stop_args)
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a queued task was abandoned"
    return queue, recorder, outcomes


def test_stop_runs_what_is_queued_then_refuses_new_tasks_with_unavailable(scheduler_for):
    queue, recorder, outcomes = stop_with_three_queued(scheduler_for, delay=0.2)
    assert [sorted(o) for o in outcomes] == [["result"]] * 3 and recorder.sizes == [1, 1, 1]
    with pytest.raises(ServingError) as info:
        queue.submit({"x": np.ones(1)})
    assert (info.value.code.name, info.value.message) == ("UNAVAILABLE", "server is shutting down")


def test_stop_fails_what_it_could_not_run_in_time_with_unavailable(scheduler_for):
    _, _, outcomes = stop_with_three_queued(scheduler_for, delay=1.0, timeout=0.1)
    answered = [o for o in outcomes if "result" in o]
    refused = [o["error"] for o in outcomes if "error" in o]
    assert len(answered) == 1, "the batch running when stop() gave up still finishes"
    assert [(e.code.name, e.message) for e in refused] == [("UNAVAILABLE", "server is shutting down")] * 2


@pytest.mark.parametrize("output,message", [
    (lambda x: np.float32(1.0), "Batched output tensor has 0 dimensions"),
    (lambda x: np.zeros(len(x) + 1), "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                                     "dimension sizes of the input tensors"),
])
def test_an_output_that_is_not_batch_major_fails_with_tf_servings_failed_precondition(scheduler_for, output,
                                                                                       message):
    from model_api.status import code_for_http_status

    queue = scheduler_for(max_batch_size=8).add_queue(lambda inputs: {"y": output(inputs["x"])})
    with pytest.raises(ServingError) as info:
        queue.submit({"x": np.ones(2)})
    assert (info.value.code.name, info.value.message) == ("FAILED_PRECONDITION", message)
    assert code_for_http_status(400, message) == "FAILED_PRECONDITION", "a REST client reads it as TF Serving's"
