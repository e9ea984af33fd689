//! Reads the diffusers JSON files of a pipeline directory into the shapes the
//! modules are built with, refusing what this pipeline does not implement.
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_transformers::models::stable_diffusion::{unet_2d, vae};
use serde::Deserialize;
use serde_json::Value;

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// `text_encoder/config.json` (transformers' CLIPTextConfig).
#[derive(Clone, Debug, Deserialize)]
pub struct TextEncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "layer_norm_eps")]
    pub layer_norm_eps: f64,
}

fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn layer_norm_eps() -> f64 {
    1e-5
}

/// `unet/config.json` (diffusers' UNet2DConditionModel), the fields an SD 1.x UNet uses.
#[derive(Clone, Debug, Deserialize)]
struct UnetJson {
    in_channels: usize,
    out_channels: usize,
    block_out_channels: Vec<usize>,
    down_block_types: Vec<String>,
    up_block_types: Vec<String>,
    layers_per_block: usize,
    attention_head_dim: Value,
    #[serde(default)]
    num_attention_heads: Value,
    cross_attention_dim: usize,
    #[serde(default = "groups")]
    norm_num_groups: usize,
    #[serde(default = "unet_eps")]
    norm_eps: f64,
    #[serde(default = "yes")]
    flip_sin_to_cos: bool,
    #[serde(default)]
    freq_shift: f64,
    #[serde(default = "one_usize")]
    downsample_padding: usize,
    #[serde(default = "one_f64")]
    mid_block_scale_factor: f64,
    #[serde(default)]
    use_linear_projection: bool,
    #[serde(default)]
    center_input_sample: bool,
    #[serde(default)]
    transformer_layers_per_block: Value,
    #[serde(default)]
    sample_size: Option<usize>,
    #[serde(default)]
    class_embed_type: Value,
    #[serde(default)]
    addition_embed_type: Value,
}

fn groups() -> usize {
    32
}
fn unet_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn one_usize() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}

/// A per-block value given either once for all blocks or as a list.
fn per_block(value: &Value, n: usize, default: usize, what: &str) -> Result<Vec<usize>> {
    match value {
        Value::Null => Ok(vec![default; n]),
        Value::Number(v) => Ok(vec![v.as_u64().context(what.to_string())? as usize; n]),
        Value::Array(items) if items.len() == n => items.iter().map(|v| v.as_u64().map(|v| v as usize).with_context(|| what.to_string())).collect(),
        _ => bail!("unet {what}: expected a number or a list of {n}"),
    }
}

pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Latent side the model was trained at (diffusers' `sample_size`).
    pub sample_size: Option<usize>,
    pub model: unet_2d::UNet2DConditionModelConfig,
}

/// The group count candle-transformers' UNet down/up block resnets are built with.
const CANDLE_UNET_GROUPS: usize = 32;

pub fn unet(dir: &Path) -> Result<UnetConfig> {
    let j: UnetJson = read_json(&dir.join("unet/config.json"))?;
    let n = j.block_out_channels.len();
    if n == 0 || j.down_block_types.len() != n || j.up_block_types.len() != n {
        bail!("unet: block_out_channels, down_block_types and up_block_types must have the same length");
    }
    if !j.class_embed_type.is_null() || !j.addition_embed_type.is_null() {
        bail!("unet: class or added embeddings (SDXL-style) are not supported; this pipeline runs SD 1.x-family UNets");
    }
    // diffusers' `attention_head_dim` is, for SD 1.x, the number of heads; `num_attention_heads` overrides it when set.
    // candle-transformers' DownBlock2D/UpBlock2D build their resnets with 32 groups whatever the
    // config says; any other count would load and compute a different network than diffusers'.
    if j.norm_num_groups != CANDLE_UNET_GROUPS {
        bail!("unet: norm_num_groups {} is not supported (candle's UNet resnets use {CANDLE_UNET_GROUPS} groups)", j.norm_num_groups);
    }
    let heads_value = if j.num_attention_heads.is_null() { &j.attention_head_dim } else { &j.num_attention_heads };
    let heads = per_block(heads_value, n, 8, "attention heads")?;
    let layers = per_block(&j.transformer_layers_per_block, n, 1, "transformer_layers_per_block")?;
    let mut blocks = Vec::with_capacity(n);
    for i in 0..n {
        let cross = match j.down_block_types[i].as_str() {
            "CrossAttnDownBlock2D" => true,
            "DownBlock2D" => false,
            other => bail!("unet: down block type {other} is not supported"),
        };
        let up_cross = match j.up_block_types[n - 1 - i].as_str() {
            "CrossAttnUpBlock2D" => true,
            "UpBlock2D" => false,
            other => bail!("unet: up block type {other} is not supported"),
        };
        if cross != up_cross {
            bail!("unet: up blocks must mirror the down blocks");
        }
        if !j.block_out_channels[i].is_multiple_of(j.norm_num_groups) || !j.block_out_channels[i].is_multiple_of(heads[i]) {
            bail!("unet: block {i} channels must divide into norm groups and heads");
        }
        blocks.push(unet_2d::BlockConfig { out_channels: j.block_out_channels[i], use_cross_attn: cross.then_some(layers[i]), attention_head_dim: heads[i] });
    }
    let model = unet_2d::UNet2DConditionModelConfig {
        center_input_sample: j.center_input_sample,
        flip_sin_to_cos: j.flip_sin_to_cos,
        freq_shift: j.freq_shift,
        blocks,
        layers_per_block: j.layers_per_block,
        downsample_padding: j.downsample_padding,
        mid_block_scale_factor: j.mid_block_scale_factor,
        norm_num_groups: j.norm_num_groups,
        norm_eps: j.norm_eps,
        cross_attention_dim: j.cross_attention_dim,
        sliced_attention_size: None,
        use_linear_projection: j.use_linear_projection,
    };
    Ok(UnetConfig { in_channels: j.in_channels, out_channels: j.out_channels, sample_size: j.sample_size, model })
}

