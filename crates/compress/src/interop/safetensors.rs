//! safetensors ⇄ `.cxrm`: the common interchange format in, any framework's weights out.

use crate::methods::deep_compression::plan::{ModelPlan, ModelTensor};
use cxrm_format::container::output::Output;
use cxrm_format::container::reader::Cxrm;
use cxrm_format::container::value::Value;
use cxrm_format::container::writer::Writer;
use cxrm_format::dtype::DType;
use cxrm_format::error::{Error, Result};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::path::Path;

fn from_st(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::F64 => DType::F64,
        _ => return None,
    })
}

fn to_st(dtype: DType) -> Dtype {
    match dtype {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I8 => Dtype::I8,
        DType::U8 => Dtype::U8,
        DType::I32 => Dtype::I32,
        DType::I64 => Dtype::I64,
        DType::F64 => Dtype::F64,
    }
}

/// A safetensors file on its way into `.cxrm`. [`Pack::new`] adds its tensors and metadata to
/// [`Pack::writer`], where a caller may add a graph and more metadata before
/// [`Pack::write`]; the pack remembers the weights' f32 size so the written file need not be
/// read back to report its ratio.
pub struct Pack {
    pub writer: Writer<'static>,
    tensors: usize,
    params: u64,
}

/// What [`Pack::write`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packed {
    pub tensors: usize,
    /// The file's size.
    pub bytes: u64,
    /// The weights' size in f32.
    pub f32_bytes: u64,
}

impl Packed {
    /// How many times smaller than the weights in f32 the whole file is.
    pub fn ratio(&self) -> f64 {
        self.f32_bytes as f64 / self.bytes.max(1) as f64
    }
}

impl Pack {
    /// Read every tensor of a safetensors file (in file order), each stored as `plan` says
    /// (dense unless it prunes or quantizes that tensor), and its `__metadata__` entries as
    /// metadata (typed when the text is JSON, as [`write_safetensors`] writes non-string
    /// values).
    pub fn new(bytes: &[u8], plan: &ModelPlan) -> Result<Pack> {
        let st_err = |e: safetensors::SafeTensorError| {
            Error::Usage(format!("not a valid safetensors file: {e}"))
        };
        let mut writer = Writer::new();
        // Before the safetensors crate reads the header: it keeps the last of equal keys.
        if let Some(name) = duplicate_key(bytes) {
            return Err(Error::Usage(format!(
                "not a valid safetensors file: the header names {:?} twice",
                cxrm_format::text::escape(&name)
            )));
        }
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(st_err)?;
        let tensors = SafeTensors::deserialize(bytes).map_err(st_err)?;
        if let Some(extra) = meta.metadata() {
            let mut keys: Vec<_> = extra.keys().collect();
            keys.sort();
            for k in keys {
                writer.set_metadata(k.clone(), cxrm_format::json::value_from_text(&extra[k]));
            }
        }
        let mut model = Vec::new();
        for name in meta.offset_keys() {
            let view = tensors.tensor(&name).map_err(st_err)?;
            let dtype = from_st(view.dtype()).ok_or_else(|| {
                Error::Usage(format!(
                    "tensor {name:?}: safetensors dtype {:?} has no .cxrm equivalent",
                    view.dtype()
                ))
            })?;
            let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
            model.push(ModelTensor {
                name,
                dtype,
                shape,
                bytes: view.data().to_vec(),
            });
        }
        let encoded = plan.encode(&model)?;
        let mut params = 0;
        for (t, e) in model.iter().zip(encoded) {
            writer.add_tensor(&t.name, t.dtype, &t.shape, e)?;
            params += t.shape.iter().product::<u64>();
        }
        Ok(Pack {
            writer,
            tensors: model.len(),
            params,
        })
    }

