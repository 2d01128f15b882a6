"""A focused mock of the Kubernetes API server for the backend's tests.

It speaks real HTTP on 127.0.0.1 so the official ``kubernetes`` client is exercised
end to end: ``batch/v1`` Jobs (with a small Job controller that makes pods and
counts their ends), Pods (list/get/watch by label selector, logs), ConfigMaps,
owner-reference garbage collection with propagation policies, 409 AlreadyExists,
404 NotFound, 422 Invalid, watches with ``resourceVersion`` and 410 Gone after
compaction. Test hooks play the scheduler and the kubelet (``cluster.py``).
"""

from k8s_mock.cluster import UNSCHEDULABLE_GPU, MockKubernetes

__all__ = ["UNSCHEDULABLE_GPU", "MockKubernetes"]
