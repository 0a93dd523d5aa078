"""GUI jobs: one `Job` with one outcome and one stop policy, over two transports.

`PipeJob` (pipe.py) is a QProcess child that belongs to the window (chat host, previews,
probes, downloads, exports); `DetachedJob` (detached.py) is its own process session followed
through its run folder, so it outlives the window (the trainer, the benchmark).
"""

from medalpaca_desktop.ui.jobs.detached import DetachedJob, JobError, end_fields, pid_is_running
from medalpaca_desktop.ui.jobs.job import DEFAULT_ENV, Job, JobOutcome
from medalpaca_desktop.ui.jobs.pipe import PipeJob

__all__ = ["DEFAULT_ENV", "DetachedJob", "Job", "JobError", "JobOutcome", "PipeJob", "end_fields", "pid_is_running"]
