//! Calibration profiles (`.qprof`): the statistics of [`calibrate`](super::calibrate)
//! saved in a versioned protobuf format, so that calibration on large data runs once
//! (`qcc calibrate MODEL --calib DATA.npz -o MODEL.qprof`) and compiles reuse it
//! (`qcc compile MODEL --bits 8 --profile MODEL.qprof`).
//!
//! The schema is `qprof.proto` beside this file; the messages below are its prost form,
//! written by hand (there is no protoc at build time) and kept in step with it by a test.
//! A profile carries the hash of the model's IR text, and is only applied to that model.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use qcc_ir::Module;

use super::calibrate::{CalibMethod, CalibStats, Histogram, RangeSource, TensorStats};
use super::sensitivity::{Candidate, LayerSensitivity, Metric, Sensitivity};

/// The `format` of every profile (also its first bytes: field 1 is encoded first).
pub const FORMAT: &str = "qcc.qprof";

/// The format version this qcc writes, and the newest it reads.
pub const VERSION: u32 = 2;

/// The schema, as committed.
pub const SCHEMA: &str = include_str!("qprof.proto");

/// A calibration profile (`message Profile` in `qprof.proto`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(string, tag = "1")]
    pub format: String,
    #[prost(uint32, tag = "2")]
    pub version: u32,
    #[prost(string, tag = "3")]
    pub producer: String,
    #[prost(string, tag = "4")]
    pub model_file: String,
    #[prost(fixed64, tag = "5")]
    pub model_hash: u64,
    #[prost(string, tag = "6")]
    pub data_file: String,
    #[prost(uint64, tag = "7")]
    pub samples: u64,
    #[prost(uint64, optional, tag = "8")]
    pub sample_limit: Option<u64>,
    #[prost(message, repeated, tag = "9")]
    pub values: Vec<ValueStats>,
    #[prost(string, repeated, tag = "10")]
    pub warnings: Vec<String>,
    #[prost(message, repeated, tag = "11")]
    pub sensitivity: Vec<LayerSensMsg>,
    #[prost(string, tag = "12")]
    pub sensitivity_metric: String,
    #[prost(uint64, tag = "13")]
    pub sensitivity_samples: u64,
}

/// One layer's sensitivity (`message LayerSensitivity`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LayerSensMsg {
    #[prost(string, tag = "1")]
    pub layer: String,
    #[prost(string, tag = "2")]
    pub node: String,
    #[prost(string, tag = "3")]
    pub op: String,
    #[prost(uint64, tag = "4")]
    pub macs: u64,
    #[prost(uint64, tag = "5")]
    pub weight_count: u64,
    #[prost(uint64, tag = "6")]
    pub out_channels: u64,
    #[prost(string, tag = "7")]
    pub input: String,
    #[prost(message, repeated, tag = "8")]
    pub candidates: Vec<SensCandidateMsg>,
}

/// One candidate (`message SensCandidate`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SensCandidateMsg {
    #[prost(uint32, tag = "1")]
    pub wbits: u32,
    #[prost(uint32, tag = "2")]
    pub abits: u32,
    #[prost(double, tag = "3")]
    pub error: f64,
}

/// Statistics of one value (`message ValueStats`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueStats {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub min: f32,
    #[prost(float, tag = "3")]
    pub max: f32,
    #[prost(uint64, tag = "4")]
    pub count: u64,
    #[prost(message, optional, tag = "5")]
    pub hist: Option<HistogramMsg>,
    #[prost(float, repeated, tag = "6")]
    pub ch_min: Vec<f32>,
    #[prost(float, repeated, tag = "7")]
    pub ch_max: Vec<f32>,
}

/// A histogram (`message Histogram`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramMsg {
    #[prost(double, tag = "1")]
    pub lo: f64,
    #[prost(double, tag = "2")]
    pub width: f64,
    #[prost(uint64, repeated, tag = "3")]
    pub counts: Vec<u64>,
}

