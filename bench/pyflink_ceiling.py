"""The ceiling of a per-record Python design on PyFlink: what the framework alone costs.

The reference job runs every record through keyed Python functions that read and write
keyed state and register timers. This benchmark measures the same building blocks with
no livefeat code at all, on the same embedded runtime and configuration, so the job's
figures can be read against what PyFlink itself allows on this machine:

  stateless   JVM number source -> Python map (identity) -> JVM discarding sink
  exchange    -> Python map to a pickled (key, dict) record -> key_by -> Python keyed function
                 that only reads its input (records cross a keyed exchange as pickled bytes)
  state       exchange + one ValueState read and one write per record
  state+timer state + one event-time timer registered per record

Each variant runs twice, over ``--records`` and over a tiny input, and the difference is
reported, so the fixed start-up cost of a job (JVM, Python workers) is not in the figure.

Run:  .venv/bin/python bench/pyflink_ceiling.py [--records 200000] [--mode thread process]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import Settings
from pipelines.machine import machine
from pipelines.runtime.flink_env import create_env

VARIANTS = ("stateless", "exchange", "state", "state+timer")
TINY = 2_000


def _settings(root: Path, mode: str) -> Settings:
    base = Settings()
    return base.model_copy(update={
        "flink": base.flink.model_copy(update={
            "parallelism": 1, "execution_mode": mode, "checkpoint_interval_ms": 0,
            "checkpoint_dir": root / "ckpt"}),
        "stack": base.stack.model_copy(update={"state_dir": root / "state"}),
    })


def _job(env: Any, variant: str, records: int) -> None:
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.connectors import Sink
    from pyflink.datastream.connectors.number_seq import NumberSequenceSource
    from pyflink.datastream.state import ValueStateDescriptor
    from pyflink.java_gateway import get_gateway

    class Keyed(KeyedProcessFunction):
        def __init__(self, use_state: bool, use_timer: bool) -> None:
            self.use_state, self.use_timer = use_state, use_timer

        def open(self, runtime_context: RuntimeContext) -> None:
            self.count = runtime_context.get_state(ValueStateDescriptor("n", Types.LONG()))

        def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
            if self.use_state:
                self.count.update((self.count.value() or 0) + 1)
            if self.use_timer:
                ctx.timer_service().register_event_time_timer(value[1]["t"] + 60_000)
            return iter(())

        def on_timer(self, timestamp: int, ctx: Any) -> Any:
            return iter(())

    jvm = get_gateway().jvm
    discard = Sink(jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink())
    numbers = env.from_source(NumberSequenceSource(0, records - 1),
                              WatermarkStrategy.no_watermarks(), "numbers")
    if variant == "stateless":
        numbers.map(lambda x: x, output_type=Types.LONG()).sink_to(discard)
        return
    pickled = numbers.map(
        lambda x: (f"k{x % 1024}", {"t": x, "user_id": f"u{x % 1024}", "amount_cents": x % 997}),
        output_type=Types.PICKLED_BYTE_ARRAY())
    keyed = pickled.key_by(lambda v: v[0], key_type=Types.STRING())
    keyed.process(Keyed(variant != "exchange", variant == "state+timer"),
                  output_type=Types.PICKLED_BYTE_ARRAY()).sink_to(discard)


def _run(root: Path, mode: str, variant: str, records: int) -> float:
    env = create_env(_settings(root, mode))
    _job(env, variant, records)
    started = time.perf_counter()
    env.execute(f"ceiling-{variant}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--mode", nargs="+", choices=("thread", "process"),
                        default=["thread", "process"])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="livefeat-ceiling-"))
    print(f"machine: {machine()}")
    _run(root, args.mode[0], "stateless", TINY)  # warm-up: the first job also starts the JVM
    print(f"{'mode':<8} {'variant':<12} {'records/s':>10}  (tiny run {TINY:,} / full run)")
    for mode in args.mode:
        for variant in args.variants:
            tiny = _run(root, mode, variant, TINY)
            full = _run(root, mode, variant, args.records)
            rate = (args.records - TINY) / max(full - tiny, 1e-9)
            print(f"{mode:<8} {variant:<12} {rate:>10,.0f}  ({tiny:.1f} s / {full:.1f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
