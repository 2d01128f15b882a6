"""Secrets in queue configs: unwrapped for the run, masked everywhere else."""

from __future__ import annotations

from launchyard.models import secrets

CONFIG = {
    "gpus": 1,
    "env": {"HF_TOKEN": {"secret": "hf_abcdef"}, "PLAIN": "x", "PIN": {"secret": 42}},
}


def test_unwrap_gives_the_run_plain_values() -> None:
    assert secrets.unwrap(CONFIG)["env"] == {"HF_TOKEN": "hf_abcdef", "PLAIN": "x", "PIN": "42"}


def test_mask_hides_every_secret() -> None:
    masked = secrets.mask(CONFIG)
    assert masked["env"]["HF_TOKEN"] == {"secret": "***"} and masked["env"]["PIN"] == {
        "secret": "***"
    }
    assert "hf_abcdef" not in repr(masked)


def test_mask_text_for_logs_and_config_text() -> None:
    found = secrets.values(CONFIG)
    assert found == ["hf_abcdef"]  # too-short values are not searched for in text
    assert secrets.mask_text("token=hf_abcdef ok", found) == "token=*** ok"


def test_only_exact_secret_mappings_count() -> None:
    assert not secrets.is_secret({"secret": "x", "other": 1})
    assert not secrets.is_secret({"secret": True})
    assert secrets.unwrap({"a": [{"secret": "v"}]}) == {"a": ["v"]}
