"""Rules as code: declare them in a Python file next to the pipeline, check them before any data.

A rules file is a Python module with two names::

    from pipelines.backtest import Rule
    from pipelines.jobs.marketplace import PIPELINE   # the features the rules read

    RULES = [
        Rule("new_account_bid_burst", "user_bid_count_5m > 20 and user_account_age_days < 1",
             "Many bids from a brand-new account."),
    ]

``PIPELINE`` may be a :class:`~pipelines.features.definitions.Pipeline` or its name
(``"marketplace"``); without it the rules read the reference pipeline. Each
rule's expression is a string in a safe subset of Python (see
:mod:`pipelines.backtest.predicate`), parsed and type-checked against the
pipeline's feature types when the file is loaded, so an unknown feature or a
type mismatch fails at once, naming the rule, before any label or changelog is
read. (Python lambdas cannot be checked that way, which is why rules are
expressions.)
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from pipelines.backtest.catalog import FeatureRef, feature_catalog
from pipelines.backtest.predicate import KIND_OF, Predicate, PredicateError, parse_predicate
from pipelines.errors import ConfigError, DefinitionError, UserCodeError
from pipelines.features.definitions import Pipeline

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Rule:
    """A named fraud rule.

    Attributes:
        name: identifier, unique in its file (letters, digits, ``_``); names output columns.
        expr: boolean expression over feature names, e.g. ``"user_bid_count_5m > 20"``.
        description: what the rule is meant to catch (shown in reports).
    """

    name: str
    expr: str
    description: str = ""


@dataclass(frozen=True)
class CompiledRule:
    """A rule whose expression parsed and type-checked against a pipeline."""

    rule: Rule
    predicate: Predicate
    refs: tuple[FeatureRef, ...]

    @property
    def name(self) -> str:
        """The rule's name."""
        return self.rule.name

    @property
    def keys(self) -> tuple[str, ...]:
        """Entity key columns the rule's features are looked up by."""
        return tuple(dict.fromkeys(r.key for r in self.refs))


@dataclass(frozen=True)
class RuleSet:
    """Checked rules and the pipeline whose features they read.

    Attributes:
        rules: the rules, in file order.
        pipeline: the feature definitions.
        catalog: every feature a rule may name.
        source: where the rules came from (file path or module name).
    """

    rules: tuple[CompiledRule, ...]
    pipeline: Pipeline
    catalog: Mapping[str, FeatureRef]
    source: str

    @property
    def features(self) -> list[FeatureRef]:
        """Features any rule reads, in pipeline order."""
        used = {r.name for rule in self.rules for r in rule.refs}
        return [ref for name, ref in self.catalog.items() if name in used]

    def stored_by_view(self) -> dict[str, list[str]]:
        """View -> stored features to fetch (a read-time feature fetches its source)."""
        out: dict[str, list[str]] = {}
        for ref in self.features:
            names = out.setdefault(ref.view, [])
            if ref.stored not in names:
                names.append(ref.stored)
        return out


