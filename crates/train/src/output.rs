//! The trained model as a GGUF: the base file's metadata (tokenizer, chat template,
//! context length) and tensors, with every adapted projection replaced by its merged
//! weight `W + scale * B A` stored as F16. The serving engine reads F16 weights into
//! f32 and multiplies in f32, so the served projections are the trained ones rounded
//! once to f16 (no 8-bit activation quantization as its Q8_0 kernels would add); the
//! untouched tensors (embeddings/output head, norms) are copied byte for byte.
use crate::model::Net;
use anyhow::{Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

pub fn write_merged(base: &Path, net: &Net, out: &Path) -> Result<()> {
    let mut file = std::fs::File::open(base).with_context(|| format!("opening {}", base.display()))?;
    let content = gguf_file::Content::read(&mut file)?;
    let mut merged = HashMap::new();
    for p in net.projections().filter(|p| p.lora.is_some()) {
        merged.insert(p.name.clone(), p.merged()?.to_dtype(DType::F32)?);
    }
    let mut infos: Vec<_> = content.tensor_infos.iter().collect();
    infos.sort_by_key(|(_, info)| info.offset);
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, _) in infos {
        let t = match merged.get(name) {
            Some(w) => QTensor::quantize(w, GgmlDType::F16)?,
            None => content.tensor(&mut file, name, &Device::Cpu)?,
        };
        tensors.push((name.as_str(), t));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let partial = out.with_extension("gguf.partial");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&partial).with_context(|| format!("creating {}", partial.display()))?);
    gguf_file::write(&mut w, &metadata, &refs)?;
    w.flush()?;
    drop(w);
    std::fs::rename(&partial, out)?;
    Ok(())
}
