"""A small PyFlink job that proves a cluster runs Python with keyed state and checkpoints.

It reads an endless number sequence (``NumberSequenceSource``) at a limited
rate, keys each number ``n`` by ``n % keys``, counts the numbers of each key in
keyed ``ValueState``, and appends one line ``key count n`` per number to a file
of its own under ``--out`` (``counts-<random hex>.txt``).

Because one source subtask emits the sequence in order, every line must
satisfy ``count == n // keys + 1``, whatever savepoints, restores or
failovers happened, as long as the counters and the source position are
restored together. A run resumed from a savepoint therefore starts with
counts above 1; a run that lost its state would write ``count == 1`` for a
large ``n``. :func:`read_counts` and :func:`violations` check that.

It also registers the metrics ``livefeat.probe_counted`` (counter) and
``livefeat.probe_last_n`` (the last number counted: a gauge in process mode, a
pushed distribution in thread mode, see deploy/grafana/README.md), which the
Prometheus reporter exports as
``flink_taskmanager_job_task_operator_livefeat_probe_counted`` and ``..._probe_last_n``.

Submit it to a cluster::

    livefeat submit pipelines.cluster.probe --jobmanager 127.0.0.1:8081 -- --out /tmp/probe
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_KEYS = 4


@dataclass(frozen=True)
class CountLine:
    """One line a probe run wrote.

    Attributes:
        key: ``n % keys``.
        count: the key's counter after counting ``n``.
        n: the sequence number.
        file: the file it came from.
    """

    key: int
    count: int
    n: int
    file: str


def read_counts(out_dir: Path) -> list[CountLine]:
    """Every complete line under ``out_dir`` (a line still being written is skipped)."""
    lines: list[CountLine] = []
    for path in sorted(out_dir.glob("counts-*.txt")):
        for raw in path.read_text().split("\n")[:-1]:  # the last piece may be partial
            parts = raw.split()
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                lines.append(CountLine(int(parts[0]), int(parts[1]), int(parts[2]), path.name))
    return lines


def violations(lines: Sequence[CountLine], keys: int = DEFAULT_KEYS) -> list[CountLine]:
    """Lines that break ``key == n % keys`` and ``count == n // keys + 1``."""
    return [ln for ln in lines if ln.key != ln.n % keys or ln.count != ln.n // keys + 1]


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pipelines.cluster.probe", description=__doc__)
    parser.add_argument("--out", required=True, help="directory the counting lines go to")
    parser.add_argument("--keys", type=int, default=DEFAULT_KEYS)
    parser.add_argument("--delay-ms", type=float, default=5.0,
                        help="pause per number, which limits the rate")
    parser.add_argument("--checkpoint-ms", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=2, help="of the counting step")
    parser.add_argument("--mode", choices=("process", "thread"), default="process",
                        help="python.execution-mode")
    parser.add_argument("--name", default="livefeat-probe")
    return parser.parse_args(list(argv))


def build(args: argparse.Namespace) -> Any:
    """The probe's StreamExecutionEnvironment, ready to ``execute``."""
    from pyflink.common import Configuration, Types, WatermarkStrategy
    from pyflink.datastream import (
        KeyedProcessFunction,
        MapFunction,
        RuntimeContext,
        StreamExecutionEnvironment,
    )
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource
    from pyflink.datastream.state import ValueStateDescriptor

    out_dir = str(Path(args.out).resolve())
    delay = args.delay_ms / 1000.0
    keys = args.keys
    thread_mode = args.mode == "thread"

    class Throttle(MapFunction):
        """Step `throttle`: passes numbers on at a limited rate."""

        def map(self, value: int) -> int:
            time.sleep(delay)
            return value

    class CountPerKey(KeyedProcessFunction):
        """Step `count_per_key`: keyed counter, one line per number to this subtask's file."""

        def open(self, runtime_context: RuntimeContext) -> None:
            self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))
            group = runtime_context.get_metrics_group().add_group("livefeat")
            self.counted = group.counter("probe_counted")
            self.last_n = 0
            if thread_mode:
                # Never group.gauge(callable) in thread mode: the JVM calls the Python
                # callable from its own threads, and a read after the task closed
                # crashes the TaskManager (SIGSEGV in take_gil). A distribution is a
                # Java-side last-value gauge that Python pushes to.
                self.pushed = group.distribution("probe_last_n")
            else:
                # Process mode: the callable runs in the Python worker; a distribution
                # would be exported as 0 there.
                group.gauge("probe_last_n", lambda: self.last_n)
            os.makedirs(out_dir, exist_ok=True)
            # One file per opened instance. (Not named by subtask index: in thread mode
            # PyFlink 2.0's RuntimeContext.get_index_of_this_subtask() raises.)
            name = f"counts-{uuid.uuid4().hex}.txt"
            self.file = open(os.path.join(out_dir, name), "a", buffering=1)  # noqa: SIM115

        def process_element(self, value: int, ctx: KeyedProcessFunction.Context) -> Iterator[int]:
            count = (self.count.value() or 0) + 1
            self.count.update(count)
            self.file.write(f"{value % keys} {count} {value}\n")
            self.counted.inc()
            self.last_n = value
            if thread_mode:
                self.pushed.update(value)
            yield from ()

        def close(self) -> None:
            self.file.close()

    config = Configuration()
    config.set_string("python.execution-mode", args.mode)
    # Small bundles: a checkpoint barrier waits for the bundle in flight.
    config.set_string("python.fn-execution.bundle.size", "10")
    config.set_string("python.fn-execution.bundle.time", "100")
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.enable_checkpointing(args.checkpoint_ms)
    numbers = env.from_source(
        NumberSequenceSource(0, 2**62), WatermarkStrategy.no_watermarks(), "numbers",
    ).uid("numbers").set_parallelism(1)
    (
        numbers.map(Throttle(), Types.LONG()).name("throttle").uid("throttle").set_parallelism(1)
        .key_by(lambda n: n % keys, Types.LONG())
        .process(CountPerKey(), Types.LONG()).name("count_per_key").uid("count_per_key")
        .set_parallelism(args.parallelism)
        .print().name("discard").uid("discard")
    )
    return env


def main(argv: Sequence[str] | None = None) -> None:
    """Build and run the probe (the ``flink run`` client calls this)."""
    import sys

    args = _parse(sys.argv[1:] if argv is None else argv)
    build(args).execute(args.name)


if __name__ == "__main__":
    main()
