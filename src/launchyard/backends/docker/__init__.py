"""The ``docker`` backend (see :mod:`launchyard.backends.docker.backend`).

Split in three: ``config`` (a queue's keys and rules, pure, used by the server),
``backend`` (containers through the Docker SDK) and ``logs`` (a container's output
mirrored into a file). The SDK is imported only when a backend is built.
"""

from launchyard.backends.docker.backend import DockerBackend
from launchyard.backends.docker.doctor import doctor_checks

__all__ = ["DockerBackend", "doctor_checks"]
