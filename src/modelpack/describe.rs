//! What a model's files say about it: safetensors headers (dtypes -> precision, tensor
//! shapes -> parameter count), GGUF headers (architecture, file type -> quantization,
//! tensor infos -> parameter count) and Hugging Face's `config.json` (`architectures`,
//! `model_type`, `torch_dtype`). Every reader is bounded: a header larger than the named
//! limit is refused before anything is allocated for it.
//!
//! Not for: loading tensors. Only headers are read; a 100 GiB weight file costs a few KiB
//! of reads here.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Largest safetensors JSON header accepted: the bound of the `safetensors` reference
/// implementation (`MAX_HEADER_SIZE`, 100,000,000 bytes), so every file it loads is read here.
pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Most bytes read from the start of a GGUF file for its header (metadata and tensor
/// infos). The largest vocabularies (256k tokens with merges) take tens of MiB.
pub const MAX_GGUF_HEADER: u64 = 256 << 20;

/// Longest GGUF string read into memory (a key, or the value of a key hoist looks at);
/// longer values of other keys are skipped, still within [`MAX_GGUF_HEADER`].
pub const MAX_GGUF_STRING: u64 = 1 << 20;

/// Most GGUF tensors and metadata entries accepted (llama.cpp's largest MoE models have a
/// few tens of thousands of tensors).
pub const MAX_GGUF_ENTRIES: u64 = 1 << 20;

/// Dimensions a GGUF tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_GGUF_DIMS: u32 = 4;

/// Largest `config.json` read (real ones are a few KiB).
pub const MAX_CONFIG_JSON: u64 = 16 << 20;

/// What the files of a model say about it; every field is a guess that a Modelfile, a
/// Kitfile or a flag overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Described {
    /// `config.architecture` (`architectures[0]` of config.json, GGUF `general.architecture`).
    pub architecture: Option<String>,
    /// `descriptor.family` (config.json `model_type`, else GGUF `general.architecture`).
    pub family: Option<String>,
    /// `config.format`: `safetensors`, `gguf`, `onnx`, `pytorch`, ...
    pub format: Option<String>,
    /// `config.paramSize`, e.g. `0.6B`, from the summed tensor shapes.
    pub param_size: Option<String>,
    /// `config.precision`, e.g. `bf16`: the dtype holding the most parameters.
    pub precision: Option<String>,
    /// `config.quantization`, e.g. `Q4_K_M` (GGUF `general.file_type`).
    pub quantization: Option<String>,
}

impl Described {
    /// What a ModelPack config (`bytes`) says, with its `descriptor.revision` and
    /// `descriptor.sourceURL` (where its files were packed from); `None` when it is not JSON.
    pub fn from_config(bytes: &[u8]) -> Option<(Described, Option<String>, Option<String>)> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let s = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let described = Described {
            architecture: s(&v["config"]["architecture"]),
            family: s(&v["descriptor"]["family"]),
            format: s(&v["config"]["format"]),
            param_size: s(&v["config"]["paramSize"]),
            precision: s(&v["config"]["precision"]),
            quantization: s(&v["config"]["quantization"]),
        };
        Some((described, s(&v["descriptor"]["revision"]), s(&v["descriptor"]["sourceURL"])))
    }
}

/// The header of one safetensors file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SafetensorsInfo {
    /// Parameters per dtype (`F16`, `BF16`, ...).
    pub params_by_dtype: BTreeMap<String, u64>,
}