    /// Record how the weights were stored, when `plan` changed them (pruned, quantized or
    /// Huffman-coded) without the retraining the method pairs with that: `compress.method`,
    /// and `compress.settings` as the user spelled the `prune` and `bits` rules, so a reader
    /// of the file can tell what was done to it.
    pub fn set_provenance(&mut self, plan: &ModelPlan, prune: Option<&str>, bits: Option<&str>) {
        let p = &plan.prune;
        let pruned =
            p.default.is_some() || p.conv.is_some() || p.fc.is_some() || !p.names.is_empty();
        if !(pruned || bits.is_some() || plan.huffman) {
            return;
        }
        let mut parts = Vec::new();
        if let Some(p) = prune {
            parts.push(format!("prune {p}"));
        }
        if let Some(b) = bits {
            parts.push(format!("bits {b}"));
        }
        if plan.huffman {
            parts.push("huffman".into());
        }
        self.writer.set_metadata(
            "compress.method",
            Value::String("deep-compression (storage only, no retraining)".into()),
        );
        self.writer
            .set_metadata("compress.settings", Value::String(parts.join(", ")));
    }

    /// Write the file atomically.
    /// Write the file under `output`'s rules (see [`Output`]): never over an input, a
    /// non-regular file or, without `force`, a read-only one; verified before it replaces
    /// anything.
    pub fn write(&self, out: &Path, output: &Output) -> Result<Packed> {
        Ok(Packed {
            tensors: self.tensors,
            bytes: self.writer.write_to(out, output)?,
            f32_bytes: self.params * 4,
        })
    }
}

/// The first key the JSON header of a safetensors file repeats (`None` when it repeats none,
/// or does not parse: the safetensors crate reports that).
/// JSON maps keep the last of equal keys, so a parser alone would silently drop a tensor.
fn duplicate_key(bytes: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct FirstDuplicate;
    impl<'de> Visitor<'de> for FirstDuplicate {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut first = None;
            while let Some(key) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if first.is_none() && !seen.insert(key.clone()) {
                    first = Some(key);
                }
            }
            Ok(first)
        }
    }
    let (header, _) = header_json(bytes)?;
    serde_json::Deserializer::from_slice(header)
        .deserialize_map(FirstDuplicate)
        .ok()
        .flatten()
}

/// A safetensors file's JSON header (after its 8-byte little-endian length), and the offset
/// where the data starts; `None` when the length does not fit the file.
fn header_json(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    Some((bytes.get(8..end)?, end))
}

/// Put `__metadata__` first in a serialised file's JSON header, entries in the order given,
/// and pad the header to 8 bytes with spaces as the safetensors writer does. Tensor offsets
/// are relative to the end of the header, so the data is unchanged.
fn with_metadata(bytes: Vec<u8>, info: &[(String, String)]) -> Result<Vec<u8>> {
    if info.is_empty() {
        return Ok(bytes);
    }
    let bad = || Error::Usage("safetensors: the serialised header did not parse".into());
    let (json, end) = header_json(&bytes).ok_or_else(bad)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|_| bad())?;
    let mut ordered = serde_json::Map::new();
    ordered.insert(
        "__metadata__".into(),
        serde_json::Value::Object(
            info.iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        ),
    );
    ordered.extend(header);
    let mut text = serde_json::to_vec(&ordered).map_err(|_| bad())?;
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - end);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

/// Decode every tensor to dense and write a safetensors file atomically. String metadata
/// goes to `__metadata__`; other metadata values are written as their JSON text.
///
/// The same file gives the same bytes: the safetensors crate writes `__metadata__` in hash
/// order, so the header is rewritten with the metadata in the file's own order.
pub fn write_safetensors(file: &Cxrm<'_>, out: &Path, output: &Output) -> Result<usize> {
    let decoded = file
        .tensors()
        .iter()
        .map(|t| Ok((t.name.to_string(), file.decode_record(t)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut views = Vec::with_capacity(decoded.len());
    for (name, data) in &decoded {
        let shape = data
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| Error::Usage("shape too large".into())))
            .collect::<Result<Vec<_>>>()?;
        let view = TensorView::new(to_st(data.dtype), shape, &data.bytes)
            .map_err(|e| Error::Usage(format!("tensor {name:?}: {e}")))?;
        views.push((name.clone(), view));
    }
    let info: Vec<(String, String)> = file
        .metadata()?
        .into_iter()
        .map(|(k, v)| {
            let text = match &v {
                Value::String(s) => s.clone(),
                other => cxrm_format::json::value_to_json(other).to_string(),
            };
            (k, text)
        })
        .collect();
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| Error::Usage(format!("safetensors: {e}")))?;
    let bytes = with_metadata(bytes, &info)?;
    output.write(out, |w| std::io::Write::write_all(w, &bytes), |_| Ok(()))?;
    Ok(decoded.len())
}
