# `make bench`: issue 7's comparisons, launchyard side by side with Slurm and Ray on this
# machine (benchmarks/README.md has the latest figures). It installs what is missing
# (Debian's Slurm and munge, pip's ray[default] through '.[dev]'), starts both engines with
# the CI's own service scripts, runs benchmarks/compare.py, and stops the engines by PID
# whatever happens. Needs root, like .ci/run (munged, mknod for the fake GPU devices).
#
#   make bench                              # full sizes (about half an hour on 2 cores)
#   make bench-quick                        # small sizes (a few minutes)
#   make bench BENCH_ARGS="--only packing"  # any flags of benchmarks/compare.py

SHELL := /bin/bash
PYTHON ?= python3
BENCH_ARGS ?=
BENCH_WORK ?= /tmp/launchyard-bench

.PHONY: bench bench-quick

bench:
	@set -euo pipefail; \
	export CI_WORK="$(BENCH_WORK)"; rm -rf "$$CI_WORK"; mkdir -p "$$CI_WORK"; \
	APT_PACKAGES=""; \
	source .ci/services/slurm.sh; source .ci/services/ray.sh; \
	missing=""; \
	for p in $$APT_PACKAGES; do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "== installing$$missing"; apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi; \
	if ! $(PYTHON) -c 'import launchyard, ray.job_submission' 2>/dev/null; then \
	  echo "== installing launchyard[dev]"; $(PYTHON) -m pip install -q -e '.[dev]'; \
	fi; \
	trap 'stop_ray || true; stop_slurm || true' EXIT; trap 'exit 130' INT TERM; \
	echo "== starting Slurm and Ray"; start_slurm; start_ray; \
	$(PYTHON) benchmarks/compare.py $(BENCH_ARGS)

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_ARGS="--quick $(BENCH_ARGS)"
