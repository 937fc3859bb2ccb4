//! Reading and writing tensors as `.npy` files and `.npz` archives.
//!
//! Floating-point arrays become f32 tensors; integer and boolean arrays become integer
//! codes. Arrays are read whole here; streaming over the first axis of large archives
//! belongs to calibration.

use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};
use npyz::{DType, NpyFile, TypeChar, WriterBuilder};
use qcc_ir::interp::{Tensor, TensorData};

/// Converts an opened `.npy` stream into a tensor; `what` names it in errors.
pub fn from_npy<R: Read>(npy: NpyFile<R>, what: &str) -> Result<Tensor> {
    if npy.order() == npyz::Order::Fortran {
        bail!("{what}: Fortran-ordered arrays are not supported; save it with C order");
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let DType::Plain(ts) = npy.dtype() else {
        bail!("{what}: structured arrays are not supported; give a plain numeric array");
    };
    let size = ts.size_field();
    let read_err = || format!("{what}: could not read the array data");
    let data = match (ts.type_char(), size) {
        (TypeChar::Float, 4) => TensorData::F32(npy.into_vec::<f32>().with_context(read_err)?),
        (TypeChar::Float, 8) => TensorData::F32(
            npy.into_vec::<f64>()
                .with_context(read_err)?
                .into_iter()
                .map(|x| x as f32)
                .collect(),
        ),
        (TypeChar::Int, 1) => ints(npy.into_vec::<i8>().with_context(read_err)?),
        (TypeChar::Int, 2) => ints(npy.into_vec::<i16>().with_context(read_err)?),
        (TypeChar::Int, 4) => ints(npy.into_vec::<i32>().with_context(read_err)?),
        (TypeChar::Int, 8) => ints(npy.into_vec::<i64>().with_context(read_err)?),
        (TypeChar::Uint, 1) => ints(npy.into_vec::<u8>().with_context(read_err)?),
        (TypeChar::Uint, 2) => ints(npy.into_vec::<u16>().with_context(read_err)?),
        (TypeChar::Uint, 4) => ints(npy.into_vec::<u32>().with_context(read_err)?),
        (TypeChar::Bool, 1) => ints(npy.into_vec::<bool>().with_context(read_err)?),
        (c, s) => bail!(
            "{what}: arrays of dtype {c:?} with {s} bytes are not supported; use float32, float64 or an integer type"
        ),
    };
    Ok(Tensor { shape, data })
}

fn ints<T: Into<i64>>(v: Vec<T>) -> TensorData {
    TensorData::Int(v.into_iter().map(Into::into).collect())
}

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let npy = NpyFile::new(io::BufReader::new(file))
        .with_context(|| format!("{} is not a valid .npy file", path.display()))?;
    from_npy(npy, &path.display().to_string())
}

/// Reads array `name` of a `.npz` archive.
pub fn read_npz_array(path: &Path, name: &str) -> Result<Tensor> {
    let mut npz = npyz::npz::NpzArchive::open(path)
        .with_context(|| format!("cannot open {} as an .npz archive", path.display()))?;
    let names: Vec<String> = npz.array_names().map(str::to_string).collect();
    let npy = npz
        .by_name(name)
        .with_context(|| format!("cannot read `{name}` from {}", path.display()))?
        .with_context(|| {
            format!(
                "{} has no array `{name}` (it has: {})",
                path.display(),
                names.join(", ")
            )
        })?;
    from_npy(npy, &format!("{}:{name}", path.display()))
}

/// Writes a tensor as `.npy`: f32 tensors as float32, integer tensors as int64.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let shape: Vec<u64> = t.shape.iter().map(|&d| d as u64).collect();
    let err = || format!("cannot write {}", path.display());
    match &t.data {
        TensorData::F32(v) => {
            let mut w = npyz::WriteOptions::<f32>::new()
                .default_dtype()
                .shape(&shape)
                .writer(BufWriter::new(file))
                .begin_nd()
                .with_context(err)?;
            w.extend(v.iter().copied()).with_context(err)?;
            w.finish().with_context(err)?;
        }
        TensorData::Int(v) => {
            let mut w = npyz::WriteOptions::<i64>::new()
                .default_dtype()
                .shape(&shape)
                .writer(BufWriter::new(file))
                .begin_nd()
                .with_context(err)?;
            w.extend(v.iter().copied()).with_context(err)?;
            w.finish().with_context(err)?;
        }
    }
    Ok(())
}
