"""Feature definitions are validated against the Avro schemas without Flink.

Each broken definition must be reported naming the view and feature (or source), the
problem and a fix; ``livefeat validate`` lists every problem and exits 1.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipelines import topics
from pipelines.cli.main import cli
from pipelines.errors import DefinitionError
from pipelines.features.definitions import (
    AsOf,
    ChangelogSource,
    Count,
    CountDistinct,
    Enrichment,
    Entity,
    EventSource,
    Feature,
    FeatureView,
    Mean,
    Pipeline,
    Share,
    Sum,
    minutes,
)
from pipelines.features.expr import col
from pipelines.features.validate import check, problems
from pipelines.jobs.marketplace import PIPELINE

user = Entity("user", "user_id")
bids = EventSource("bids", topics.BID_PLACED)
chats = EventSource("chats", topics.CHAT_MESSAGE)
profiles = ChangelogSource("profiles", topics.USER_PROFILE, key_field="user_id")


def one(feature: Feature, *, entity: Entity = user, **view: object) -> Pipeline:
    return Pipeline("p", (FeatureView("v", entity, (feature,), **view),))  # type: ignore[arg-type]


def test_the_reference_pipeline_is_valid() -> None:
    assert problems(PIPELINE) == []
    check(PIPELINE)


@pytest.mark.parametrize(
    ("feature", "problem", "fix"),
    [
        (Feature("f", Sum(bids, minutes(5), field="amount")), "field 'amount' not in",
         "amount_cents"),
        (Feature("f", Sum(bids, minutes(5))), "sum needs a field", "field="),
        (Feature("f", Sum(bids, minutes(5), field="currency")), "would not be exact",
         "int or long"),
        (Feature("f", Mean(bids, minutes(5), field="auction_id")), "mean of non-numeric field",
         "numeric"),
        (Feature("f", CountDistinct(bids, minutes(5), field="bidder")), "field 'bidder' not in",
         "stream_id"),
        (Feature("f", Count(bids, 0)), "window length 0 ms is not positive", "minutes(5)"),
        (Feature("f", Share(chats, minutes(5))), "share needs a numerator", "numerator"),
        (Feature("f", Count(bids, minutes(5), where=col("amount") > 0)),
         "predicate reads unknown field 'amount'", "amount_cents"),
        (Feature("f", AsOf(profiles, "tier")), "field 'tier' not in users.profile", "risk_tier"),
    ],
    ids=["unknown-field", "no-field", "inexact-sum", "non-numeric-mean", "distinct-unknown",
         "zero-window", "share-no-numerator", "predicate-unknown", "as-of-unknown"],
)
def test_a_broken_feature_is_named_with_its_problem_and_a_fix(
    feature: Feature, problem: str, fix: str
) -> None:
    found = problems(one(feature))
    assert len(found) == 1, found
    assert found[0].where == "pipeline p, view v, feature f"
    assert problem in found[0].problem
    assert fix in found[0].fix
    with pytest.raises(DefinitionError) as info:
        check(one(feature))
    assert "feature f" in str(info.value) and problem in str(info.value)


def test_entity_key_missing_from_a_source_suggests_key_fields() -> None:
    seller = Entity("buyer", "buyer_id")
    found = problems(one(Feature("f", Count(bids, minutes(5))), entity=seller))
    assert [p.problem for p in found] == ["entity key 'buyer_id' not in livestream.bid_placed"]
    assert "key_fields" in found[0].fix
    ok = one(Feature("f", Count(bids, minutes(5))), entity=seller,
             key_fields=(("bids", "user_id"),))
    assert problems(ok) == []


def test_source_problems_name_the_source() -> None:
    nowhere = EventSource("ghosts", "no.such.topic")
    bad_enrichment = EventSource("bids_plus", topics.BID_PLACED, enrichments=(
        Enrichment(profiles, on="buyer", fields=("country", "shoe_size")),))
    found = problems(Pipeline("p", (
        FeatureView("v", user, (Feature("a", Count(nowhere, minutes(1))),
                                Feature("b", Count(bad_enrichment, minutes(1))))),)))
    text = [str(p) for p in found]
    assert any("source ghosts" in t and "no schema for topic 'no.such.topic'" in t for t in text)
    assert any("source bids_plus" in t and "enrichment key 'buyer'" in t for t in text)
    assert any("source bids_plus" in t and "enrichment field 'shoe_size'" in t for t in text)


def test_duplicate_names_are_reported() -> None:
    f = Feature("same", Count(bids, minutes(5)))
    found = problems(Pipeline("p", (FeatureView("v", user, (f,)), FeatureView("v", user, (f,)))))
    assert {p.problem for p in found} == {
        "view name 'v' is used 2 times", "feature name 'same' is used 2 times"}


def test_check_reports_the_first_problem_and_how_many_more() -> None:
    broken = Pipeline("p", (FeatureView("v", user, (
        Feature("a", Sum(bids, minutes(5))), Feature("b", Count(bids, -1)))),))
    with pytest.raises(DefinitionError, match=r"1 more; run `livefeat validate`"):
        check(broken)


def test_validate_command_accepts_the_reference_pipeline() -> None:
    result = CliRunner().invoke(cli, ["validate", "marketplace"])
    assert result.exit_code == 0, result.output
    assert "marketplace: 3 views, 17 features, valid" in result.output


def test_validate_command_refuses_an_unknown_pipeline() -> None:
    result = CliRunner().invoke(cli, ["validate", "nosuch"])
    assert result.exit_code != 0
    assert isinstance(result.exception, DefinitionError)  # the entry point prints it, exit 2
    assert "pipelines.jobs.nosuch" in str(result.exception)
    assert "marketplace" in (result.exception.fix or "")
