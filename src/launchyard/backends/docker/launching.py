"""What a container is made of: its image (pulled by the queue's policy), mounts, env, GPUs.

Functions over an SDK client passed in (``client``): the backend calls them on a
worker thread. Nothing here imports the Docker SDK.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launchyard.backends.base import LaunchSpec
from launchyard.backends.docker import config as cfg
from launchyard.errors import BackendError, InvalidInputError

CONFIG_MOUNT = "/launchyard/config.json"
"""Where a container finds its run config (``LAUNCHYARD_CONFIG_FILE``)."""
CONFIG_FILE = "config.json"


def ensure_image(client: Any, image: str, pull: str) -> None:
    """Make ``image`` present on the Docker host as the queue's ``pull`` policy says.

    ``missing`` pulls only an absent image, ``always`` pulls every time (a moving tag),
    ``never`` only uses what is there (images built or loaded on the host).
    """
    errors = _errors()
    if pull != "always":
        try:
            client.images.get(image)
            return
        except errors.ImageNotFound:
            if pull == "never":
                raise BackendError(
                    f"image {image!r} is not on the Docker host and the queue says "
                    "pull: never; build or load it there, or set pull: missing"
                ) from None
        except errors.APIError as exc:
            raise BackendError(f"cannot look up image {image!r}: {explain(exc)}") from exc
    try:
        client.images.pull(image)
    except errors.DockerException as exc:
        raise BackendError(
            f"image pull failed: {image!r}: {explain(exc)}; check the name and the "
            "registry login on the Docker host, or build the image there"
        ) from exc


def write_run_config(spec: LaunchSpec, folder: Path) -> Path:
    """Write the run config as JSON, readable by whichever user the container runs as."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(spec.run_config, indent=2)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"the run config is not JSON: {exc}") from exc
    tmp = folder / f"{CONFIG_FILE}.tmp"
    tmp.write_text(text)
    tmp.chmod(0o644)
    return tmp.replace(folder / CONFIG_FILE)


OUTPUT_MOUNT = "/launchyard/outputs"


def create_options(spec: LaunchSpec, folder: Path, labels: dict[str, str]) -> dict[str, Any]:
    """``containers.create`` keywords: labels, env, mounts, GPUs and resource limits.

    The environment is layered: the cache variables, the queue's ``env``, the run's
    env, then the ``LAUNCHYARD_*`` variables, which nothing overrides.
    """
    config = spec.config
    binds = [f"{folder / CONFIG_FILE}:{CONFIG_MOUNT}:ro"]
    env: dict[str, str] = {}
    if config.get("cache_dir"):
        cache_path = str(config.get("cache_path") or cfg.DEFAULT_CACHE_PATH)
        host = Path(str(config["cache_dir"])).expanduser()
        try:
            host.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cache_dir {str(host)!r} cannot be created: {exc}") from exc
        binds.append(f"{host.resolve()}:{cache_path}")
        env.update(
            XDG_CACHE_HOME=cache_path,
            HF_HOME=f"{cache_path}/huggingface",
            PIP_CACHE_DIR=f"{cache_path}/pip",
            LAUNCHYARD_CACHE_DIR=cache_path,
        )
    binds.extend(str(volume) for volume in config.get("volumes") or [])
    env.update({str(k): _env_value(v) for k, v in (config.get("env") or {}).items()})
    env.update({str(k): str(v) for k, v in spec.env.items()})
    env["LAUNCHYARD_RUN_ID"] = spec.run_id
    env["LAUNCHYARD_CONFIG_FILE"] = CONFIG_MOUNT
    outputs = spec.env.get("LAUNCHYARD_OUTPUT_DIR")
    if outputs:  # the agent's folder for this run's outputs, uploaded when the run ends
        binds.append(f"{outputs}:{OUTPUT_MOUNT}")
        env["LAUNCHYARD_OUTPUT_DIR"] = OUTPUT_MOUNT
    options: dict[str, Any] = {"labels": labels, "volumes": binds}
    options.update(cfg.container_options(config))
    if spec.gpu_ids:  # exactly the devices the agent assigned
        ids = [str(gpu) for gpu in spec.gpu_ids]
        options["device_requests"] = [
            _types().DeviceRequest(device_ids=ids, capabilities=[["gpu"]])
        ]
    else:  # none asked for: none shown, even when the image says NVIDIA_VISIBLE_DEVICES=all
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    options["environment"] = env
    return options


def explain(exc: BaseException) -> str:
    """The engine's own words for an SDK error, without the HTTP preamble."""
    return str(getattr(exc, "explanation", None) or exc)


def _env_value(value: Any) -> str:
    """A queue env value as text; booleans as YAML and JSON spell them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _errors() -> Any:
    import docker.errors

    return docker.errors


def _types() -> Any:
    import docker.types

    return docker.types
