"""``launchyard doctor`` checks for Slurm: the tools, the controller, GPUs in ``gres``."""

from __future__ import annotations

from typing import Any

from launchyard.backends.slurm.commands import SlurmCommands
from launchyard.errors import MissingDependencyError

Check = tuple[str, bool, str]


def doctor_checks(options: dict[str, Any]) -> list[Check]:
    """``(name, ok, detail)`` for each check, given the agent config's ``slurm`` options.

    Stops at the first check that fails when the later ones could only fail too.
    """
    try:
        commands = SlurmCommands(
            bin_dir=options.get("bin_dir"),
            slurm_conf=options.get("slurm_conf"),
            timeout_s=float(options.get("command_timeout_s", 10.0)),
        )
    except MissingDependencyError as exc:
        return [("slurm tools", False, exc.message)]
    checks: list[Check] = [("slurm tools", True, f"sbatch is {commands.paths['sbatch']}")]
    status, out = commands.run_sync("sinfo", ["-h", "-N", "-o", "%N|%t|%G"])
    if status != 0:
        conf = commands.env.get("SLURM_CONF", "the default slurm.conf")
        detail = f"sinfo failed ({out.strip()}); is slurmctld running, and is {conf} its config?"
        return [*checks, ("slurm controller", False, detail)]
    nodes = {}
    for line in out.splitlines():
        name, state, gres = (line.split("|") + ["", ""])[:3]
        nodes[name.strip()] = (state.strip(), gres.strip())
    states = sorted({state for state, _ in nodes.values()})
    checks.append(
        ("slurm controller", bool(nodes), f"sinfo sees {len(nodes)} node(s): {', '.join(states)}")
    )
    with_gpus = [f"{name} ({gres})" for name, (_, gres) in nodes.items() if "gpu" in gres]
    if with_gpus:
        checks.append(("slurm GPUs", True, f"GPUs in gres on {', '.join(with_gpus)}"))
    else:
        checks.append(
            (
                "slurm GPUs",
                False,
                "no node lists gpu in its Gres: set GresTypes=gpu and Gres=gpu:N in slurm.conf "
                "(runs asking for GPUs would wait forever)",
            )
        )
    return checks