/// `vae/config.json` (diffusers' AutoencoderKL).
#[derive(Clone, Debug, Deserialize)]
struct VaeJson {
    #[serde(default = "three")]
    in_channels: usize,
    #[serde(default = "three")]
    out_channels: usize,
    block_out_channels: Vec<usize>,
    #[serde(default)]
    down_block_types: Vec<String>,
    #[serde(default)]
    up_block_types: Vec<String>,
    #[serde(default = "one_usize")]
    layers_per_block: usize,
    #[serde(default = "four")]
    latent_channels: usize,
    #[serde(default = "groups")]
    norm_num_groups: usize,
    #[serde(default = "scaling")]
    scaling_factor: f64,
    #[serde(default = "yes")]
    use_quant_conv: bool,
    #[serde(default = "yes")]
    use_post_quant_conv: bool,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn scaling() -> f64 {
    0.18215
}

pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub scaling_factor: f64,
    /// Pixels per latent cell along a side.
    pub scale: usize,
    pub model: vae::AutoEncoderKLConfig,
}

pub fn vae(dir: &Path) -> Result<VaeConfig> {
    let j: VaeJson = read_json(&dir.join("vae/config.json"))?;
    if j.down_block_types.iter().any(|t| t != "DownEncoderBlock2D") || j.up_block_types.iter().any(|t| t != "UpDecoderBlock2D") {
        bail!("vae: only DownEncoderBlock2D/UpDecoderBlock2D autoencoders are supported");
    }
    if j.block_out_channels.is_empty() {
        bail!("vae: block_out_channels is empty");
    }
    let scale = 1 << (j.block_out_channels.len() - 1);
    let model = vae::AutoEncoderKLConfig {
        block_out_channels: j.block_out_channels,
        layers_per_block: j.layers_per_block,
        latent_channels: j.latent_channels,
        norm_num_groups: j.norm_num_groups,
        use_quant_conv: j.use_quant_conv,
        use_post_quant_conv: j.use_post_quant_conv,
    };
    Ok(VaeConfig { in_channels: j.in_channels, out_channels: j.out_channels, scaling_factor: j.scaling_factor, scale, model })
}

/// The noise schedule of `scheduler/scheduler_config.json`. Whatever scheduler class the
/// directory names, hearth samples with DDIM (deterministic, eta = 0) on its betas.
#[derive(Clone, Debug, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    #[serde(default = "train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "beta_start")]
    pub beta_start: f64,
    #[serde(default = "beta_end")]
    pub beta_end: f64,
    #[serde(default = "scaled_linear")]
    pub beta_schedule: String,
    #[serde(default)]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "epsilon")]
    pub prediction_type: String,
    #[serde(default = "leading")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub clip_sample: bool,
}

fn train_steps() -> usize {
    1000
}
fn beta_start() -> f64 {
    0.00085
}
fn beta_end() -> f64 {
    0.012
}
fn scaled_linear() -> String {
    "scaled_linear".into()
}
fn epsilon() -> String {
    "epsilon".into()
}
fn leading() -> String {
    "leading".into()
}

pub fn scheduler(dir: &Path) -> Result<SchedulerConfig> {
    read_json(&dir.join("scheduler/scheduler_config.json"))
}

pub fn text_encoder(dir: &Path) -> Result<TextEncoderConfig> {
    read_json(&dir.join("text_encoder/config.json"))
}