impl SafetensorsInfo {
    /// All parameters.
    pub fn params(&self) -> u64 {
        self.params_by_dtype.values().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// One file [`describe_files`] reads: a file on disk, or the first bytes of a file that is
/// not here (a hub's file, fetched with `Range`) with the whole file's length. Bytes past
/// `head` read as zeros, as they would from a sparse copy padded to `len`.
#[derive(Clone, Copy, Debug)]
pub enum FileBytes<'a> {
    /// A file on disk.
    Path(&'a Path),
    /// The first bytes of a file of `len` bytes; `what` names it in errors.
    Head { head: &'a [u8], len: u64, what: &'a str },
}

impl FileBytes<'_> {
    /// A reader of the file from its start, its length, and its name for errors.
    fn open(&self) -> Result<(Box<dyn Read + '_>, u64, String)> {
        match *self {
            FileBytes::Path(path) => {
                let f = File::open(path).at(path)?;
                let len = f.metadata().at(path)?.len();
                Ok((Box::new(BufReader::new(f)), len, path.display().to_string()))
            }
            FileBytes::Head { head, len, what } => {
                let pad = len.saturating_sub(head.len() as u64);
                Ok((Box::new(head.chain(io::repeat(0).take(pad))), len.max(head.len() as u64), what.to_string()))
            }
        }
    }
}

/// Read the header of a safetensors file: an 8-byte little-endian length, then that many
/// bytes of JSON mapping tensor names to `{dtype, shape, data_offsets}` (and an optional
/// `__metadata__`).
pub fn read_safetensors(file: FileBytes<'_>) -> Result<SafetensorsInfo> {
    let (mut f, file_len, what) = file.open()?;
    let bad = |reason: String| Error::malformed("safetensors header", what.clone(), reason);
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| bad(format!("no length: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_SAFETENSORS_HEADER {
        return Err(bad(format!("header of {n} bytes exceeds {MAX_SAFETENSORS_HEADER}")));
    }
    if n.saturating_add(8) > file_len {
        return Err(bad(format!("header of {n} bytes is longer than the file ({file_len} bytes)")));
    }
    let mut buf = Vec::with_capacity(n as usize);
    f.take(n).read_to_end(&mut buf).map_err(|e| bad(format!("header: {e}")))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&buf).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    let mut info = SafetensorsInfo::default();
    for (name, t) in &map {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad(format!("tensor {name}: no dtype")))?;
        let shape = t.get("shape").and_then(|s| s.as_array()).ok_or_else(|| bad(format!("tensor {name}: no shape")))?;
        let mut count = 1u64;
        for d in shape {
            let d = d.as_u64().ok_or_else(|| bad(format!("tensor {name}: shape is not unsigned integers")))?;
            count = count.checked_mul(d).ok_or_else(|| bad(format!("tensor {name}: shape overflows")))?;
        }
        let e = info.params_by_dtype.entry(dtype.to_string()).or_insert(0);
        *e = e.saturating_add(count);
    }
    Ok(info)
}

/// What hoist reads from a GGUF header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GgufInfo {
    /// GGUF version (2 or 3; version 1 used 32-bit counts and is refused).
    pub version: u32,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub file_type: Option<u32>,
    /// Sum of the element counts of every tensor info.
    pub params: u64,
    /// Number of tensors.
    pub tensors: u64,
}

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// GGUF metadata value types (gguf.md `gguf_metadata_value_type`).
mod gguf_type {
    pub const UINT8: u32 = 0;
    pub const INT8: u32 = 1;
    pub const UINT16: u32 = 2;
    pub const INT16: u32 = 3;
    pub const UINT32: u32 = 4;
    pub const INT32: u32 = 5;
    pub const FLOAT32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const UINT64: u32 = 10;
    pub const INT64: u32 = 11;
    pub const FLOAT64: u32 = 12;
}

struct GgufReader<R> {
    inner: R,
    what: String,
}

