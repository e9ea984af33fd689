//! Reader for CTranslate2's `model.bin` (spec v6): a flat list of named tensors
//! plus aliases. Every float variable is widened to f32 at load, so the model
//! code sees one dtype whatever the file stores.
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// The variables of a CTranslate2 model, by name (aliases resolved).
pub struct Ct2Model {
    pub spec: String,
    pub tensors: HashMap<String, Tensor>,
    /// Scalars (rank 0) such as `encoder/num_heads`, as integers.
    pub scalars: HashMap<String, i64>,
}

impl Ct2Model {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        parse(&bytes).with_context(|| format!("parsing the CTranslate2 model {}", path.display()))
    }

    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).with_context(|| format!("the model has no variable `{name}`"))
    }

    pub fn scalar(&self, name: &str) -> Result<i64> {
        self.scalars.get(name).copied().with_context(|| format!("the model has no scalar `{name}`"))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.pos + n > self.bytes.len() {
            bail!("truncated at byte {} (wanted {n} more)", self.pos);
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    /// u16 length (counting the trailing NUL), then the bytes.
    fn string(&mut self) -> Result<String> {
        let len = self.u16()? as usize;
        let raw = self.take(len)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        Ok(String::from_utf8(raw.to_vec())?)
    }
}

/// CTranslate2's DataType codes.
fn dtype_of(code: u8) -> Result<(DType, usize)> {
    Ok(match code {
        0 => (DType::F32, 4),
        1 => (DType::U8, 1),  // int8: only scalars (flags) in the models we load
        2 => (DType::I64, 2), // int16: widened below
        3 => (DType::I64, 4), // int32: widened below
        4 => (DType::F16, 2),
        5 => (DType::BF16, 2),
        other => bail!("unsupported CTranslate2 data type {other}"),
    })
}

fn parse(bytes: &[u8]) -> Result<Ct2Model> {
    let mut r = Reader { bytes, pos: 0 };
    let version = r.u32()?;
    if version != 6 {
        bail!("CTranslate2 model version {version} (only version 6 is supported)");
    }
    let spec = r.string()?;
    let _revision = r.u32()?;
    let count = r.u32()? as usize;
    let mut tensors = HashMap::new();
    let mut scalars = HashMap::new();
    for _ in 0..count {
        let name = r.string()?;
        let rank = r.u8()? as usize;
        let dims = (0..rank).map(|_| r.u32().map(|d| d as usize)).collect::<Result<Vec<_>>>()?;
        let (dtype, width) = dtype_of(r.u8()?)?;
        let byte_count = r.u32()? as usize;
        let data = r.take(byte_count)?;
        let elements: usize = dims.iter().product();
        if elements * width != byte_count {
            bail!("variable `{name}`: {byte_count} bytes for shape {dims:?}");
        }
        if rank == 0 {
            let value = match width {
                1 => data[0] as i8 as i64,
                2 => i16::from_le_bytes([data[0], data[1]]) as i64,
                _ => i32::from_le_bytes(data[..4].try_into()?) as i64,
            };
            scalars.insert(name, value);
            continue;
        }
        let tensor = match dtype {
            DType::F32 | DType::F16 | DType::BF16 => Tensor::from_raw_buffer(data, dtype, &dims, &Device::Cpu)?.to_dtype(DType::F32)?,
            _ => continue, // integer tensors (e.g. alignment heads) are not needed
        };
        tensors.insert(name, tensor);
    }
    let aliases = r.u32()? as usize;
    for _ in 0..aliases {
        let alias = r.string()?;
        let target = r.string()?;
        if let Some(t) = tensors.get(&target).cloned() {
            tensors.insert(alias, t);
        }
    }
    Ok(Ct2Model { spec, tensors, scalars })
}
