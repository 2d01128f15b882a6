"""Text-to-image with diffusers: prompt, steps and seed come from the run config; the
images are kept as the run's outputs (shown inline on the run's page).

    launchyard launch -q sd -c examples/stable_diffusion/config.yaml --set gpus=1 \\
        -- python examples/stable_diffusion/generate.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import launchyard


def main() -> None:
    import torch
    from diffusers import DiffusionPipeline

    config = launchyard.run_config()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    # On a queue with cache_dir, HF_HOME points into the shared cache: the first run
    # downloads the weights, every later run (on any GPU) loads them from there.
    pipe = DiffusionPipeline.from_pretrained(config["model"], torch_dtype=dtype)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(device=device).manual_seed(int(config.get("seed", 0)))
    start = time.perf_counter()
    images = pipe(
        prompt=config["prompt"],
        num_inference_steps=int(config.get("steps", 25)),
        num_images_per_prompt=int(config.get("images", 1)),
        height=int(config.get("height", 512)),
        width=int(config.get("width", 512)),
        guidance_scale=float(config.get("guidance_scale", 7.5)),
        generator=generator,
    ).images
    seconds = time.perf_counter() - start
    out = Path(tempfile.mkdtemp())
    for index, image in enumerate(images):
        path = out / f"sample-{index}.png"
        image.save(path)
        launchyard.save(path, f"images/sample-{index}.png")
    metrics = {
        "seconds": round(seconds, 3),
        "images": len(images),
        "device": device,
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    launchyard.save(out / "metrics.json", "metrics.json")
    print(f"made {len(images)} image(s) of {config['prompt']!r} in {seconds:.1f}s on {device}")


if __name__ == "__main__":
    main()
