//! Reading a GGUF file: the one place the text engine opens model files. The
//! header gives the tokenizer and the model's facts (`ModelInfo`); the weights
//! are read only when the model is loaded to run.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;

use super::model::{self, Model};
use super::tokenizer::Tokenizer;
use super::ModelInfo;

/// The header of the GGUF at `path`, and the open file positioned for its tensors.
fn open(path: &Path) -> Result<(gguf_file::Content, File)> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file).with_context(|| format!("reading GGUF {}", path.display()))?;
    Ok((content, file))
}

/// Facts, tokenizer and weights of the GGUF at `path`.
pub(super) fn load(path: &Path) -> Result<(ModelInfo, Tokenizer, Box<dyn Model>)> {
    let (content, mut file) = open(path)?;
    let tokenizer = Tokenizer::from_gguf(&content).context("building the tokenizer")?;
    let info = model_info(&content, &tokenizer, path);
    let model = model::load(&content, &mut file).context("loading the model weights")?;
    Ok((info, tokenizer, model))
}

/// Tokenizer and model facts of the GGUF at `path`, without the weights.
pub(super) fn read_vocab(path: &Path) -> Result<(ModelInfo, Tokenizer)> {
    let (content, _) = open(path)?;
    let tokenizer = Tokenizer::from_gguf(&content).context("building the tokenizer")?;
    Ok((model_info(&content, &tokenizer, path), tokenizer))
}

fn model_info(content: &gguf_file::Content, tokenizer: &Tokenizer, path: &Path) -> ModelInfo {
    let md = &content.metadata;
    let text = |key: &str| md.get(key).and_then(|v| v.to_string().ok()).cloned();
    let arch = text("general.architecture").unwrap_or_default();
    let context_length =
        md.get(&format!("{arch}.context_length")).and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from))).map_or(2048, |n| n as usize);
    let name = text("general.name").or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned())).unwrap_or_default();
    ModelInfo {
        arch,
        name,
        context_length,
        vocab_size: tokenizer.vocab_size(),
        bos: tokenizer.bos(),
        stop_tokens: tokenizer.stop_tokens().to_vec(),
        fim: tokenizer.fim(),
        chat_template: text("tokenizer.chat_template"),
        add_bos: tokenizer.add_bos(),
    }
}
