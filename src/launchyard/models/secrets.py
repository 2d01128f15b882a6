"""Secret values in queue configs: ``env: {HF_TOKEN: {secret: hf_…}}``.

A secret reaches the run (the agent unwraps it) but never a listing: API
responses, the web UI and uploaded logs show ``***`` in its place.
"""

from __future__ import annotations

from typing import Any

MASK = "***"
MIN_MASKED_CHARS = 4
"""Shorter secrets are not searched for in logs: masking "1" would garble every line."""


def is_secret(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"secret"}
        and isinstance(value["secret"], str | int | float)
        and not isinstance(value["secret"], bool)
    )


def unwrap(tree: Any) -> Any:
    """The tree with every ``{secret: v}`` replaced by ``v`` (what the run gets)."""
    if is_secret(tree):
        return str(tree["secret"])
    if isinstance(tree, dict):
        return {k: unwrap(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [unwrap(v) for v in tree]
    return tree


def mask(tree: Any) -> Any:
    """The tree with every secret shown as ``{secret: ***}`` (what listings show)."""
    if is_secret(tree):
        return {"secret": MASK}
    if isinstance(tree, dict):
        return {k: mask(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [mask(v) for v in tree]
    return tree


def values(tree: Any) -> list[str]:
    """Every secret's text, longest first (so a secret containing another is masked whole)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if is_secret(node):
            found.append(str(node["secret"]))
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tree)
    return sorted({v for v in found if len(v) >= MIN_MASKED_CHARS}, key=len, reverse=True)


def mask_text(text: str, secret_values: list[str]) -> str:
    for value in secret_values:
        text = text.replace(value, MASK)
    return text
