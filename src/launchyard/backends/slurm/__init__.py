"""Slurm: runs become batch jobs submitted from a login node with Slurm's own tools.

``SlurmBackend`` is what the agent uses; ``doctor_checks`` is what ``launchyard doctor``
asks. Nothing here imports more than the standard library and launchyard itself.
"""

from launchyard.backends.slurm.backend import SlurmBackend
from launchyard.backends.slurm.doctor import doctor_checks

__all__ = ["SlurmBackend", "doctor_checks"]