/// The hash a profile records of its model: 64-bit FNV-1a of the module's IR text
/// (stable across Rust versions and machines, unlike `std`'s hasher).
pub fn model_hash(m: &Module) -> u64 {
    fnv1a(m.to_string().as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

impl Profile {
    /// The profile of `stats`, collected on `m` (loaded from `model`) over `data`.
    pub fn new(
        stats: &CalibStats,
        m: &Module,
        model: &Path,
        data: &Path,
        limit: Option<usize>,
    ) -> Profile {
        let values = stats
            .values
            .iter()
            .map(|(name, s)| ValueStats {
                name: name.clone(),
                min: s.min,
                max: s.max,
                count: s.count,
                hist: (!s.hist.is_empty()).then(|| HistogramMsg {
                    lo: s.hist.lo,
                    width: s.hist.width,
                    counts: s.hist.counts.clone(),
                }),
                ch_min: s.ch_min.clone(),
                ch_max: s.ch_max.clone(),
            })
            .collect();
        Profile {
            format: FORMAT.into(),
            version: VERSION,
            producer: format!("qcc {}", env!("CARGO_PKG_VERSION")),
            model_file: file_name(model),
            model_hash: model_hash(m),
            data_file: file_name(data),
            samples: stats.samples as u64,
            sample_limit: limit.map(|l| l as u64),
            values,
            warnings: stats.warnings.clone(),
            sensitivity: Vec::new(),
            sensitivity_metric: String::new(),
            sensitivity_samples: 0,
        }
    }

    /// Stores `s` in the profile.
    pub fn set_sensitivity(&mut self, s: &Sensitivity) {
        self.sensitivity_metric = s.metric.name().into();
        self.sensitivity_samples = s.samples as u64;
        self.sensitivity = s
            .layers
            .iter()
            .map(|l| LayerSensMsg {
                layer: l.layer.clone(),
                node: l.node.clone(),
                op: l.op.clone(),
                macs: l.macs,
                weight_count: l.weight_count,
                out_channels: l.out_channels,
                input: l.input.clone(),
                candidates: l
                    .candidates
                    .iter()
                    .map(|c| SensCandidateMsg {
                        wbits: c.wbits as u32,
                        abits: c.abits as u32,
                        error: c.error,
                    })
                    .collect(),
            })
            .collect();
    }

    /// The stored sensitivity, if one was measured.
    pub fn sensitivity(&self) -> Result<Option<Sensitivity>, String> {
        if self.sensitivity.is_empty() {
            return Ok(None);
        }
        let metric: Metric = self.sensitivity_metric.parse().map_err(|_| {
            format!(
                "the profile's sensitivity metric `{}` is unknown (kl or mse)",
                self.sensitivity_metric
            )
        })?;
        let bits = |v: u32, what: &str, layer: &str| -> Result<u8, String> {
            u8::try_from(v)
                .ok()
                .filter(|b| (1..=8).contains(b))
                .ok_or_else(|| format!("the profile's sensitivity of {layer} has {what} {v}; the profile is damaged"))
        };
        let layers = self
            .sensitivity
            .iter()
            .map(|l| {
                Ok(LayerSensitivity {
                    layer: l.layer.clone(),
                    node: l.node.clone(),
                    op: l.op.clone(),
                    macs: l.macs,
                    weight_count: l.weight_count,
                    out_channels: l.out_channels,
                    input: l.input.clone(),
                    candidates: l
                        .candidates
                        .iter()
                        .map(|c| {
                            Ok(Candidate {
                                wbits: bits(c.wbits, "weight bits", &l.layer)?,
                                abits: bits(c.abits, "activation bits", &l.layer)?,
                                error: c.error,
                            })
                        })
                        .collect::<Result<_, String>>()?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Some(Sensitivity {
            metric,
            samples: self.sensitivity_samples as usize,
            layers,
        }))
    }

    /// The statistics, with ranges to be chosen by `method`.
    pub fn stats(&self, method: CalibMethod) -> CalibStats {
        let values = self
            .values
            .iter()
            .map(|v| {
                let hist = v
                    .hist
                    .as_ref()
                    .map(|h| Histogram {
                        lo: h.lo,
                        width: h.width,
                        counts: h.counts.clone(),
                    })
                    .unwrap_or_default();
                let s = TensorStats {
                    min: v.min,
                    max: v.max,
                    count: v.count,
                    hist,
                    ch_min: v.ch_min.clone(),
                    ch_max: v.ch_max.clone(),
                };
                (v.name.clone(), s)
            })
            .collect::<BTreeMap<_, _>>();
        CalibStats {
            values,
            samples: self.samples as usize,
            source: RangeSource::Data(method),
            warnings: self.warnings.clone(),
        }
    }

    /// The encoded profile.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes and checks a profile; `what` names the file in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Profile, String> {
        let not_one = |why: String| {
            format!(
                "{what} is not a qcc calibration profile ({why}); write one with `qcc calibrate \
                 MODEL --calib DATA.npz -o FILE.qprof`"
            )
        };
        let p = Profile::decode(bytes).map_err(|e| not_one(format!("cannot decode it: {e}")))?;
        if p.format != FORMAT {
            return Err(not_one(if bytes.is_empty() {
                "the file is empty".into()
            } else {
                format!("it does not start with the `{FORMAT}` format name")
            }));
        }
        if p.version == 0 || p.version > VERSION {
            return Err(format!(
                "{what} is a calibration profile of format version {} (written by {}); this \
                 qcc reads version {VERSION}: recalibrate with this qcc (`qcc calibrate`) or \
                 use a newer qcc",
                p.version,
                if p.producer.is_empty() {
                    "an unknown producer"
                } else {
                    &p.producer
                }
            ));
        }
        for v in &p.values {
            if v.ch_min.len() != v.ch_max.len() {
                return Err(format!(
                    "{what}: value `{}` has {} per-channel minima but {} maxima; the profile \
                     is damaged",
                    v.name,
                    v.ch_min.len(),
                    v.ch_max.len()
                ));
            }
        }
        Ok(p)
    }

    /// Writes the profile to `path`.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, self.to_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Reads and checks the profile at `path`.
    pub fn load(path: &Path) -> Result<Profile, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read calibration profile {}: {e}", path.display()))?;
        Profile::from_bytes(&bytes, &path.display().to_string())
    }

    /// Checks that the profile was made for `m`; `what` names the profile file.
    pub fn check_model(&self, m: &Module, what: &str) -> Result<(), String> {
        let h = model_hash(m);
        if h != self.model_hash {
            return Err(format!(
                "calibration profile {what} was made for another model ({}, IR hash {:016x}; \
                 this model's IR hash is {h:016x}); recalibrate this model with `qcc \
                 calibrate MODEL --calib DATA.npz -o FILE.qprof` (with the same \
                 --input-shape as here)",
                if self.model_file.is_empty() {
                    "unnamed"
                } else {
                    &self.model_file
                },
                self.model_hash
            ));
        }
        Ok(())
    }
}

/// Reads the profile at `path`, checks it against `m` and returns its statistics, with
/// ranges to be chosen by `method`.
pub fn load_stats(path: &Path, m: &Module, method: CalibMethod) -> Result<CalibStats, String> {
    let p = Profile::load(path)?;
    p.check_model(m, &path.display().to_string())?;
    Ok(p.stats(method))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Every message of the schema with its fields (name, number), as the Rust side has
    /// them. The test below checks this table against both the structs and the .proto.
    const FIELDS: &[(&str, &[(&str, u32)])] = &[
        (
            "Profile",
            &[
                ("format", 1),
                ("version", 2),
                ("producer", 3),
                ("model_file", 4),
                ("model_hash", 5),
                ("data_file", 6),
                ("samples", 7),
                ("sample_limit", 8),
                ("values", 9),
                ("warnings", 10),
                ("sensitivity", 11),
                ("sensitivity_metric", 12),
                ("sensitivity_samples", 13),
            ],
        ),
        (
            "LayerSensitivity",
            &[
                ("layer", 1),
                ("node", 2),
                ("op", 3),
                ("macs", 4),
                ("weight_count", 5),
                ("out_channels", 6),
                ("input", 7),
                ("candidates", 8),
            ],
        ),
        ("SensCandidate", &[("wbits", 1), ("abits", 2), ("error", 3)]),
        (
            "ValueStats",
            &[
                ("name", 1),
                ("min", 2),
                ("max", 3),
                ("count", 4),
                ("hist", 5),
                ("ch_min", 6),
                ("ch_max", 7),
            ],
        ),
        ("Histogram", &[("lo", 1), ("width", 2), ("counts", 3)]),
    ];

    fn full_hist() -> HistogramMsg {
        HistogramMsg {
            lo: -1.5,
            width: 0.25,
            counts: vec![1, 0, 7],
        }
    }

    fn full_value() -> ValueStats {
        ValueStats {
            name: "x".into(),
            min: -1.0,
            max: 2.0,
            count: 3,
            hist: Some(full_hist()),
            ch_min: vec![-1.0, 0.5],
            ch_max: vec![1.0, 2.0],
        }
    }

    fn full_profile() -> Profile {
        Profile {
            format: FORMAT.into(),
            version: VERSION,
            producer: "qcc test".into(),
            model_file: "m.onnx".into(),
            model_hash: 0x0123_4567_89ab_cdef,
            data_file: "d.npz".into(),
            samples: 5,
            sample_limit: Some(5),
            values: vec![full_value()],
            warnings: vec!["w".into()],
            sensitivity: vec![LayerSensMsg {
                layer: "l".into(),
                node: "n".into(),
                op: "conv2d".into(),
                macs: 9,
                weight_count: 8,
                out_channels: 2,
                input: "x".into(),
                candidates: vec![SensCandidateMsg {
                    wbits: 4,
                    abits: 8,
                    error: 0.5,
                }],
            }],
            sensitivity_metric: "kl".into(),
            sensitivity_samples: 3,
        }
    }

    fn read_varint(b: &[u8], i: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[*i];
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }

    /// The field numbers present at the top level of an encoded message.
    fn wire_tags(b: &[u8]) -> BTreeSet<u32> {
        let mut tags = BTreeSet::new();
        let mut i = 0;
        while i < b.len() {
            let key = read_varint(b, &mut i);
            tags.insert((key >> 3) as u32);
            match key & 7 {
                0 => {
                    read_varint(b, &mut i);
                }
                1 => i += 8,
                2 => i += read_varint(b, &mut i) as usize,
                5 => i += 4,
                w => panic!("unexpected wire type {w}"),
            }
        }
        tags
    }

    /// The field names in a message's Debug output (`Name { a: .., b: .. }`, top level).
    fn debug_names(s: &str) -> BTreeSet<String> {
        let inner = &s[s.find('{').unwrap() + 1..s.rfind('}').unwrap()];
        let (mut depth, mut names, mut cur) = (0i32, BTreeSet::new(), String::new());
        let mut in_str = false;
        for c in inner.chars() {
            match c {
                '"' => in_str = !in_str,
                _ if in_str => {}
                '{' | '[' | '(' => depth += 1,
                '}' | ']' | ')' => depth -= 1,
                ':' if depth == 0 && !cur.trim().is_empty() => {
                    names.insert(cur.trim().trim_start_matches(',').trim().to_string());
                    cur.clear();
                    continue;
                }
                ',' if depth == 0 => cur.clear(),
                _ => {}
            }
            if depth == 0 && c != ',' {
                cur.push(c);
            }
        }
        names
    }

    /// `message Name { [optional|repeated] type field = N; }` blocks of the schema.
    fn proto_messages(src: &str) -> BTreeMap<String, BTreeSet<(String, u32)>> {
        let mut out: BTreeMap<String, BTreeSet<(String, u32)>> = BTreeMap::new();
        let mut cur: Option<String> = None;
        for line in src.lines() {
            let line = line.split("//").next().unwrap().trim();
            if let Some(rest) = line.strip_prefix("message ") {
                let name = rest.trim_end_matches('{').trim().to_string();
                out.entry(name.clone()).or_default();
                cur = Some(name);
            } else if line == "}" {
                cur = None;
            } else if let (Some(m), Some((lhs, rhs))) = (&cur, line.split_once('=')) {
                let field = lhs.split_whitespace().last().unwrap().to_string();
                let num: u32 = rhs.trim().trim_end_matches(';').trim().parse().unwrap();
                out.get_mut(m).unwrap().insert((field, num));
            }
        }
        out
    }

    #[test]
    fn schema_and_structs_agree() {
        let table: BTreeMap<String, BTreeSet<(String, u32)>> = FIELDS
            .iter()
            .map(|(m, fs)| {
                (
                    m.to_string(),
                    fs.iter().map(|(f, n)| (f.to_string(), *n)).collect(),
                )
            })
            .collect();
        assert_eq!(proto_messages(SCHEMA), table, "qprof.proto vs FIELDS");
        assert!(SCHEMA.contains("syntax = \"proto3\";"));
        let lsens = full_profile().sensitivity[0].clone();
        let cand = lsens.candidates[0].clone();
        let encoded: [(&str, Vec<u8>, String); 5] = [
            (
                "LayerSensitivity",
                lsens.encode_to_vec(),
                format!("{lsens:?}"),
            ),
            ("SensCandidate", cand.encode_to_vec(), format!("{cand:?}")),
            (
                "Profile",
                full_profile().encode_to_vec(),
                format!("{:?}", full_profile()),
            ),
            (
                "ValueStats",
                full_value().encode_to_vec(),
                format!("{:?}", full_value()),
            ),
            (
                "Histogram",
                full_hist().encode_to_vec(),
                format!("{:?}", full_hist()),
            ),
        ];
        for (m, bytes, debug) in encoded {
            let want = &table[m];
            let nums: BTreeSet<u32> = want.iter().map(|(_, n)| *n).collect();
            let names: BTreeSet<String> = want.iter().map(|(f, _)| f.clone()).collect();
            assert_eq!(wire_tags(&bytes), nums, "{m}: field numbers of the struct");
            assert_eq!(debug_names(&debug), names, "{m}: field names of the struct");
        }
    }

    #[test]
    fn starts_with_the_format_name() {
        let b = full_profile().to_bytes();
        assert_eq!(&b[..2], &[0x0a, FORMAT.len() as u8]);
        assert_eq!(&b[2..2 + FORMAT.len()], FORMAT.as_bytes());
        assert_eq!(Profile::from_bytes(&b, "p").unwrap(), full_profile());
    }

    #[test]
    fn rejects_garbage_newer_and_empty() {
        let e = Profile::from_bytes(b"\xff\xff\xff garbage", "g.qprof").unwrap_err();
        assert!(
            e.contains("g.qprof is not a qcc calibration profile"),
            "{e}"
        );
        let e = Profile::from_bytes(b"", "e.qprof").unwrap_err();
        assert!(e.contains("e.qprof") && e.contains("empty"), "{e}");
        let mut p = full_profile();
        p.format = "other".into();
        let e = Profile::from_bytes(&p.to_bytes(), "o.qprof").unwrap_err();
        assert!(e.contains("not a qcc calibration profile"), "{e}");
        let mut p = full_profile();
        p.version = VERSION + 1;
        let e = Profile::from_bytes(&p.to_bytes(), "n.qprof").unwrap_err();
        assert!(e.contains("n.qprof") && e.contains("version 3"), "{e}");
    }

    #[test]
    fn stats_round_trip() {
        let mut hist = Histogram::default();
        hist.add(&[0.0, 1.0, -2.5, 3.25]);
        let stats = CalibStats {
            values: [
                (
                    "a".to_string(),
                    TensorStats {
                        min: -2.5,
                        max: 3.25,
                        count: 4,
                        hist,
                        ch_min: vec![-2.5, f32::INFINITY],
                        ch_max: vec![3.25, f32::NEG_INFINITY],
                    },
                ),
                ("b".to_string(), TensorStats::range(0.0, 1.0)),
            ]
            .into_iter()
            .collect(),
            samples: 4,
            source: RangeSource::Data(CalibMethod::Kl),
            warnings: vec!["note".into()],
        };
        let m = qcc_ir::Module::new("empty");
        let p = Profile::new(&stats, &m, Path::new("x/m.onnx"), Path::new("d.npz"), None);
        assert_eq!(p.model_file, "m.onnx");
        let back = Profile::from_bytes(&p.to_bytes(), "p").unwrap();
        assert_eq!(back.stats(CalibMethod::Kl), stats);
        back.check_model(&m, "p").unwrap();
        assert_eq!(back.sensitivity().unwrap(), None);
    }

    #[test]
    fn sensitivity_round_trips_and_version_1_still_reads() {
        let p = full_profile();
        let s = p.sensitivity().unwrap().unwrap();
        assert_eq!(s.metric, Metric::Kl);
        assert_eq!(s.layers[0].candidates[0].wbits, 4);
        let mut q = p.clone();
        q.set_sensitivity(&s);
        assert_eq!(q, p);
        let mut v1 = p.clone();
        v1.version = 1;
        v1.sensitivity.clear();
        let back = Profile::from_bytes(&v1.to_bytes(), "v1").unwrap();
        assert_eq!(back.sensitivity().unwrap(), None);
        let mut bad = p;
        bad.sensitivity[0].candidates[0].wbits = 40;
        assert!(bad.sensitivity().unwrap_err().contains("damaged"));
    }
}
