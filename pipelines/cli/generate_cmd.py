"""``livefeat generate``: publish realistic reference traffic, then write a manifest."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from pipelines.cli.main import load_settings

_FRACTION = click.FloatRange(0.0, 1.0)


@click.command("generate")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Same seed and options, same records byte for byte (ids and times included).")
@click.option("--events", type=click.IntRange(min=0), default=None,
              help="Number of records to publish, all kinds [default: 10000].")
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True),
              default=None, help="Seconds of event time to simulate (instead of --events).")
@click.option("--rate", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Records per second of wall clock; 0 publishes as fast as possible.")
@click.option("--start", default=None,
              help="ISO-8601 event time of the first record [default: a fixed time from the seed].")
@click.option("--out-of-order", type=_FRACTION, default=0.0, show_default=True,
              help="Share of records delayed within the watermark bound.")
@click.option("--late", type=_FRACTION, default=0.0, show_default=True,
              help="Share of records delayed far beyond the bound (late).")
@click.option("--bad-undecodable", type=_FRACTION, default=0.0, show_default=True,
              help="Share of records whose bytes are not single-object Avro.")
@click.option("--bad-unknown-fingerprint", type=_FRACTION, default=0.0, show_default=True,
              help="Share of records naming a writer schema that no kept version has.")
@click.option("--bad-invalid", type=_FRACTION, default=0.0, show_default=True,
              help="Share of records that decode but break a row rule.")
@click.option("--bound-ms", type=click.IntRange(min=0), default=None,
              help="Watermark bound [default: flink.out_of_orderness_ms].")
@click.option("--late-delay", nargs=2, type=click.FloatRange(min=0), default=(30.0, 120.0),
              show_default=True, metavar="MIN MAX",
              help="Seconds a late record trails every partition of its topic.")
@click.option("--shows", type=click.FloatRange(min=0, min_open=True), default=20.0,
              show_default=True, help="Mean number of live shows at once (traffic scale).")
@click.option("--steady", is_flag=True,
              help="Stationary traffic: exactly --shows shows at all times, equally popular, "
              "no opening crowds or chat bursts (for quality-gate baselines).")
@click.option("--fraud-rings-per-hour", type=click.FloatRange(min=0), default=4.0,
              show_default=True, help="Fraud rings per hour of event time; 0 disables fraud.")
@click.option("--topic-prefix", default="", help="Prepended to every topic name.")
@click.option("--drift", "drifts", multiple=True, metavar="[TOPIC.]FIELD=FACTOR@START..END",
              help="Multiply a numeric field by FACTOR for event times in [START, END) (ISO-8601, "
              "epoch ms, or +10m after the first event; END may be empty). Repeatable.")
@click.option("--bootstrap-servers", default=None,
              help="host:port[,host:port] [default: kafka.bootstrap_servers].")
@click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="Manifest file [default: <stack.state_dir>/generate-manifest.json].")
@click.option("--dry-run", is_flag=True,
              help="Generate and write the manifest without a broker (nothing is published).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, no summary.")
@click.pass_context
def generate(ctx: click.Context, seed: int, events: int | None, duration_s: float | None,
             rate: float, start: str | None, out_of_order: float, late: float,
             bad_undecodable: float, bad_unknown_fingerprint: float, bad_invalid: float,
             bound_ms: int | None, late_delay: tuple[float, float], shows: float,
             steady: bool, fraud_rings_per_hour: float, topic_prefix: str, drifts: tuple[str, ...],
             bootstrap_servers: str | None, manifest_path: Path | None, dry_run: bool,
             quiet: bool) -> None:
    """Publish realistic live-stream marketplace traffic to the reference topics.

    Records go out in event-time order, apart from the out-of-order and late
    ones, with the Kafka timestamp set to the event time. The manifest lists
    counts per topic and kind, the fraud accounts, chargeback labels, and the
    offset of every bad, late or out-of-order record.
    """
    from pipelines.generator.drift import parse_drift
    from pipelines.generator.manifest import ManifestBuilder, is_tracked, write_manifest
    from pipelines.generator.options import GeneratorOptions, default_start_ms, parse_start
    from pipelines.generator.stream import Generation

    settings = load_settings(ctx)
    if events is not None and duration_s is not None:
        raise click.UsageError("give --events or --duration, not both")
    start_ms = parse_start(start) if start else None
    first_ms = default_start_ms(seed) if start_ms is None else start_ms
    options = GeneratorOptions(
        seed=seed, events=events, duration_s=duration_s, start_ms=start_ms,
        out_of_order=out_of_order, late=late, bad_undecodable=bad_undecodable,
        bad_unknown_fingerprint=bad_unknown_fingerprint, bad_invalid=bad_invalid,
        bound_ms=settings.flink.out_of_orderness_ms if bound_ms is None else bound_ms,
        late_min_ms=int(late_delay[0] * 1000), late_max_ms=int(late_delay[1] * 1000),
        shows=shows, fraud_rings_per_hour=fraud_rings_per_hour, topic_prefix=topic_prefix,
        default_partitions=settings.kafka.partitions,
        drifts=tuple(parse_drift(d, first_ms) for d in drifts), steady=steady,
    )
    path = manifest_path or Path(settings.stack.state_dir) / "generate-manifest.json"
    servers = bootstrap_servers or settings.kafka.bootstrap_servers

    publisher = None
    if not dry_run:
        from pipelines.generator.publisher import KafkaPublisher
        from pipelines.sources.offsets import kafka_python_config

        publisher = KafkaPublisher(kafka_python_config(settings.kafka, servers))
    try:
        if publisher is not None:
            counts = publisher.partition_counts(options.topics())
            options = dataclasses.replace(options, partitions=counts)
        generation = Generation(options)
        builder = ManifestBuilder(options)
        stats = None
        with _Progress(options, enabled=not quiet and sys.stderr.isatty()) as bar:
            def observed(records: Any) -> Any:
                for rec in records:
                    builder.observe(rec)
                    yield rec

            def tick(rec: Any) -> None:
                bar.advance(rec.timestamp_ms)

            if publisher is None:
                for rec in observed(generation.records()):
                    tick(rec)
            else:
                stats = publisher.publish(observed(generation.records()), track=is_tracked,
                                          rate=rate, progress=tick)
    finally:
        if publisher is not None:
            publisher.close()
    manifest = builder.build(generation, stats, None if publisher is None else servers)
    write_manifest(path, manifest)
    if not quiet:
        _summary(manifest, path)


class _Progress:
    """A rich progress bar on stderr: records for --events, event time for --duration."""

    def __init__(self, options: Any, *, enabled: bool) -> None:
        self.enabled = enabled
        self.options = options
        self.count = 0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("generate"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=Console(stderr=True),
                                 transient=True)
            self._bar.start()
            total = self.options.events if self.options.events is not None else int(
                self.options.duration_s)
            self._task = self._bar.add_task("generate", total=total)
        return self

    def advance(self, timestamp_ms: int) -> None:
        self.count += 1
        if self._bar is None or self.count % 500:
            return
        if self.options.events is not None:
            self._bar.update(self._task, completed=self.count)
        else:
            seconds = max(0, (timestamp_ms - self.options.start) // 1000)
            self._bar.update(self._task, completed=min(seconds, int(self.options.duration_s)))

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _summary(manifest: dict[str, Any], path: Path) -> None:
    counts = manifest["counts"]["by_kind"]
    kinds = ", ".join(f"{k} {n}" for k, n in counts.items() if n)
    publish = manifest["publish"]
    where = "dry run, nothing published"
    if publish:
        where = (f"published to {publish['bootstrap_servers']} in {publish['elapsed_s']:.1f} s "
                 f"({publish['records_per_s']:.0f} records/s)")
    click.echo(f"{manifest['records']} records ({kinds}); {where}")
    click.echo(f"event time {manifest['start_time']} .. {manifest['end_time']}; "
               f"{len(manifest['fraud_user_ids'])} fraud accounts, "
               f"{len(manifest['chargebacks'])} chargebacks")
    click.echo(f"manifest: {path}")
