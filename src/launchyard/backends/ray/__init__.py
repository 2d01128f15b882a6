"""Ray: runs become Ray jobs, submitted through Ray's job submission client.

``RayBackend`` is what the agent uses; ``doctor_checks`` is what ``launchyard doctor``
asks. Importing this package does not import Ray (the server imports it to check
queue configs); the backend imports Ray when an agent creates it.
"""

from launchyard.backends.ray.backend import RayBackend
from launchyard.backends.ray.doctor import doctor_checks

__all__ = ["RayBackend", "doctor_checks"]