impl<R: Read> GgufReader<R> {
    fn bad(&self, reason: impl std::fmt::Display) -> Error {
        Error::malformed("GGUF header", self.what.clone(), reason)
    }
    fn io(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            self.bad(format!("ends early (or exceeds {MAX_GGUF_HEADER} bytes)"))
        } else {
            self.bad(e.to_string())
        }
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).map_err(|e| self.io(e))?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn skip(&mut self, n: u64) -> Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink()).map_err(|e| self.io(e))?;
        if copied != n {
            return Err(self.bad(format!("ends early (or exceeds {MAX_GGUF_HEADER} bytes)")));
        }
        Ok(())
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        if n > MAX_GGUF_STRING {
            return Err(self.bad(format!("string of {n} bytes exceeds {MAX_GGUF_STRING}")));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf).map_err(|e| self.io(e))?;
        String::from_utf8(buf).map_err(|_| self.bad("string is not UTF-8"))
    }
    fn skip_string(&mut self) -> Result<()> {
        let n = self.u64()?;
        self.skip(n)
    }
    /// Read a scalar as u64 when it is an unsigned/signed integer type.
    fn int_value(&mut self, ty: u32) -> Result<Option<u64>> {
        use gguf_type::*;
        Ok(match ty {
            UINT8 | INT8 | BOOL => Some(u64::from(self.bytes::<1>()?[0])),
            UINT16 | INT16 => Some(u64::from(u16::from_le_bytes(self.bytes()?))),
            UINT32 | INT32 => Some(u64::from(self.u32()?)),
            UINT64 | INT64 => Some(self.u64()?),
            _ => {
                self.skip_value(ty, 0)?;
                None
            }
        })
    }
    fn skip_value(&mut self, ty: u32, depth: u32) -> Result<()> {
        use gguf_type::*;
        match ty {
            UINT8 | INT8 | BOOL => self.skip(1),
            UINT16 | INT16 => self.skip(2),
            UINT32 | INT32 | FLOAT32 => self.skip(4),
            UINT64 | INT64 | FLOAT64 => self.skip(8),
            STRING => self.skip_string(),
            ARRAY => {
                if depth > 2 {
                    return Err(self.bad("arrays nested too deep"));
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                let fixed = match elem {
                    UINT8 | INT8 | BOOL => Some(1),
                    UINT16 | INT16 => Some(2),
                    UINT32 | INT32 | FLOAT32 => Some(4),
                    UINT64 | INT64 | FLOAT64 => Some(8),
                    _ => None,
                };
                match fixed {
                    Some(size) => self.skip(n.checked_mul(size).ok_or_else(|| self.bad("array size overflows"))?),
                    None => {
                        // Each element costs at least 8 bytes, so the header bound ends this loop.
                        for _ in 0..n {
                            self.skip_value(elem, depth + 1)?;
                        }
                        Ok(())
                    }
                }
            }
            other => Err(self.bad(format!("unknown metadata value type {other}"))),
        }
    }
}

/// Read the header of a GGUF file (<https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>):
/// magic `GGUF`, version, tensor count, metadata count, the metadata key/value pairs, then one
/// tensor info (name, dimensions, type, offset) per tensor.
pub fn read_gguf(file: FileBytes<'_>) -> Result<GgufInfo> {
    let (f, _, what) = file.open()?;
    read_gguf_from(f.take(MAX_GGUF_HEADER), &what)
}

/// [`read_gguf`] from any reader (`what` names it in errors).
pub fn read_gguf_from(inner: impl Read, what: &str) -> Result<GgufInfo> {
    let mut r = GgufReader { inner, what: what.to_string() };
    if &r.bytes::<4>()? != GGUF_MAGIC {
        return Err(r.bad("no GGUF magic"));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(r.bad(format!("version {version} is not supported (2 and 3 are)")));
    }
    let tensors = r.u64()?;
    let kvs = r.u64()?;
    if tensors > MAX_GGUF_ENTRIES || kvs > MAX_GGUF_ENTRIES {
        return Err(r.bad(format!("{tensors} tensors / {kvs} metadata entries exceed {MAX_GGUF_ENTRIES}")));
    }
    let mut info = GgufInfo { version, tensors, ..Default::default() };
    for _ in 0..kvs {
        let key = r.string()?;
        let ty = r.u32()?;
        match (key.as_str(), ty) {
            ("general.architecture", gguf_type::STRING) => info.architecture = Some(r.string()?),
            ("general.name", gguf_type::STRING) => info.name = Some(r.string()?),
            ("general.file_type", _) => info.file_type = r.int_value(ty)?.and_then(|v| u32::try_from(v).ok()),
            _ => r.skip_value(ty, 0)?,
        }
    }
    for _ in 0..tensors {
        r.skip_string()?;
        let dims = r.u32()?;
        if dims > MAX_GGUF_DIMS {
            return Err(r.bad(format!("tensor with {dims} dimensions (at most {MAX_GGUF_DIMS})")));
        }
        let mut count = 1u64;
        for _ in 0..dims {
            count = count.checked_mul(r.u64()?).ok_or_else(|| r.bad("tensor shape overflows"))?;
        }
        let _ggml_type = r.u32()?;
        let _offset = r.u64()?;
        info.params = info.params.saturating_add(count);
    }
    Ok(info)
}

