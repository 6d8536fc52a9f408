"""Server-side batching the TF Serving way (--enable_batching, BatchingParameters): the parts of TensorFlow's
shared_batch_scheduler.h and TF Serving's batching/batching_session.cc a SavedModel servable uses (docs/serving.md)."""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from model_api.status import BATCHED_OUTPUT_TENSOR, PADDING_TURNED_OFF
from serving.errors import failed_precondition, invalid_argument, unavailable

# SharedBatchScheduler::QueueOptions defaults, used for fields the parameters file leaves out.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10

SHUTTING_DOWN = "server is shutting down"


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)  # port::MaxParallelism()
    allowed_batch_sizes: tuple = ()

    @classmethod
    def from_proto(cls, params) -> "BatchingOptions":
        """BatchingParameters -> options; ValueError for what TF Serving refuses or this server lacks."""
        def value(name, default):
            return getattr(params, name).value if params.HasField(name) else default

        options = cls(max_batch_size=value("max_batch_size", DEFAULT_MAX_BATCH_SIZE),
                      batch_timeout_micros=value("batch_timeout_micros", DEFAULT_BATCH_TIMEOUT_MICROS),
                      max_enqueued_batches=value("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES),
                      num_batch_threads=value("num_batch_threads", os.cpu_count() or 1),
                      allowed_batch_sizes=tuple(params.allowed_batch_sizes))
        sizes = options.allowed_batch_sizes
        # bundle_factory_util.cc WrapSessionForBatching and batching_session.cc's checks.
        if sizes and sizes[-1] != options.max_batch_size:
            raise ValueError(f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                             f"{sizes[-1]}; expected {options.max_batch_size}")
        if list(sizes) != sorted(set(sizes)) or (sizes and sizes[0] <= 0):
            raise ValueError("allowed_batch_sizes entries must be positive and monotonically increasing")
        if options.num_batch_threads < 1 or options.max_batch_size < 1 or options.max_enqueued_batches < 1:
            raise ValueError("num_batch_threads, max_batch_size and max_enqueued_batches must be at least 1")
        if params.HasField("enable_large_batch_splitting") and params.enable_large_batch_splitting.value:
            raise ValueError("enable_large_batch_splitting is not supported by the local server")
        if params.pad_variable_length_inputs:
            raise ValueError("pad_variable_length_inputs is not supported by the local server")
        return options

    def padded_size(self, size: int) -> int:
        """RoundToLowestAllowedBatchSize: the smallest allowed size that holds `size`."""
        return next((s for s in self.allowed_batch_sizes if s >= size), size)


class _Task:
    def __init__(self, inputs: dict, size: int):
        self.inputs = inputs
        self.size = size
        self.done = threading.Event()
        self.outputs: dict | None = None
        self.error: BaseException | None = None


class _Batch:
    def __init__(self):
        self.tasks: list[_Task] = []
        self.size = 0
        self.started = 0.0  # monotonic time of the first task

    def add(self, task: _Task) -> None:
        if not self.tasks:
            self.started = time.monotonic()
        self.tasks.append(task)
        self.size += task.size


def task_size(inputs: dict) -> int:
    """BatchingSession::ComputeInputSize: every input's 0th dimension, which must agree."""
    sizes = {np.shape(value)[0] if np.ndim(value) else None for value in inputs.values()}
    if not inputs or None in sizes:
        raise invalid_argument("Batching session Run() must have at least one input tensor, each with a 0th "
                               "dimension")
    if len(sizes) != 1:
        raise invalid_argument("Batching session Run() input tensors must have equal 0th-dimension sizes")
    return sizes.pop()


class BatchQueue:
    """One servable signature's queue on the shared scheduler."""

    def __init__(self, scheduler: "BatchScheduler", run: Callable[[dict], dict]):
        self._scheduler = scheduler
        self._run = run
        self._batches: deque[_Batch] = deque([_Batch()])
        self.closed = False

    @property
    def options(self) -> BatchingOptions:
        return self._scheduler.options

    def submit(self, inputs: dict) -> dict:
        """Run `inputs` as part of a batch; blocks until its rows of the outputs are ready."""
        task = _Task(inputs, task_size(inputs))
        with self._scheduler.condition:
            # Under the lock the batch threads take: a queue closed (its version unloaded) after the
            # caller chose it, and maybe already dropped, still runs the task. In TF Serving a request
            # holds its servable, and with it the BatchingSession's queues, until it is answered
            # (shared_batch_scheduler.h drops a queue only once CloseAndWaitUntilEmpty returns).
            self._scheduler._admit(self)
            self._enqueue(task)
            self._scheduler.condition.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _enqueue(self, task: _Task) -> None:
        """Queue::Schedule and ValidateBatchTaskQueueCapacity: a task joins the open batch; one that does
        not fit closes it and opens the next, unless max_enqueued_batches are already waiting."""
        limit = self.options.max_batch_size
        if task.size > limit:
            raise invalid_argument(f"Task size {task.size} is larger than maximum input batch size {limit}")
        if self._batches[-1].size + task.size > limit:
            if len(self._batches) >= self.options.max_enqueued_batches:
                raise unavailable(f"The batch scheduling queue to which this task was submitted is full; "
                                  f"currently {len(self._batches)} batches enqueued and max_enqueued_batches is "
                                  f"{self.options.max_enqueued_batches}")
            self._batches.append(_Batch())
        self._batches[-1].add(task)

    # --- called by the scheduler with its condition held ---------------------------------------
    def ready_in(self, now: float) -> float | None:
        """0 if a batch can run now, seconds until the open batch times out, None if empty."""
        if len(self._batches) > 1:
            return 0.0
        open_batch = self._batches[-1]
        if not open_batch.tasks:
            return None
        if self.closed or open_batch.size >= self.options.max_batch_size:
            return 0.0
        return max(0.0, open_batch.started + self.options.batch_timeout_micros / 1e6 - now)

    def take(self) -> _Batch:
        batch = self._batches.popleft()
        if not self._batches:
            self._batches.append(_Batch())
        return batch

    def is_empty(self) -> bool:
        return len(self._batches) == 1 and not self._batches[0].tasks

    def take_all(self) -> list[_Task]:
        tasks = [task for batch in self._batches for task in batch.tasks]
        self._batches = deque([_Batch()])
        return tasks

    # --- called by a batch thread without the lock ------------------------------------------------
    def process(self, batch: _Batch) -> None:
        try:
            outputs = self._run(self._merged_inputs(batch))
            self._split_outputs(batch, outputs)
        except BaseException as err:  # noqa: BLE001 - every task in the batch gets the batch's error
            for task in batch.tasks:
                task.error = err
        finally:
            for task in batch.tasks:
                task.done.set()

    def _merged_inputs(self, batch: _Batch) -> dict:
        """BatchingSession::MergeInputTensors: padded to the next allowed size with copies of the first
        row of the last task."""
        padding = self.options.padded_size(batch.size) - batch.size
        merged = {}
        for alias in batch.tasks[0].inputs:
            parts = [task.inputs[alias] for task in batch.tasks]
            reference = np.shape(parts[0])[1:]
            if any(np.shape(part)[1:] != reference for part in parts):
                raise failed_precondition(
                    f"Tensors with name '{alias}' from different tasks have different shapes and "
                    f"{PADDING_TURNED_OFF}. Set pad_variable_length_inputs to true, or ensure that all tensors "
                    "with the same name have equal dimensions starting with the first dim.")
            if padding:
                parts.append(np.repeat(parts[-1][:1], padding, axis=0))
            merged[alias] = np.concatenate(parts, axis=0)
        return merged

    def _split_outputs(self, batch: _Batch, outputs: dict) -> None:
        padded = self.options.padded_size(batch.size)
        for value in outputs.values():  # batching_session.cc SplitOutputTensors, its codes and messages
            if np.ndim(value) == 0:
                raise failed_precondition(f"{BATCHED_OUTPUT_TENSOR} has 0 dimensions")
            if np.shape(value)[0] != padded:
                raise failed_precondition(f"{BATCHED_OUTPUT_TENSOR}'s 0th dimension does not equal the sum of the "
                                          "0th dimension sizes of the input tensors")
        offset = 0
        for task in batch.tasks:
            task.outputs = {alias: value[offset:offset + task.size] for alias, value in outputs.items()}
            offset += task.size


class BatchScheduler:
    """SharedBatchScheduler: `num_batch_threads` threads serving every queue, oldest batch first."""

    def __init__(self, options: BatchingOptions):
        self.options = options
        self.condition = threading.Condition()
        self._queues: list[BatchQueue] = []
        self._stopped = False
        self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    def add_queue(self, run: Callable[[dict], dict]) -> BatchQueue:
        queue = BatchQueue(self, run)
        with self.condition:
            self._queues.append(queue)
        return queue

    def remove_queue(self, queue: BatchQueue) -> None:
        """Close `queue`: what it holds, and what is still submitted to it, runs at once (without
        waiting for a batch to fill); it is dropped whenever it is empty."""
        with self.condition:
            queue.closed = True
            self.condition.notify_all()

    def _admit(self, queue: BatchQueue) -> None:
        """With the condition held: make sure `queue` is served (a closed queue may have been dropped)."""
        if self._stopped:
            raise unavailable(SHUTTING_DOWN)
        if queue not in self._queues:
            self._queues.append(queue)

    def stop(self, timeout: float = 30.0) -> None:
        """Drain, then end the threads, as TF Serving shuts down: each queue is closed and emptied before
        it goes (QueueHandle's destructor calls Queue::CloseAndWaitUntilEmpty, and ~SharedBatchScheduler
        waits for its queues; tensorflow/core/kernels/batching_util/shared_batch_scheduler.h). What is
        submitted after stop() began, or still queued when `timeout` runs out, fails with UNAVAILABLE, so
        no request waits forever."""
        with self.condition:
            self._stopped = True
            for queue in self._queues:
                queue.closed = True  # run what is queued now, without waiting for batches to fill
            self.condition.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self.condition:
            abandoned = [task for queue in self._queues for task in queue.take_all()]
        for task in abandoned:
            task.error = unavailable(SHUTTING_DOWN)
            task.done.set()

    def _next(self) -> tuple[BatchQueue | None, _Batch | None, float | None]:
        now = time.monotonic()
        best, wait = None, None
        for queue in list(self._queues):
            ready = queue.ready_in(now)
            if ready is None:
                if queue.closed and queue.is_empty():
                    self._queues.remove(queue)
                continue
            if ready == 0.0 and (best is None or queue._batches[0].started < best._batches[0].started):
                best = queue
            elif ready > 0.0:
                wait = ready if wait is None else min(wait, ready)
        if best is not None:
            return best, best.take(), None
        return None, None, wait

    def _work(self) -> None:
        while True:
            with self.condition:
                while True:
                    queue, batch, wait = self._next()
                    if batch is not None:
                        self.condition.notify()  # another thread may take the next ready batch
                        break
                    if self._stopped:  # and nothing left to run: every queue is closed, so ready at once
                        return
                    self.condition.wait(wait)
            queue.process(batch)
