//! ONNX tensors that are known before any image arrives: initializers, `Constant` nodes, and
//! whatever a node computes from those alone (constant folding). Exporters emit small
//! subgraphs of this kind for shapes (`Shape` → `Gather` → `Concat` → `Reshape`) and for
//! weights they rearrange (`Transpose`, `Mul`); they become plain values here, and only their
//! results reach the `.cxrm` graph.

use super::proto::{TensorProto, tensor_proto::DataType};
use cxrm_format::error::{Error, Result};

/// The most elements one constant may have: the spec's decoded-size limit in f32.
const MAX_ELEMENTS: usize = 1 << 34;

/// A constant's values: floats (any float type, converted to f32) or integers (any integer
/// type, widened to i64).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A constant tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub values: Values,
}

fn elements(dims: &[usize]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
}

impl Const {
    pub fn f32(dims: Vec<usize>, values: Vec<f32>) -> Const {
        Const {
            dims,
            values: Values::F32(values),
        }
    }

    pub fn i64(dims: Vec<usize>, values: Vec<i64>) -> Const {
        Const {
            dims,
            values: Values::I64(values),
        }
    }

    pub fn len(&self) -> usize {
        match &self.values {
            Values::F32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as floats.
    pub fn floats(&self) -> Vec<f32> {
        match &self.values {
            Values::F32(v) => v.clone(),
            Values::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The values as integers; floats only when they are whole.
    pub fn ints(&self) -> Option<Vec<i64>> {
        match &self.values {
            Values::I64(v) => Some(v.clone()),
            Values::F32(v) => v
                .iter()
                .map(|&x| (x.fract() == 0.0 && x.is_finite()).then_some(x as i64))
                .collect(),
        }
    }

    /// A one-element constant's value as a float.
    pub fn scalar(&self) -> Option<f32> {
        (self.len() == 1).then(|| self.floats()[0])
    }

    /// Read an ONNX tensor: raw little-endian bytes or the typed repeated fields, checked
    /// against its dims. Tensors stored outside the file are refused.
    pub fn from_proto(t: &TensorProto) -> Result<Const> {
        let bad = |what: String| {
            Error::Usage(format!(
                "tensor {}: {what}",
                cxrm_format::text::escape(&t.name)
            ))
        };
        if t.data_location == 1 || !t.external_data.is_empty() {
            return Err(bad(
                "its data is stored in a separate file; re-save the model with every tensor \
                 inside it (onnx.save(model, path, save_as_external_data=False))"
                    .into(),
            ));
        }
        let dims: Vec<usize> = t
            .dims
            .iter()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<_>>()
            .ok_or_else(|| bad(format!("negative dimension in {:?}", t.dims)))?;
        let n = elements(&dims).ok_or_else(|| bad(format!("{dims:?} is too large")))?;
        let raw = &t.raw_data;
        let from_raw = |width: usize| -> Result<Option<Vec<&[u8]>>> {
            if raw.is_empty() {
                return Ok(None);
            }
            if raw.len() != n * width {
                return Err(bad(format!(
                    "raw data has {} bytes, {dims:?} needs {}",
                    raw.len(),
                    n * width
                )));
            }
            Ok(Some(raw.chunks_exact(width).collect()))
        };
        let dtype = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
        let values = match dtype {
            DataType::Float => match from_raw(4)? {
                Some(c) => Values::F32(
                    c.iter()
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect(),
                ),
                None => Values::F32(t.float_data.clone()),
            },
            DataType::Double => match from_raw(8)? {
                Some(c) => Values::F32(
                    c.iter()
                        .map(|b| f64::from_le_bytes((*b).try_into().expect("8 bytes")) as f32)
                        .collect(),
                ),
                None => Values::F32(t.double_data.iter().map(|&x| x as f32).collect()),
            },
            DataType::Float16 => match from_raw(2)? {
                Some(c) => Values::F32(
                    c.iter()
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                        .collect(),
                ),
                None => Values::F32(
                    t.int32_data
                        .iter()
                        .map(|&x| half::f16::from_bits(x as u16).to_f32())
                        .collect(),
                ),
            },
            DataType::Int64 => match from_raw(8)? {
                Some(c) => Values::I64(
                    c.iter()
                        .map(|b| i64::from_le_bytes((*b).try_into().expect("8 bytes")))
                        .collect(),
                ),
                None => Values::I64(t.int64_data.clone()),
            },
            DataType::Int32 => match from_raw(4)? {
                Some(c) => Values::I64(
                    c.iter()
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                        .collect(),
                ),
                None => Values::I64(t.int32_data.iter().map(|&x| x as i64).collect()),
            },
            other => {
                return Err(bad(format!(
                    "element type {} is not supported (float, double, float16, int32, int64 are)",
                    other.as_str_name()
                )));
            }
        };
        let c = Const { dims, values };
        if c.len() != n {
            return Err(bad(format!(
                "has {} values, its dims {:?} need {n}",
                c.len(),
                c.dims
            )));
        }
        Ok(c)
    }

    /// A 2-D constant transposed.
    pub fn transposed(&self) -> Option<Const> {
        let [r, c] = self.dims[..] else {
            return None;
        };
        let v = self.floats();
        let t = (0..c * r).map(|k| v[(k % r) * c + k / r]).collect();
        Some(Const::f32(vec![c, r], t))
    }

    /// ONNX `Slice` of a constant: per listed axis, `start..end` by `step` (negative steps
    /// run backwards; out-of-range bounds clamp as ONNX says).
    pub fn sliced(
        &self,
        starts: &[i64],
        ends: &[i64],
        axes: &[i64],
        steps: &[i64],
    ) -> Option<Const> {
        let rank = self.dims.len() as i64;
        let mut picks: Vec<Vec<usize>> = self.dims.iter().map(|&d| (0..d).collect()).collect();
        for (k, &axis) in axes.iter().enumerate() {
            let axis = if axis < 0 { axis + rank } else { axis };
            let d = *self.dims.get(usize::try_from(axis).ok()?)? as i64;
            let (start, end, step) = (*starts.get(k)?, *ends.get(k)?, *steps.get(k)?);
            if step == 0 {
                return None;
            }
            let norm = |v: i64| if v < 0 { v + d } else { v };
            let (mut i, stop) = if step > 0 {
                (norm(start).clamp(0, d), norm(end).clamp(0, d))
            } else {
                (norm(start).clamp(-1, d - 1), norm(end).clamp(-1, d - 1))
            };
            let mut idx = Vec::new();
            while (step > 0 && i < stop) || (step < 0 && i > stop) {
                idx.push(i as usize);
                i += step;
            }
            picks[axis as usize] = idx;
        }
        let dims: Vec<usize> = picks.iter().map(Vec::len).collect();
        let n: usize = dims.iter().product();
        let strides: Vec<usize> = (0..self.dims.len())
            .map(|a| self.dims[a + 1..].iter().product())
            .collect();
        let source = |flat: usize| {
            let mut rest = flat;
            let mut at = 0;
            for a in (0..dims.len()).rev() {
                let k = rest % dims[a];
                rest /= dims[a];
                at += picks[a][k] * strides[a];
            }
            at
        };
        Some(match &self.values {
            Values::F32(v) => Const::f32(dims.clone(), (0..n).map(|f| v[source(f)]).collect()),
            Values::I64(v) => Const::i64(dims.clone(), (0..n).map(|f| v[source(f)]).collect()),
        })
    }

    /// Element-wise `self op other`, one side possibly a single value.
    pub fn zip(&self, other: &Const, op: impl Fn(f32, f32) -> f32) -> Option<Const> {
        let (a, b) = (self.floats(), other.floats());
        let dims = if a.len() >= b.len() {
            self.dims.clone()
        } else {
            other.dims.clone()
        };
        let values: Vec<f32> = match (a.len(), b.len()) {
            (x, y) if x == y => a.iter().zip(&b).map(|(&x, &y)| op(x, y)).collect(),
            (_, 1) => a.iter().map(|&x| op(x, b[0])).collect(),
            (1, _) => b.iter().map(|&y| op(a[0], y)).collect(),
            _ => return None,
        };
        let both_int = matches!(
            (&self.values, &other.values),
            (Values::I64(_), Values::I64(_))
        );
        Some(if both_int {
            Const::i64(dims, values.iter().map(|&v| v as i64).collect())
        } else {
            Const::f32(dims, values)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dims: &[i64], data_type: DataType, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: data_type as i32,
            raw_data: raw,
            name: "t".into(),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_data_read_alike() {
        let raw: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let a = Const::from_proto(&proto(&[2], DataType::Float, raw)).unwrap();
        let mut typed = proto(&[2], DataType::Float, Vec::new());
        typed.float_data = vec![1.5, -2.0];
        assert_eq!(a, Const::from_proto(&typed).unwrap());
        let ints: Vec<u8> = [3i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let i = Const::from_proto(&proto(&[2], DataType::Int64, ints)).unwrap();
        assert_eq!(i.ints(), Some(vec![3, -1]));
    }

    #[test]
    fn inconsistent_or_external_tensors_are_refused() {
        let e = Const::from_proto(&proto(&[3], DataType::Float, vec![0; 8]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("raw data has 8 bytes"), "{e}");
        let mut ext = proto(&[1], DataType::Float, Vec::new());
        ext.data_location = 1;
        assert!(
            Const::from_proto(&ext)
                .unwrap_err()
                .to_string()
                .contains("separate file")
        );
        let huge = proto(&[1 << 40, 1 << 40], DataType::Float, Vec::new());
        assert!(Const::from_proto(&huge).is_err());
        let s = proto(&[1], DataType::String, Vec::new());
        assert!(
            Const::from_proto(&s)
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
    }

    #[test]
    fn slices_run_forwards_and_backwards() {
        let m = Const::i64(vec![4, 2], (0..8).collect());
        let rev = m.sliced(&[-1], &[i64::MIN], &[0], &[-1]).unwrap();
        assert_eq!(rev.dims, [4, 2]);
        assert_eq!(rev.ints().unwrap(), [6, 7, 4, 5, 2, 3, 0, 1]);
        let mid = m.sliced(&[1], &[3], &[0], &[1]).unwrap();
        assert_eq!(mid.ints().unwrap(), [2, 3, 4, 5]);
        assert!(m.sliced(&[0], &[1], &[0], &[0]).is_none());
    }

    #[test]
    fn transpose_and_broadcast() {
        let m = Const::f32(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(m.transposed().unwrap().floats(), [1., 4., 2., 5., 3., 6.]);
        let two = Const::f32(vec![], vec![2.0]);
        assert_eq!(m.zip(&two, |a, b| a * b).unwrap().floats()[5], 12.0);
    }
}
