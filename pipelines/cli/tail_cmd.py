"""``livefeat tail``: read the reference topics to their end and count records by decode outcome."""

from __future__ import annotations

import json

import click

from pipelines.cli.main import load_settings
from pipelines.topics import REFERENCE_TOPICS


@click.command("tail")
@click.option("--topic", "subjects", multiple=True, type=click.Choice(REFERENCE_TOPICS),
              help="A reference topic to read (repeatable) [default: all of them].")
@click.option("--topic-prefix", default="", help="Prefix the topics were published with.")
@click.option("--samples", type=click.IntRange(min=0), default=2, show_default=True,
              help="Decoded records to show per topic.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True),
              default=60.0, show_default=True, help="Seconds allowed to reach the end.")
@click.option("--bootstrap-servers", default=None,
              help="host:port[,host:port] [default: kafka.bootstrap_servers].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def tail(ctx: click.Context, subjects: tuple[str, ...], topic_prefix: str, samples: int,
         timeout_s: float, bootstrap_servers: str | None, as_json: bool) -> None:
    """Read topics from the beginning to their true end offsets and summarise them.

    Prints, per topic, the record count, the count per decode outcome (ok,
    undecodable, unknown_fingerprint, incompatible_writer) and a few decoded
    records. End offsets come from fetch responses, not from ListOffsets.
    """
    from pipelines.generator.readback import tail_topics
    from pipelines.sources.offsets import kafka_python_config
    from schemas.codec import SingleObjectCodec
    from schemas.store import SchemaStore

    settings = load_settings(ctx)
    config = kafka_python_config(settings.kafka, bootstrap_servers)
    reports = tail_topics(config, SingleObjectCodec(SchemaStore.load()),
                          list(subjects or REFERENCE_TOPICS), prefix=topic_prefix,
                          samples=samples, timeout_s=timeout_s)
    total = sum(r.records for r in reports)
    if as_json:
        click.echo(json.dumps({"records": total, "topics": [r.as_dict() for r in reports]},
                              indent=1))
        return
    width = max(len(r.topic) for r in reports)
    for report in reports:
        outcomes = ", ".join(f"{k} {n}" for k, n in sorted(report.outcomes.items()))
        if not report.partitions:
            outcomes = "(no such topic)"
        click.echo(f"{report.topic:<{width}}  {report.records:>9} records  {outcomes}")
        for sample in report.samples:
            click.echo(f"  [{sample['partition']}@{sample['offset']}] "
                       f"{json.dumps(sample['value'], sort_keys=True)}")
    click.echo(f"{'total':<{width}}  {total:>9} records")
