"""Images built from a code folder on the agent's Docker host (``launchyard launch --build``).

A folder with a ``Dockerfile`` is built as it is. A folder with only a
``requirements.txt`` and an entry point (``main.py``, ``train.py`` or its one
``*.py`` file) gets a generated Dockerfile: a Python base image, the
requirements installed, the code copied to ``/app``, the entry point as command.

The tag is a hash of what goes into the build (every file's path and bytes, the
Dockerfile, the base image), so an unchanged folder maps to the same tag and is
not built again: :func:`build_image` returns at once when the tag exists. The
tag is what a run's job records, so the job relaunches without the code.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from launchyard.errors import BackendError, InvalidInputError, MissingDependencyError

DEFAULT_BASE_IMAGE = "python:3.11-slim"
IMAGE_REPOSITORY = "launchyard-build"
GENERATED_DOCKERFILE = "Dockerfile.launchyard"
ENTRY_POINTS = ("main.py", "train.py")
_SKIPPED = {".git", "__pycache__", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_REPO_CHARS = re.compile(r"[^a-z0-9_.-]+")


def dockerfile_for(folder: Path, base_image: str = DEFAULT_BASE_IMAGE) -> tuple[str, str | None]:
    """The Dockerfile's name in the build context, and its text when launchyard writes it."""
    if (folder / "Dockerfile").is_file():
        return "Dockerfile", None
    entry = _entry_point(folder)
    lines = [f"FROM {base_image}", "WORKDIR /app"]
    if (folder / "requirements.txt").is_file():
        lines += [
            "COPY requirements.txt /app/requirements.txt",
            "RUN pip install --no-cache-dir -r /app/requirements.txt",
        ]
    lines += ["COPY . /app", f'CMD ["python", "{entry}"]']
    return GENERATED_DOCKERFILE, "\n".join(lines) + "\n"


def image_tag(folder: Path, base_image: str = DEFAULT_BASE_IMAGE) -> str:
    """``launchyard-build/<folder name>:<content hash>`` for what the build would use."""
    name, generated = dockerfile_for(folder, base_image)
    digest = hashlib.sha256()
    for relative, path in _files(folder):
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(f"{name}\0{generated or ''}".encode())
    repo = _REPO_CHARS.sub("-", folder.resolve().name.lower()).strip("-._") or "code"
    return f"{IMAGE_REPOSITORY}/{repo}:{digest.hexdigest()[:20]}"


def build_image(client: Any, path: Path | str, base_image: str = DEFAULT_BASE_IMAGE) -> str:
    """Build ``path`` on the Docker host behind ``client`` (unless built already); its tag."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InvalidInputError(f"--build {str(path)!r} is not a folder")
    try:
        import docker.errors
    except ImportError as exc:
        raise MissingDependencyError(
            "building images needs the Docker SDK: pip install 'launchyard[docker]'"
        ) from exc
    tag = image_tag(folder, base_image)
    try:
        client.images.get(tag)
        return tag  # the same content was built before
    except docker.errors.ImageNotFound:
        pass
    name, generated = dockerfile_for(folder, base_image)
    context = _context(folder, name, generated)
    try:
        client.images.build(
            fileobj=context,
            custom_context=True,
            dockerfile=name,
            tag=tag,
            rm=True,
            forcerm=True,
            labels={"launchyard.build": folder.resolve().name},
        )
    except docker.errors.BuildError as exc:
        tail = "".join(str(item.get("stream") or item.get("error") or "") for item in exc.build_log)
        raise BackendError(f"image build failed: {exc.msg}\n{tail[-2000:]}") from exc
    except docker.errors.APIError as exc:
        raise BackendError(f"image build failed: {exc.explanation or exc}") from exc
    return tag


def _entry_point(folder: Path) -> str:
    for name in ENTRY_POINTS:
        if (folder / name).is_file():
            return name
    scripts = sorted(p.name for p in folder.glob("*.py"))
    if len(scripts) == 1:
        return scripts[0]
    raise InvalidInputError(
        f"cannot build {str(folder)!r}: add a Dockerfile, or a requirements.txt with an entry "
        f"point ({' or '.join(ENTRY_POINTS)}); found {', '.join(scripts) or 'no .py file'}"
    )


def _files(folder: Path) -> Iterator[tuple[str, Path]]:
    """Every file of the build context in a stable order, caches and VCS folders left out."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED)
        for name in sorted(files):
            path = Path(root) / name
            if path.is_file():
                yield path.relative_to(folder).as_posix(), path


def _context(folder: Path, dockerfile: str, generated: str | None) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for relative, path in _files(folder):
            tar.add(path, arcname=relative, recursive=False)
        if generated is not None:
            data = generated.encode()
            info = tarfile.TarInfo(dockerfile)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer
