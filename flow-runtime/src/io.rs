//! Saving and loading a flow's parameters as safetensors, the format candle and burn read.
//!
//! One tensor per learnable tensor of the flow, named `"{layer}.{name}"` (for example
//! `coupling_0.net.1.weight`), of dtype `F32` or `F64` as the flow computes, with the
//! shape its visitor reports, plus three metadata entries:
//!
//! | key | value |
//! |---|---|
//! | `flowgen.architecture` | the architecture string given to [`save`] |
//! | `flowgen.float` | `f32` or `f64` |
//! | `flowgen.version` | the version of flowgen that wrote the file |
//!
//! [`load`] accepts a file only if its architecture string equals the one given, and every
//! tensor of the flow is present with the same shape and dtype and no other tensor is; it
//! checks everything before it writes any parameter, so a failed load leaves the flow as it
//! was. Save → load is bit-exact.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::FlowError;
use crate::float::Float;
use crate::parameters::Parameters;

/// The metadata key of the architecture string.
pub const ARCHITECTURE_KEY: &str = "flowgen.architecture";
/// The metadata key of the float type (`f32` or `f64`).
pub const FLOAT_KEY: &str = "flowgen.float";
/// The metadata key of the version of flowgen that wrote the file.
pub const VERSION_KEY: &str = "flowgen.version";

/// Writes the parameters of `model` to `path` as safetensors (replacing the file
/// atomically: a sibling temporary file is renamed over it).
pub fn save<F: Float, M: Parameters<F> + ?Sized>(
    model: &M,
    path: impl AsRef<Path>,
    architecture: &str,
) -> Result<(), FlowError> {
    let path = path.as_ref();
    let bytes = to_bytes(model, architecture)?;
    write_atomically(path, &bytes).map_err(|e| FlowError::Io {
        path: path.to_path_buf(),
        message: format!("cannot write the parameter file: {e}"),
    })
}

/// Reads parameters saved by [`save`] from `path` into `model`, after checking that the
/// file was saved from the same `architecture` and fits the flow tensor by tensor. After a
/// successful load every layer is marked initialised
/// ([`Parameters::mark_data_initialized`]), so that training on from here does not redo an
/// `actnorm`'s data-dependent initialisation.
pub fn load<F: Float, M: Parameters<F> + ?Sized>(
    model: &mut M,
    path: impl AsRef<Path>,
    architecture: &str,
) -> Result<(), FlowError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| FlowError::Io {
        path: path.to_path_buf(),
        message: format!("cannot read the parameter file: {e}"),
    })?;
    from_bytes(model, &bytes, architecture)?;
    // Loaded parameters are final: a data-dependent initialisation must not redo them.
    model.mark_data_initialized();
    Ok(())
}

