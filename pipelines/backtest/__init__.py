"""Point-in-time backtests of fraud rules over the offline feature changelog.

- :mod:`~pipelines.backtest.rules`: rules as code (:class:`Rule`), checked before any data;
- :mod:`~pipelines.backtest.labelset`: the labelled events file;
- :mod:`~pipelines.backtest.retrieval`: features as of (or as known at) each event's time;
- :mod:`~pipelines.backtest.run`: one backtest; :mod:`~pipelines.backtest.metrics` its figures;
- :mod:`~pipelines.backtest.report` and :mod:`~pipelines.backtest.chart`: table, files, picture;
- :mod:`~pipelines.backtest.labels`: labels for the reference domain from a generator run.

See docs/backtesting.md.
"""

from pipelines.backtest.rules import Rule, RuleSet, compile_rules, load_rules

__all__ = ["Rule", "RuleSet", "compile_rules", "load_rules"]