/// llama.cpp's `llama_ftype` as (quantization, precision): float types have a precision
/// and no quantization, quantized ones a quantization name as llama.cpp prints it.
pub fn gguf_file_type(ft: u32) -> (Option<&'static str>, Option<&'static str>) {
    let q = match ft {
        0 => return (None, Some("fp32")),
        1 => return (None, Some("fp16")),
        32 => return (None, Some("bf16")),
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return (None, None),
    };
    (Some(q), None)
}

/// A safetensors dtype as a ModelPack precision (`BF16` -> `bf16`, `F32` -> `fp32`, `I8` -> `int8`).
pub fn precision_of_dtype(dtype: &str) -> String {
    match dtype {
        "F64" => "fp64".into(),
        "F32" => "fp32".into(),
        "F16" => "fp16".into(),
        "BF16" => "bf16".into(),
        "F8_E4M3" => "fp8_e4m3".into(),
        "F8_E5M2" => "fp8_e5m2".into(),
        "I64" => "int64".into(),
        "I32" => "int32".into(),
        "I16" => "int16".into(),
        "I8" => "int8".into(),
        "U8" => "uint8".into(),
        "BOOL" => "bool".into(),
        other => other.to_ascii_lowercase(),
    }
}

/// A parameter count as people write it: `596049920` -> `0.6B`, `7241732096` -> `7.2B`,
/// `8030261248` -> `8B`, `70553706496` -> `71B`, `124439808` -> `0.1B`, `1536` -> `1.5K`.
/// From 100M on the unit is B (as model names say: Qwen3-0.6B); one decimal below 10 of a
/// unit, none from 10 on; a trailing `.0` is dropped.
pub fn format_param_size(n: u64) -> String {
    let units: [(f64, &str); 4] = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")];
    let x = n as f64;
    let (scale, unit) = if (1e8..1e9).contains(&x) {
        (1e9, "B")
    } else {
        match units.iter().find(|(s, _)| x >= *s) {
            Some(u) => *u,
            None => return n.to_string(),
        }
    };
    let v = x / scale;
    let s = if v >= 10.0 { format!("{:.0}", v.round()) } else { format!("{:.1}", (v * 10.0).round() / 10.0) };
    let s = s.strip_suffix(".0").map(str::to_string).unwrap_or(s);
    format!("{s}{unit}")
}

fn ext_of(rel: &str) -> String {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default()
}

