"""The reference traffic generator: a simulated live-stream marketplace, fault injection, Kafka.

The model (:mod:`~pipelines.generator.model`), fault injection
(:mod:`~pipelines.generator.faults`) and the publish sequence
(:mod:`~pipelines.generator.stream`) are pure and deterministic; only
:mod:`~pipelines.generator.publisher` and :mod:`~pipelines.generator.readback`
talk to Kafka. See docs/generator.md.
"""

from pipelines.generator.options import GeneratedRecord, GeneratorOptions
from pipelines.generator.stream import Generation, generate_events

__all__ = ["GeneratedRecord", "Generation", "GeneratorOptions", "generate_events"]
