"""Container start latency: submit→running for a docker queue run, beside plain `docker run`.

    DOCKER_HOST=unix:///… python benchmarks/docker_start.py [--runs 50] [--image local/busybox:1]

launchyard's figure includes the submission, the agent's claim, GPU-free device
assignment, container create + start through the Docker SDK and the report back;
the peer is `docker run -d` of the same image and command through the same SDK
(create + start), measured on the same engine in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from harness import Stack, percentile, transition_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image", default="local/busybox:1")
    args = parser.parse_args()

    import docker

    engine = docker.from_env()
    peer = []
    for _ in range(args.runs):
        start = time.perf_counter()
        container = engine.containers.run(args.image, ["sleep", "1"], detach=True)
        peer.append(time.perf_counter() - start)
        container.wait()
        container.remove()

    with Stack() as stack:
        c = stack.client()
        c.create_queue(
            "default",
            {"name": "dock", "resource": "docker", "config": "image: ${image_uri}\ngpus: 0\n"},
        )
        stack.agent("dock", jobs=1)
        ours = []
        for _ in range(args.runs):
            run = c.submit(
                "default", {"queue": "dock", "image": args.image, "command": ["sleep", "1"]}
            )
            while (shown := c.get_run(run["id"]))["state"] not in ("finished", "failed"):
                time.sleep(0.01)
            ours.append(transition_time(shown, "running") - transition_time(shown, "queued"))
        c.close()
    engine.close()

    print(
        f"\ncontainer start latency — {args.runs} runs of `sleep 1` in {args.image}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print(f"{'':<26}{'launchyard':>12}{'docker run':>12}{'ratio':>8}")
    for q in (50, 99):
        a, b = percentile(ours, q) * 1000, percentile(peer, q) * 1000
        print(f"{f'start p{q} (ms)':<26}{a:>12.1f}{b:>12.1f}{a / b:>8.2f}")


if __name__ == "__main__":
    main()
