"""livefeat: streaming feature pipelines for live-stream marketplaces.

The package is split by job: ``features`` (the definition API), ``sources``,
``operators`` and ``sinks`` (the building blocks), ``runtime`` (compiling
definitions to a PyFlink job or a batch run), ``jobs`` (pipelines that ship
with the project) and ``cli`` (the ``livefeat`` command).
"""

__version__ = "0.1.0"
