"""The examples run for real: hello_world, and stable_diffusion on the CPU with a tiny,
randomly initialised pipeline built here (no weights can be downloaded on this machine)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tests.conftest import require
from tests.e2e.conftest import LiveServer, wait_until, write

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_hello_world(live_server: LiveServer) -> None:
    live_server.cli("queue", "create", "-f", str(EXAMPLES / "hello_world" / "queue.yaml"))
    live_server.start_agent("-q", "hello", "-j", "1", "--gpus", "none")
    result = live_server.cli(
        "launch",
        "-q",
        "hello",
        "-c",
        str(EXAMPLES / "hello_world" / "config.yaml"),
        "--follow",
        "--",
        sys.executable,
        str(EXAMPLES / "hello_world" / "hello.py"),
    )
    assert "hello, launchyard!" in result.stdout
    run_id = result.stdout.strip().splitlines()[-1]
    c = live_server.client()
    assert json.loads(c.download(run_id, "greeting.json")) == {"greeted": "launchyard"}


def byte_characters() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each of the 256 bytes (byte-level BPE)."""
    kept = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    kept += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in kept:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_pipeline(folder: Path) -> None:
    """A StableDiffusionPipeline of a few thousand random weights, saved like a real one."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        norm_num_groups=2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            pad_token_id=1,
            vocab_size=600,
        )
    )
    # A byte-level vocabulary with no merges: every character is a token.
    chars = byte_characters()
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in chars + [c + "</w>" for c in chars]:
        vocab[token] = len(vocab)
    write(folder / "vocab.json", json.dumps(vocab))
    write(folder / "merges.txt", "#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / "pipeline")


def test_stable_diffusion_on_cpu(live_server: LiveServer, tmp_path: Path) -> None:
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401

        have = True
    except ImportError:
        have = False
    require("diffusers, transformers and torch", have, "pip install -e '.[dev]'")
    tiny_pipeline(tmp_path / "model")
    queue = (
        (EXAMPLES / "stable_diffusion" / "queue.yaml")
        .read_text()
        .replace("/srv/launchyard-cache", str(tmp_path / "cache"))
    )
    live_server.cli("queue", "create", "-f", str(write(tmp_path / "sd.yaml", queue)))
    live_server.start_agent("-q", "sd", "-j", "1", "--gpus", "0")
    config = write(
        tmp_path / "run.yaml",
        json.dumps(
            {
                "model": str(tmp_path / "model" / "pipeline"),
                "prompt": "a tiny lighthouse",
                "steps": 2,
                "seed": 7,
                "images": 2,
                "height": 32,
                "width": 32,
                "guidance_scale": 1.0,
            }
        ),
    )
    result = live_server.cli(
        "launch",
        "-q",
        "sd",
        "--set",
        "gpus=1",
        "-c",
        str(config),
        "--follow",
        "--",
        sys.executable,
        str(EXAMPLES / "stable_diffusion" / "generate.py"),
        timeout=300,
    )
    assert "made 2 image(s) of 'a tiny lighthouse'" in result.stdout, result.stderr
    run_id = result.stdout.strip().splitlines()[-1]
    c = live_server.client()
    wait_until(lambda: len(c.list_files(run_id)) == 3, 30)
    png = c.download(run_id, "images/sample-0.png")
    assert png.startswith(b"\x89PNG")
    metrics = json.loads(c.download(run_id, "metrics.json"))
    assert metrics["images"] == 2 and metrics["device"] == "cpu" and metrics["gpus"] == "0"


pytestmark = pytest.mark.e2e