def compile_rules(rules: Sequence[object], pipeline: Pipeline, source: str) -> RuleSet:
    """Check every rule against ``pipeline``'s features.

    Args:
        rules: :class:`Rule` objects.
        pipeline: the feature definitions the rules read.
        source: where the rules came from, for messages.

    Raises:
        DefinitionError: naming each invalid rule and what is wrong with it.
    """
    catalog = feature_catalog(pipeline)
    kinds = {name: KIND_OF[ref.value_type] for name, ref in catalog.items()}
    problems: list[tuple[str, str]] = []
    compiled: list[CompiledRule] = []
    seen: set[str] = set()
    if not rules:
        raise DefinitionError(
            "RULES is empty", where=source, fix="declare at least one Rule(name, expression)"
        )
    for i, rule in enumerate(rules):
        if not isinstance(rule, Rule):
            problems.append((f"RULES[{i}]", f"is a {type(rule).__name__}, not a Rule"))
            continue
        label = f"rule {rule.name!r}"
        if not isinstance(rule.name, str) or not _NAME.match(rule.name):
            problems.append((label, "the name must be letters, digits and _ (not first)"))
            continue
        if rule.name in seen:
            problems.append((label, "the name is used twice"))
            continue
        seen.add(rule.name)
        if not isinstance(rule.expr, str):
            problems.append(
                (label, f"the expression must be a string, got {type(rule.expr).__name__}")
            )
            continue
        try:
            predicate = parse_predicate(rule.expr, kinds)
        except PredicateError as exc:
            problems.append((label, f"{exc} in `{rule.expr.strip()}`"))
            continue
        refs = tuple(catalog[n] for n in predicate.features)
        compiled.append(CompiledRule(rule, predicate, refs))
    if problems:
        fix = "fix the rule; docs/backtesting.md lists the features, their types and the syntax"
        if len(problems) == 1:
            what, problem = problems[0]
            raise DefinitionError(problem, where=f"{source}, {what}", fix=fix)
        lines = "\n".join(f"  {what}: {problem}" for what, problem in problems)
        raise DefinitionError(f"{len(problems)} invalid rules:\n{lines}", where=source, fix=fix)
    return RuleSet(tuple(compiled), pipeline, catalog, source)


def load_rules(target: str) -> RuleSet:
    """Import a rules file and check its rules.

    Args:
        target: a path to a ``.py`` file, a module (``package.module``), or a bare name
            resolved in :mod:`pipelines.jobs` (``marketplace_rules``).

    Raises:
        ConfigError: the file or module does not exist.
        DefinitionError: the module has no valid ``RULES`` or ``PIPELINE``, or a rule is
            invalid (named in the message).
        UserCodeError: importing the module raised.
    """
    module, source = _import(target)
    rules = getattr(module, "RULES", None)
    if not isinstance(rules, list | tuple):
        raise DefinitionError(
            "no RULES list",
            where=source,
            fix="define RULES = [Rule(name, expression), ...] in the file",
        )
    pipeline = getattr(module, "PIPELINE", "marketplace")
    if isinstance(pipeline, str):
        from pipelines.features.registry import load_pipeline

        pipeline = load_pipeline(pipeline)
    if not isinstance(pipeline, Pipeline):
        raise DefinitionError(
            f"PIPELINE is a {type(pipeline).__name__}",
            where=source,
            fix="set PIPELINE to a Pipeline or a pipeline name such as 'marketplace'",
        )
    return compile_rules(list(rules), pipeline, source)


def _import(target: str) -> tuple[ModuleType, str]:
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ConfigError(
                "rules file not found", where=target, fix="pass the path of a Python rules file"
            )
        name = f"livefeat_rules_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError("not an importable Python file", where=target)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise DefinitionError(
                f"syntax error: {exc.msg}", where=f"{target}, line {exc.lineno}"
            ) from exc
        except Exception as exc:
            raise UserCodeError(
                f"importing the rules file raised {type(exc).__name__}: {exc}", where=target
            ) from exc
        finally:
            sys.modules.pop(name, None)
        return module, str(path)
    module_name = target if "." in target else f"pipelines.jobs.{target}"
    try:
        return importlib.import_module(module_name), module_name
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing != module_name and not module_name.startswith(missing + "."):
            raise UserCodeError(
                f"importing the rules module raised {exc}", where=module_name
            ) from exc
        raise ConfigError(
            f"rules module {module_name!r} not found ({exc})",
            where=f"rules {target}",
            fix="pass a .py file, a module path, or a name in pipelines.jobs (marketplace_rules)",
        ) from exc
    except SyntaxError as exc:
        raise DefinitionError(
            f"syntax error: {exc.msg}", where=f"{exc.filename}, line {exc.lineno}"
        ) from exc
    except Exception as exc:
        raise UserCodeError(
            f"importing the rules module raised {type(exc).__name__}: {exc}", where=module_name
        ) from exc
