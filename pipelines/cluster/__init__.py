"""A real Flink cluster on this machine, and jobs on any Flink cluster.

* :mod:`~pipelines.cluster.manager`: ``livefeat cluster up|down|status``, a
  standalone session cluster (JobManager + TaskManagers) from the Flink
  distribution inside the PyFlink wheel, tracked by pid files.
* :mod:`~pipelines.cluster.submit`: ``flink run`` for a PyFlink file or module,
  returning the job id.
* :mod:`~pipelines.cluster.rest`: the REST API (jobs, cancel, savepoints).
* :mod:`~pipelines.cluster.probe`: a small stateful job that proves a cluster works.

Nothing here imports PyFlink or starts Java on import.
"""

from pipelines.cluster.conf import ClusterOptions, default_options
from pipelines.cluster.manager import ClusterManager, ClusterStatus, ClusterUp
from pipelines.cluster.rest import FlinkRest, JobSummary
from pipelines.cluster.submit import Submission, submit

__all__ = [
    "ClusterManager",
    "ClusterOptions",
    "ClusterStatus",
    "ClusterUp",
    "FlinkRest",
    "JobSummary",
    "Submission",
    "default_options",
    "submit",
]
