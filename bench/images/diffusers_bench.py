"""Denoising steps/s of diffusers on a diffusers directory, measured as image_bench.rs
measures hearth: the same job at two step counts, extra steps over extra time.

    python bench/images/diffusers_bench.py DIR [SIZE] [STEPS_LO] [STEPS_HI] [THREADS]
"""

import json
import sys
import time

import torch
from diffusers import StableDiffusionPipeline


def main():
    args = sys.argv[1:]
    directory = args[0]
    size, lo, hi, threads = (int(a) for a in (args[1:] + ["256", "2", "8", "2"][len(args) - 1 :])[:4])
    torch.set_num_threads(threads)
    pipe = StableDiffusionPipeline.from_pretrained(directory, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn((1, 4, size // pipe.vae_scale_factor, size // pipe.vae_scale_factor), generator=torch.Generator().manual_seed(0))

    def run(steps):
        start = time.perf_counter()
        with torch.inference_mode():
            pipe("a photo of a red cat", height=size, width=size, num_inference_steps=steps, guidance_scale=7.5, latents=latents.clone(), output_type="np")
        return time.perf_counter() - start

    run(1)  # warm-up
    t_lo, t_hi = run(lo), run(hi)
    print(json.dumps(dict(side="diffusers", size=size, steps_lo=lo, steps_hi=hi, t_lo=round(t_lo, 3), t_hi=round(t_hi, 3), steps_per_s=round((hi - lo) / max(t_hi - t_lo, 1e-9), 3), torch=torch.__version__)))


if __name__ == "__main__":
    main()