/// The safetensors bytes [`save`] writes.
pub fn to_bytes<F: Float, M: Parameters<F> + ?Sized>(
    model: &M,
    architecture: &str,
) -> Result<Vec<u8>, FlowError> {
    let dtype = dtype_of::<F>();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut problem = None;
    let mut names = HashSet::new();
    model.visit_state(&mut |layer, name, shape, values| {
        let full = tensor_name(layer, name);
        if problem.is_some() {
            return;
        }
        if shape.iter().product::<usize>() != values.len() {
            problem = Some(format!(
                "tensor `{full}` has shape {shape:?} but {} values",
                values.len()
            ));
        } else if !names.insert(full.clone()) {
            problem = Some(format!("two tensors are named `{full}`"));
        } else {
            let mut bytes = Vec::with_capacity(values.len() * elem_bytes::<F>());
            encode(values, &mut bytes);
            tensors.push((full, shape.to_vec(), bytes));
        }
    });
    if let Some(message) = problem {
        return Err(FlowError::Format {
            message: format!("cannot save this flow: {message}"),
        });
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(dtype, shape.clone(), bytes).map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format_error("cannot save this flow", e))?;
    let metadata = [
        (ARCHITECTURE_KEY, architecture),
        (FLOAT_KEY, F::NAME),
        (VERSION_KEY, env!("CARGO_PKG_VERSION")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| format_error("cannot save this flow", e))
}

/// Reads parameters from safetensors bytes (as [`to_bytes`] writes them) into `model`,
/// with the checks of [`load`].
pub fn from_bytes<F: Float, M: Parameters<F> + ?Sized>(
    model: &mut M,
    bytes: &[u8],
    architecture: &str,
) -> Result<(), FlowError> {
    let (header_len, meta) = SafeTensors::read_metadata(bytes).map_err(|e| {
        format_error(
            "not a valid parameter file (not safetensors, or truncated or corrupt)",
            e,
        )
    })?;
    let data = &bytes[8 + header_len..];
    let saved = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(ARCHITECTURE_KEY))
        .ok_or_else(|| FlowError::Format {
            message: format!(
                "not a flowgen parameter file: its safetensors metadata has no `{ARCHITECTURE_KEY}` entry"
            ),
        })?;
    if saved != architecture {
        return Err(FlowError::Mismatch {
            message: describe_difference(saved, architecture),
        });
    }

    // Check everything before writing anything.
    let dtype = dtype_of::<F>();
    let mut ranges = Vec::new();
    let mut seen = HashSet::new();
    let mut problem = None;
    model.visit_state(&mut |layer, name, shape, values| {
        if problem.is_some() {
            return;
        }
        let full = tensor_name(layer, name);
        problem = match meta.info(&full) {
            None => Some(format!(
                "the file has no tensor `{full}` (shape {shape:?}, {dtype:?})"
            )),
            Some(info) if info.shape != shape => Some(format!(
                "tensor `{full}` has shape {:?} in the file, this flow's is {shape:?}",
                info.shape
            )),
            Some(info) if info.dtype != dtype => Some(format!(
                "tensor `{full}` has dtype {:?} in the file, this flow computes in {} ({dtype:?})",
                info.dtype,
                F::NAME
            )),
            Some(info)
                if info.data_offsets.1 - info.data_offsets.0
                    != values.len() * elem_bytes::<F>() =>
            {
                Some(format!(
                    "tensor `{full}` has {} bytes in the file, this flow's has {} values",
                    info.data_offsets.1 - info.data_offsets.0,
                    values.len()
                ))
            }
            Some(info) => {
                ranges.push(info.data_offsets.0..info.data_offsets.1);
                seen.insert(full);
                None
            }
        };
    });
    if let Some(message) = problem {
        return Err(FlowError::Mismatch { message });
    }
    let mut extra: Vec<String> = meta
        .tensors()
        .into_keys()
        .filter(|name| !seen.contains(name))
        .collect();
    if !extra.is_empty() {
        extra.sort();
        let list = extra
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(FlowError::Mismatch {
            message: format!("the file has tensors this flow does not: {list}"),
        });
    }

    let mut ranges = ranges.into_iter();
    model.visit_state_mut(&mut |_, _, _, values| {
        if let Some(range) = ranges.next() {
            decode(&data[range], values);
        }
    });
    Ok(())
}

fn tensor_name(layer: &str, name: &str) -> String {
    if layer.is_empty() {
        name.to_owned()
    } else {
        format!("{layer}.{name}")
    }
}

fn elem_bytes<F: Float>() -> usize {
    if F::NAME == "f32" { 4 } else { 8 }
}

fn dtype_of<F: Float>() -> Dtype {
    if F::NAME == "f32" {
        Dtype::F32
    } else {
        Dtype::F64
    }
}

/// Little-endian bytes of `values` (f32 → f64 → f32 and f64 → f64 are exact, so the
/// round trip keeps every bit).
fn encode<F: Float>(values: &[F], out: &mut Vec<u8>) {
    if F::NAME == "f32" {
        for v in values {
            out.extend_from_slice(&(v.to_f64_lossless() as f32).to_le_bytes());
        }
    } else {
        for v in values {
            out.extend_from_slice(&v.to_f64_lossless().to_le_bytes());
        }
    }
}

