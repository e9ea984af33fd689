"""Builds tests/fixtures/tiny-sd: a Stable-Diffusion-1.x-shaped pipeline with tiny,
randomly initialised weights (fixed seeds) in diffusers' own layout, and records
diffusers' outputs for fixed inputs so hearth's Rust pipeline can be checked against it.

These weights make noise, not pictures: they are a stand-in that proves the code path
(config reading, tokenizer, CLIP, UNet, VAE, DDIM, guidance, img2img, inpainting).

    python3 -m venv .venv-img && .venv-img/bin/pip install torch diffusers transformers safetensors
    .venv-img/bin/python scripts/images/make_tiny_sd.py [out_dir]
"""

import json
import os
import sys
import tempfile

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.models.autoencoders import vae as vae_module
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img as img2img_module
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "tiny-sd")
SIZE = 256
STEPS = 5
GUIDANCE = 7.5
STRENGTH = 0.6
PROMPT = "a photo of a red cat"
WORDS = ["a", "photo", "of", "the", "red", "blue", "cat", "dog", "sky", "house", "tree", "painting", "otter"]


def bytes_to_unicode():
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tokenizer(tmp):
    """A CLIP BPE vocabulary laid out like the real one (bytes, bytes + </w>, merges, specials), tiny."""
    chars = bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars]
    merges = []
    for word in WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            merged = parts[0] + parts[1]
            if merged not in vocab:
                vocab.append(merged)
            parts = [merged] + parts[2:]
    merges = list(dict.fromkeys(merges))
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(tmp, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f)
    with open(os.path.join(tmp, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), model_max_length=77), len(vocab)


def build():
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, vocab_size = write_tokenizer(tmp)
        bpe_files = {name: open(os.path.join(tmp, name)).read() for name in ("vocab.json", "merges.txt")}
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=32,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    torch.manual_seed(1)
    unet = UNet2DConditionModel(
        sample_size=SIZE // 8,
        in_channels=4,
        out_channels=4,
        # candle-transformers' DownBlock2D/UpBlock2D build their resnets with 32 groups whatever the
        # config says, so the widths are multiples of 32 and norm_num_groups is SD's own 32.
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        norm_num_groups=32,
    )
    torch.manual_seed(2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=SIZE,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        num_train_timesteps=1000,
        timestep_spacing="leading",
    )
    return bpe_files, StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def gradient_picture():
    """A smooth, deterministic source picture for img2img and inpainting."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1)
    rgb = np.stack([x, y, 0.5 + 0.5 * np.sin(6.0 * x * y)], axis=-1)
    return (rgb * 255).round().astype(np.uint8)


def pixels(np_images):
    # diffusers' numpy_to_pil: (x * 255).round() as uint8
    return torch.from_numpy((np_images[0] * 255).round().astype(np.uint8))


def main():
    os.makedirs(OUT, exist_ok=True)
    bpe_files, pipe = build()
    # The UNet and VAE are stored in half precision to keep the fixture small (~3 MB); both sides
    # compute in f32 from those same rounded values (hearth widens half-precision files on load).
    pipe.unet.to(torch.float16)
    pipe.vae.to(torch.float16)
    pipe.save_pretrained(OUT, safe_serialization=True)
    # Ship the tokenizer as SD 1.x checkpoints do (vocab.json + merges.txt), so both sides read the BPE files.
    tok_dir = os.path.join(OUT, "tokenizer")
    for name, text in bpe_files.items():
        with open(os.path.join(tok_dir, name), "w") as f:
            f.write(text)
    if os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        os.remove(os.path.join(tok_dir, "tokenizer.json"))
    pipe = StableDiffusionPipeline.from_pretrained(OUT, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    latent_shape = (1, 4, SIZE // 8, SIZE // 8)
    gen = torch.Generator().manual_seed(1234)
    init_latents = torch.randn(latent_shape, generator=gen)
    img_noise = torch.randn(latent_shape, generator=gen)
    tensors = {"txt2img.init_latents": init_latents, "img2img.noise": img_noise}

    with torch.no_grad():
        ids = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        tensors["prompt.input_ids"] = ids[0].to(torch.int64)
        tensors["prompt.embeddings"] = pipe.text_encoder(ids)[0][0]

    common = dict(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE)
    out = pipe(**common, height=SIZE, width=SIZE, latents=init_latents.clone(), output_type="latent")
    tensors["txt2img.latents"] = out.images[0]
    out = pipe(**common, height=SIZE, width=SIZE, latents=init_latents.clone(), output_type="np")
    tensors["txt2img.pixels"] = pixels(out.images)

    # Encoding takes the posterior mean (hearth does too) and the img2img noise is given, so no torch RNG is involved.
    vae_module.DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mean
    img2img_module.randn_tensor = lambda *a, **k: img_noise.clone()
    from PIL import Image

    source = gradient_picture()
    tensors["source.pixels"] = torch.from_numpy(source)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    out = img2img(**common, image=Image.fromarray(source), strength=STRENGTH, output_type="np")
    tensors["img2img.pixels"] = pixels(out.images)

    # Repaint the left half and a square in the lower right; keep the rest.
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[:, : SIZE // 2] = 255
    mask[SIZE * 5 // 8 : SIZE * 7 // 8, SIZE * 5 // 8 : SIZE * 7 // 8] = 255
    tensors["inpaint.mask"] = torch.from_numpy(mask)
    inpaint = StableDiffusionInpaintPipeline(**pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    out = inpaint(**common, image=Image.fromarray(source), mask_image=Image.fromarray(mask), height=SIZE, width=SIZE, strength=1.0, latents=img_noise.clone(), output_type="np")
    tensors["inpaint.pixels"] = pixels(out.images)

    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "reference.safetensors"))
    meta = dict(
        diffusers=diffusers.__version__,
        torch=torch.__version__,
        prompt=PROMPT,
        size=SIZE,
        steps=STEPS,
        guidance=GUIDANCE,
        img2img_strength=STRENGTH,
        inpaint_strength=1.0,
        note="tiny random weights: a stand-in for tests, not a model. UNet and VAE stored in float16, computed in float32. Encodes take the VAE posterior mean; noise is given explicitly.",
    )
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(meta, f, indent=2)
    for k, v in tensors.items():
        print(k, tuple(v.shape), v.dtype, float(v.float().min()), float(v.float().max()), float(v.float().std()))


if __name__ == "__main__":
    main()