/// Describe a model from its files (`(relative path, its bytes)`, weights as classified by
/// the caller in `weights`). A weight file whose header does not parse is reported on the log
/// and left out of the description, never a reason to refuse the pack.
pub fn describe_files(files: &[(String, FileBytes<'_>)], weights: &[&str]) -> Described {
    let mut d = Described::default();
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    let mut params = 0u64;
    let mut formats: Vec<&'static str> = Vec::new();
    for (rel, file) in files {
        if !weights.contains(&rel.as_str()) {
            continue;
        }
        let ext = ext_of(rel);
        match ext.as_str() {
            "safetensors" => {
                formats.push("safetensors");
                match read_safetensors(*file) {
                    Ok(info) => {
                        params = params.saturating_add(info.params());
                        for (k, v) in info.params_by_dtype {
                            let e = by_dtype.entry(k).or_insert(0);
                            *e = e.saturating_add(v);
                        }
                    }
                    Err(e) => tracing::warn!("{rel}: {e}; not used to describe the model"),
                }
            }
            "gguf" => {
                formats.push("gguf");
                match read_gguf(*file) {
                    Ok(info) => {
                        params = params.saturating_add(info.params);
                        if d.architecture.is_none() {
                            d.architecture = info.architecture.clone();
                        }
                        if d.family.is_none() {
                            d.family = info.architecture;
                        }
                        if let Some(ft) = info.file_type {
                            let (q, p) = gguf_file_type(ft);
                            d.quantization = d.quantization.or(q.map(str::to_string));
                            d.precision = d.precision.or(p.map(str::to_string));
                        }
                    }
                    Err(e) => tracing::warn!("{rel}: {e}; not used to describe the model"),
                }
            }
            "onnx" => formats.push("onnx"),
            "bin" | "pt" | "pth" => formats.push("pytorch"),
            "h5" | "keras" => formats.push("keras"),
            "tflite" => formats.push("tflite"),
            "pb" => formats.push("tensorflow"),
            _ => {}
        }
    }
    // The format of most weight files (safetensors before pytorch when tied: shards of both
    // are common, and safetensors is what loaders pick).
    let order = ["safetensors", "gguf", "onnx", "pytorch", "keras", "tflite", "tensorflow"];
    d.format = order
        .iter()
        .max_by_key(|f| {
            (formats.iter().filter(|x| x == f).count(), std::cmp::Reverse(order.iter().position(|o| o == *f)))
        })
        .filter(|f| formats.contains(f))
        .map(|f| f.to_string());
    if params > 0 {
        d.param_size = Some(format_param_size(params));
    }
    if d.precision.is_none() {
        d.precision = by_dtype.iter().max_by_key(|(_, n)| **n).map(|(k, _)| precision_of_dtype(k));
    }
    // config.json at the top level (the one Hugging Face loaders read).
    if let Some((_, file)) = files.iter().find(|(rel, _)| rel == "config.json") {
        match read_config_json(*file) {
            Ok(c) => {
                if let Some(a) = c.architecture {
                    d.architecture = Some(a);
                }
                if let Some(f) = c.family {
                    d.family = Some(f);
                }
                if d.precision.is_none() {
                    d.precision = c.torch_dtype.map(|t| match t.as_str() {
                        "bfloat16" => "bf16".to_string(),
                        "float16" => "fp16".to_string(),
                        "float32" => "fp32".to_string(),
                        other => other.to_string(),
                    });
                }
            }
            Err(e) => tracing::warn!("config.json: {e}; not used to describe the model"),
        }
    }
    d
}

struct ConfigJson {
    architecture: Option<String>,
    family: Option<String>,
    torch_dtype: Option<String>,
}

fn read_config_json(file: FileBytes<'_>) -> Result<ConfigJson> {
    let (f, _, what) = file.open()?;
    let bad = |r: String| Error::malformed("config.json", what.clone(), r);
    let mut buf = Vec::new();
    f.take(MAX_CONFIG_JSON + 1).read_to_end(&mut buf).map_err(|e| bad(e.to_string()))?;
    if buf.len() as u64 > MAX_CONFIG_JSON {
        return Err(bad(format!("larger than {MAX_CONFIG_JSON} bytes")));
    }
    let v: serde_json::Value = serde_json::from_slice(&buf).map_err(|e| bad(e.to_string()))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).filter(|x| !x.is_empty()).map(str::to_string);
    Ok(ConfigJson {
        architecture: v
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|x| x.as_str())
            .map(str::to_string),
        family: s("model_type"),
        torch_dtype: s("torch_dtype").or_else(|| s("dtype")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_sizes_read_like_model_names() {
        for (n, s) in [
            (596_049_920, "0.6B"),
            (7_241_732_096, "7.2B"),
            (8_030_261_248, "8B"),
            (70_553_706_496, "71B"),
            (124_439_808, "0.1B"),
            (1_536, "1.5K"),
            (12_000_000, "12M"),
            (999, "999"),
            (1_000_000_000_000, "1T"),
        ] {
            assert_eq!(format_param_size(n), s, "{n}");
        }
    }

    #[test]
    fn gguf_refuses_garbage_and_huge_counts() {
        assert!(read_gguf_from(&b"GGML\x03\0\0\0"[..], "t").is_err());
        let mut h = b"GGUF".to_vec();
        h.extend(3u32.to_le_bytes());
        h.extend(u64::MAX.to_le_bytes());
        h.extend(0u64.to_le_bytes());
        assert!(read_gguf_from(&h[..], "t").is_err());
        // A string length beyond the bound is refused before allocating.
        let mut h = b"GGUF".to_vec();
        h.extend(3u32.to_le_bytes());
        h.extend(0u64.to_le_bytes());
        h.extend(1u64.to_le_bytes());
        h.extend(u64::MAX.to_le_bytes());
        assert!(read_gguf_from(&h[..], "t").is_err());
    }
}