fn decode<F: Float>(bytes: &[u8], values: &mut [F]) {
    if F::NAME == "f32" {
        for (v, b) in values.iter_mut().zip(bytes.chunks_exact(4)) {
            let x = f32::from_le_bytes(b.try_into().expect("chunks of 4 bytes"));
            *v = F::of(f64::from(x));
        }
    } else {
        for (v, b) in values.iter_mut().zip(bytes.chunks_exact(8)) {
            *v = F::of(f64::from_le_bytes(b.try_into().expect("chunks of 8 bytes")));
        }
    }
}

fn format_error(context: &str, e: safetensors::SafeTensorError) -> FlowError {
    FlowError::Format {
        message: format!("{context}: {e}"),
    }
}

/// Says where two architecture strings first differ.
fn describe_difference(file: &str, flow: &str) -> String {
    let common = file
        .chars()
        .zip(flow.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let rest = |s: &str| {
        let rest: String = s.chars().skip(common).take(24).collect();
        if rest.is_empty() {
            "the end".to_owned()
        } else {
            format!("`{rest}`")
        }
    };
    format!(
        "the file was saved from architecture `{file}`, this flow is `{flow}` (they first differ \
         at character {common}: {} in the file, {} in this flow)",
        rest(file),
        rest(flow)
    )
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let mut temp_name = OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::mock::Gaussian;

    const ARCH: &str = "dim = 2; affine; coupling(mask = even, hidden = [3])";

    fn odd_values() -> [f64; 8] {
        [
            -0.0,
            f64::MIN_POSITIVE / 8.0, // subnormal in f64
            1e-45,                   // subnormal in f32
            std::f64::consts::PI,
            -1.234_567_890_123_456_7e300,
            f64::MAX,
            1.0 / 3.0,
            -7.5,
        ]
    }

    /// A model with `d` coordinates, a `rows × 3` extra matrix and scrambled values.
    fn model<F: Float>(d: usize, rows: usize) -> Gaussian<F> {
        let mut m = Gaussian::<F>::new(&vec![0.0; d], &vec![0.0; d]).with_extra(rows, 3);
        let odd = odd_values();
        let mut k = 0;
        m.visit_params_mut(&mut |_, _, _, values| {
            for v in values {
                *v = F::of(odd[k % odd.len()] * (1.0 + k as f64 / 64.0));
                k += 1;
            }
        });
        m
    }

    fn bits<F: Float>(m: &Gaussian<F>) -> Vec<u64> {
        m.params()
            .iter()
            .map(|v| v.to_f64_lossless().to_bits())
            .collect()
    }

    fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("flowgen-io-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mismatch(err: FlowError) -> String {
        match err {
            FlowError::Mismatch { message } => message,
            other => panic!("expected Mismatch, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_is_bit_exact_in_f64_and_f32() {
        let saved = model::<f64>(2, 2);
        let bytes = to_bytes(&saved, ARCH).unwrap();
        let mut loaded = Gaussian::<f64>::new(&[0.0, 0.0], &[0.0, 0.0]).with_extra(2, 3);
        from_bytes(&mut loaded, &bytes, ARCH).unwrap();
        assert_eq!(bits(&loaded), bits(&saved));
        assert!(
            loaded
                .params()
                .iter()
                .any(|v| v.to_bits() == (-0.0f64).to_bits())
        );

        let saved = model::<f32>(2, 2);
        let bytes = to_bytes(&saved, ARCH).unwrap();
        let mut loaded = Gaussian::<f32>::new(&[0.0, 0.0], &[0.0, 0.0]).with_extra(2, 3);
        from_bytes(&mut loaded, &bytes, ARCH).unwrap();
        assert_eq!(bits(&loaded), bits(&saved));
    }

    #[test]
    fn the_file_is_plain_safetensors_with_named_tensors_and_metadata() {
        let saved = model::<f32>(2, 4);
        let bytes = to_bytes(&saved, ARCH).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        assert_eq!(
            names,
            [
                "affine.log_scale",
                "affine.shift",
                "coupling_0.net.0.weight"
            ]
        );
        let w = st.tensor("coupling_0.net.0.weight").unwrap();
        assert_eq!(w.dtype(), Dtype::F32);
        assert_eq!(w.shape(), [4, 3]);
        let first = f32::from_le_bytes(w.data()[..4].try_into().unwrap());
        assert_eq!(first, saved.extra[0]);
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        assert_eq!(meta[ARCHITECTURE_KEY], ARCH);
        assert_eq!(meta[FLOAT_KEY], "f32");
        assert_eq!(meta[VERSION_KEY], env!("CARGO_PKG_VERSION"));
        let f64_bytes = to_bytes(&model::<f64>(2, 4), ARCH).unwrap();
        let st = SafeTensors::deserialize(&f64_bytes).unwrap();
        assert_eq!(st.tensor("affine.shift").unwrap().dtype(), Dtype::F64);
    }

    #[test]
    fn save_and_load_through_a_file() {
        let dir = scratch_dir("file");
        let path = dir.join("model.safetensors");
        let saved = model::<f64>(3, 1);
        save(&saved, &path, ARCH).unwrap();
        // Saving again replaces the file and leaves no temporary file behind.
        save(&saved, &path, ARCH).unwrap();
        let mut loaded = Gaussian::<f64>::new(&[0.0; 3], &[0.0; 3]).with_extra(1, 3);
        load(&mut loaded, &path, ARCH).unwrap();
        assert_eq!(bits(&loaded), bits(&saved));
        let entries: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_and_unwritable_paths_are_io_errors() {
        let dir = scratch_dir("io");
        let missing = dir.join("missing.safetensors");
        let mut m = model::<f64>(2, 1);
        match load(&mut m, &missing, ARCH) {
            Err(FlowError::Io { path, message }) => {
                assert_eq!(path, missing);
                assert!(message.contains("cannot read"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let nowhere = dir.join("no-such-dir").join("m.safetensors");
        assert!(matches!(
            save(&m, &nowhere, ARCH),
            Err(FlowError::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_truncated_and_corrupt_bytes_are_format_errors() {
        let saved = model::<f64>(2, 2);
        let bytes = to_bytes(&saved, ARCH).unwrap();
        let mut header_too_long = bytes.clone();
        header_too_long[0] = header_too_long[0].wrapping_add(8);
        let mut bad_json = bytes.clone();
        bad_json[8] = b'[';
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("text", b"this is not a safetensors file".to_vec()),
            ("7 bytes", bytes[..7].to_vec()),
            ("header cut", bytes[..40].to_vec()),
            ("data cut", bytes[..bytes.len() - 1].to_vec()),
            ("trailing byte", [&bytes[..], &[0]].concat()),
            ("header length", header_too_long),
            ("json", bad_json),
        ];
        for (what, case) in cases {
            let mut m = model::<f64>(2, 2);
            let before = bits(&m);
            match from_bytes(&mut m, &case, ARCH) {
                Err(FlowError::Format { message }) => assert!(!message.is_empty()),
                other => panic!("{what}: {other:?}"),
            }
            assert_eq!(bits(&m), before, "{what}: the model was changed");
        }
    }

    #[test]
    fn safetensors_without_flowgen_metadata_is_a_format_error() {
        let data = 1.5f64.to_le_bytes();
        let view = TensorView::new(Dtype::F64, vec![1], &data).unwrap();
        let bytes = safetensors::serialize([("affine.shift", view)], None).unwrap();
        let mut m = Gaussian::<f64>::new(&[0.0], &[0.0]);
        let err = from_bytes(&mut m, &bytes, ARCH).unwrap_err();
        assert!(
            matches!(&err, FlowError::Format { message } if message.contains(ARCHITECTURE_KEY)),
            "{err:?}"
        );
    }

    #[test]
    fn another_architecture_is_a_mismatch_saying_what_differs() {
        let saved = model::<f64>(2, 2);
        let bytes = to_bytes(&saved, ARCH).unwrap();
        let mut m = model::<f64>(2, 2);
        let other = "dim = 2; affine; coupling(mask = odd, hidden = [3])";
        let message = mismatch(from_bytes(&mut m, &bytes, other).unwrap_err());
        assert!(
            message.contains(ARCH) && message.contains(other),
            "{message}"
        );
        assert!(
            message.contains("character 33") && message.contains("`even"),
            "{message}"
        );
        let message = mismatch(from_bytes(&mut m, &bytes, "dim = 2; affine").unwrap_err());
        assert!(message.contains("the end in this flow"), "{message}");
    }

    #[test]
    fn a_tensor_of_another_shape_is_named() {
        let bytes = to_bytes(&model::<f64>(2, 2), ARCH).unwrap();
        let mut wider = model::<f64>(3, 2);
        let before = bits(&wider);
        let message = mismatch(from_bytes(&mut wider, &bytes, ARCH).unwrap_err());
        assert!(message.contains("`affine.shift`"), "{message}");
        assert!(
            message.contains("[2]") && message.contains("[3]"),
            "{message}"
        );
        assert_eq!(bits(&wider), before);
        let mut taller = model::<f64>(2, 5);
        let message = mismatch(from_bytes(&mut taller, &bytes, ARCH).unwrap_err());
        assert!(
            message.contains("`coupling_0.net.0.weight`") && message.contains("[2, 3]"),
            "{message}"
        );
    }

    #[test]
    fn a_tensor_of_another_dtype_is_named() {
        let bytes = to_bytes(&model::<f32>(2, 2), ARCH).unwrap();
        let mut m = model::<f64>(2, 2);
        let before = bits(&m);
        let message = mismatch(from_bytes(&mut m, &bytes, ARCH).unwrap_err());
        assert!(message.contains("`affine.shift`"), "{message}");
        assert!(
            message.contains("F32") && message.contains("f64"),
            "{message}"
        );
        assert_eq!(bits(&m), before);
    }

    #[test]
    fn missing_and_extra_tensors_are_named() {
        let with_extra = to_bytes(&model::<f64>(2, 2), ARCH).unwrap();
        let without_extra =
            to_bytes(&Gaussian::<f64>::new(&[1.0, 2.0], &[3.0, 4.0]), ARCH).unwrap();
        let mut plain = Gaussian::<f64>::new(&[0.0, 0.0], &[0.0, 0.0]);
        let message = mismatch(from_bytes(&mut plain, &with_extra, ARCH).unwrap_err());
        assert!(
            message.contains("does not") && message.contains("`coupling_0.net.0.weight`"),
            "{message}"
        );
        assert_eq!(plain.params(), vec![0.0; 4]);
        let mut bigger = model::<f64>(2, 2);
        let before = bits(&bigger);
        let message = mismatch(from_bytes(&mut bigger, &without_extra, ARCH).unwrap_err());
        assert!(
            message.contains("no tensor `coupling_0.net.0.weight`"),
            "{message}"
        );
        assert_eq!(bits(&bigger), before);
    }

    #[test]
    fn errors_display_their_cause() {
        let err = FlowError::Io {
            path: "a/b.safetensors".into(),
            message: "cannot read the parameter file: gone".into(),
        };
        assert_eq!(
            err.to_string(),
            "a/b.safetensors: cannot read the parameter file: gone"
        );
        let err = FlowError::Mismatch {
            message: "tensor `x` differs".into(),
        };
        assert!(err.to_string().contains("tensor `x` differs"));
    }
}
