"""Small, idempotent fixes for PyFlink 2.0.0 bugs that otherwise break our jobs.

Call :func:`apply` once before building a job (``create_env`` does) and again
in ``open()`` of any worker-side function that needs the fixed task-info
getters in thread mode. Each fix replaces one method with a version that talks
to the Java API this installation actually has; applying twice changes
nothing.

1. Kafka classes (client side). PyFlink's Kafka wrappers
   (``KafkaTopicPartition._to_j_topic_partition`` and
   ``KafkaOffsetResetStrategy._to_j_offset_reset_strategy``) name the Kafka
   client classes as *shaded* inside the fat SQL connector jar
   (``org.apache.flink.kafka.shaded.org.apache.kafka...``). The Kafka connector
   shipped with our pinned PyFlink is the thin jar next to a plain
   ``kafka-clients`` jar, so those names do not exist and e.g.
   ``KafkaOffsetsInitializer.offsets({...})`` fails with "Could not found the
   Java class ...TopicPartition". The fix builds the unshaded
   ``org.apache.kafka...`` classes instead.

2. Task info in thread mode (worker side). In thread mode the Python
   ``RuntimeContext`` calls ``getIndexOfThisSubtask()`` and its siblings on the
   Java ``RuntimeContext``; Flink 2.0 moved them to ``getTaskInfo()``, so every
   such call dies with ``SystemError: error return without exception set``.
   The fix reads them from ``getTaskInfo()``. The patched module exists only
   inside a thread-mode worker, so on the client this fix is skipped.
"""

from __future__ import annotations

from typing import Any

_PATCHED_MARK = "_livefeat_patched"


def _unshaded_topic_partition(self: Any) -> Any:
    from pyflink.java_gateway import get_gateway

    return get_gateway().jvm.org.apache.kafka.common.TopicPartition(self._topic, self._partition)


def _unshaded_offset_reset_strategy(self: Any) -> Any:
    from pyflink.java_gateway import get_gateway

    strategies = get_gateway().jvm.org.apache.kafka.clients.consumer.OffsetResetStrategy
    return getattr(strategies, self.name)


def _task_info_getter(java_name: str) -> Any:
    def getter(self: Any) -> Any:
        return getattr(self._runtime_context.getTaskInfo(), java_name)()

    getter.__name__ = java_name
    setattr(getter, _PATCHED_MARK, True)
    return getter


_TASK_INFO_METHODS = {
    "get_task_name": "getTaskName",
    "get_number_of_parallel_subtasks": "getNumberOfParallelSubtasks",
    "get_max_number_of_parallel_subtasks": "getMaxNumberOfParallelSubtasks",
    "get_index_of_this_subtask": "getIndexOfThisSubtask",
    "get_attempt_number": "getAttemptNumber",
    "get_task_name_with_subtasks": "getTaskNameWithSubtasks",
}

setattr(_unshaded_topic_partition, _PATCHED_MARK, True)
setattr(_unshaded_offset_reset_strategy, _PATCHED_MARK, True)


def _patch_kafka() -> None:
    from pyflink.datastream.connectors import kafka

    kafka.KafkaTopicPartition._to_j_topic_partition = _unshaded_topic_partition
    kafka.KafkaOffsetResetStrategy._to_j_offset_reset_strategy = _unshaded_offset_reset_strategy


def _patch_thread_mode_runtime_context() -> bool:
    try:
        from pyflink.fn_execution.datastream.embedded import runtime_context
    except ImportError:  # not inside a thread-mode worker: nothing to fix here
        return False
    cls = runtime_context.StreamingRuntimeContext
    for python_name, java_name in _TASK_INFO_METHODS.items():
        if not getattr(getattr(cls, python_name), _PATCHED_MARK, False):
            setattr(cls, python_name, _task_info_getter(java_name))
    return True


def apply() -> None:
    """Apply every fix that the current interpreter can use; safe to call many times."""
    _patch_kafka()
    _patch_thread_mode_runtime_context()


def kafka_patched() -> bool:
    """Whether the Kafka class-name fix is in place in this interpreter."""
    from pyflink.datastream.connectors import kafka

    methods = (
        kafka.KafkaTopicPartition._to_j_topic_partition,
        kafka.KafkaOffsetResetStrategy._to_j_offset_reset_strategy,
    )
    return all(getattr(m, _PATCHED_MARK, False) for m in methods)
