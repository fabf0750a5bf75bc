//! Typed values and maps: the encoding shared by the metadata and graph sections (spec §6).

use crate::cursor::Cursor;
use crate::error::{Error, ErrorCode, Result};
use crate::limits::Limits;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Homogeneous: every element has the type `elem`.
    Array(ValueType, Vec<Value>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ValueType {
    String = 1,
    Int = 2,
    Float = 3,
    Bool = 4,
    Array = 5,
}

impl ValueType {
    fn from_code(code: u8) -> Option<ValueType> {
        Some(match code {
            1 => ValueType::String,
            2 => ValueType::Int,
            3 => ValueType::Float,
            4 => ValueType::Bool,
            5 => ValueType::Array,
            _ => return None,
        })
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::String(_) => ValueType::String,
            Value::Int(_) => ValueType::Int,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Bool,
            Value::Array(..) => ValueType::Array,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// A float, or an int widened to float.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, items) => Some(items),
            _ => None,
        }
    }

    /// An array of strings, as used for class names, graph inputs and weights.
    pub fn strings(items: impl IntoIterator<Item = impl Into<String>>) -> Value {
        Value::Array(
            ValueType::String,
            items.into_iter().map(|s| Value::String(s.into())).collect(),
        )
    }

    pub fn ints(items: impl IntoIterator<Item = i64>) -> Value {
        Value::Array(ValueType::Int, items.into_iter().map(Value::Int).collect())
    }

    pub fn floats(items: impl IntoIterator<Item = f64>) -> Value {
        Value::Array(
            ValueType::Float,
            items.into_iter().map(Value::Float).collect(),
        )
    }

    /// Check that arrays are homogeneous, nesting and sizes are within the limits: the writer
    /// refuses to produce what a reader would reject.
    pub(crate) fn check(&self, limits: &Limits, depth: usize) -> std::result::Result<(), String> {
        match self {
            Value::String(s) if s.len() > limits.string_len as usize => Err(format!(
                "string of {} bytes exceeds {}",
                s.len(),
                limits.string_len
            )),
            Value::Array(elem, items) => {
                if depth >= limits.array_depth {
                    return Err(format!("arrays nest deeper than {}", limits.array_depth));
                }
                if items.len() > limits.array_len as usize {
                    return Err(format!(
                        "array of {} exceeds {}",
                        items.len(),
                        limits.array_len
                    ));
                }
                for item in items {
                    if item.value_type() != *elem {
                        return Err("array elements must all have the array's element type".into());
                    }
                    item.check(limits, depth + 1)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn write_untagged(&self, out: &mut Vec<u8>) {
        match self {
            Value::String(s) => {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Int(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Float(v) => out.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => out.push(*v as u8),
            Value::Array(elem, items) => {
                out.push(*elem as u8);
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for item in items {
                    item.write_untagged(out);
                }
            }
        }
    }
}

/// An ordered map, as stored: keys keep the file's order.
pub type Map = Vec<(String, Value)>;

/// Look a key up in a map.
pub fn get<'m>(map: &'m Map, key: &str) -> Option<&'m Value> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub(crate) fn check_map(map: &Map, limits: &Limits) -> std::result::Result<(), String> {
    if map.len() > limits.map_entries as usize {
        return Err(format!(
            "{} entries exceed {}",
            map.len(),
            limits.map_entries
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (key, value) in map {
        if key.is_empty() || key.len() > limits.key_len {
            return Err(format!(
                "key length {} outside 1..={}",
                key.len(),
                limits.key_len
            ));
        }
        if !seen.insert(key.as_str()) {
            return Err(format!("duplicate key {:?}", key));
        }
        value.check(limits, 0).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}

pub(crate) fn write_map(map: &Map, out: &mut Vec<u8>) {
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (key, value) in map {
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.push(value.value_type() as u8);
        value.write_untagged(out);
    }
}

/// Parse one map; `what` names it in errors (e.g. `metadata` or `graph.node[3]`).
pub(crate) fn read_map(c: &mut Cursor<'_>, limits: &Limits, what: &str) -> Result<Map> {
    let count_at = c.offset();
    let count = c.u32(|| format!("{what}.count"))?;
    if count > limits.map_entries {
        return Err(Error::format(
            ErrorCode::LimitExceeded,
            format!("{what}.count"),
            count_at,
            format!("{count} entries exceed the limit of {}", limits.map_entries),
        ));
    }
    // Each entry takes at least 4 bytes (key length, one key byte, type): never reserve more
    // than the bytes present can hold.
    let mut map = Vec::with_capacity((count as usize).min(c.remaining() / 4));
    let mut seen = std::collections::HashSet::new();
    for i in 0..count {
        let key_at = c.offset();
        let key_len = c.u16(|| format!("{what}.entry[{i}].key_len"))? as usize;
        if key_len == 0 || key_len > limits.key_len {
            return Err(Error::format(
                ErrorCode::LimitExceeded,
                format!("{what}.entry[{i}].key_len"),
                key_at,
                format!("key length {key_len} outside 1..={}", limits.key_len),
            ));
        }
        let key = c.str(key_len, || format!("{what}.entry[{i}].key"))?;
        if !seen.insert(key) {
            return Err(Error::format(
                ErrorCode::DuplicateKey,
                format!("{what}.entry[{i}].key"),
                key_at + 2,
                format!("key {:?} appears twice", crate::text::escape(key)),
            ));
        }
        let field = format!("{what}.{}", crate::text::escape(key));
        let type_at = c.offset();
        let tag = c.u8(|| format!("{field}.type"))?;
        let vt = ValueType::from_code(tag).ok_or_else(|| {
            Error::format(
                ErrorCode::BadValue,
                format!("{field}.type"),
                type_at,
                format!("unknown value type {tag}"),
            )
        })?;
        let value = read_untagged(c, vt, limits, 0, &field)?;
        map.push((key.to_string(), value));
    }
    Ok(map)
}

fn read_untagged(
    c: &mut Cursor<'_>,
    vt: ValueType,
    limits: &Limits,
    depth: usize,
    field: &str,
) -> Result<Value> {
    Ok(match vt {
        ValueType::String => {
            let at = c.offset();
            let len = c.u32(|| format!("{field}.len"))?;
            if len > limits.string_len {
                return Err(Error::format(
                    ErrorCode::LimitExceeded,
                    format!("{field}.len"),
                    at,
                    format!(
                        "string of {len} bytes exceeds the limit of {}",
                        limits.string_len
                    ),
                ));
            }
            Value::String(c.str(len as usize, || field.to_string())?.to_string())
        }
        ValueType::Int => Value::Int(c.i64(|| field.to_string())?),
        ValueType::Float => Value::Float(c.f64(|| field.to_string())?),
        ValueType::Bool => {
            let at = c.offset();
            match c.u8(|| field.to_string())? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(Error::format(
                        ErrorCode::BadValue,
                        field,
                        at,
                        format!("bool must be 0 or 1, found {b}"),
                    ));
                }
            }
        }
        ValueType::Array => {
            let at = c.offset();
            if depth >= limits.array_depth {
                return Err(Error::format(
                    ErrorCode::LimitExceeded,
                    field,
                    at,
                    format!("arrays nest deeper than {}", limits.array_depth),
                ));
            }
            let tag = c.u8(|| format!("{field}.element_type"))?;
            let elem = ValueType::from_code(tag).ok_or_else(|| {
                Error::format(
                    ErrorCode::BadValue,
                    format!("{field}.element_type"),
                    at,
                    format!("unknown value type {tag}"),
                )
            })?;
            let count_at = c.offset();
            let count = c.u32(|| format!("{field}.count"))?;
            if count > limits.array_len {
                return Err(Error::format(
                    ErrorCode::LimitExceeded,
                    format!("{field}.count"),
                    count_at,
                    format!("{count} elements exceed the limit of {}", limits.array_len),
                ));
            }
            // Smallest element: a bool (1 byte).
            let mut items = Vec::with_capacity((count as usize).min(c.remaining()));
            for i in 0..count {
                items.push(read_untagged(
                    c,
                    elem,
                    limits,
                    depth + 1,
                    &format!("{field}[{i}]"),
                )?);
            }
            Value::Array(elem, items)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(map: &Map) -> Map {
        let mut bytes = Vec::new();
        write_map(map, &mut bytes);
        let mut c = Cursor::new(&bytes, 0);
        let back = read_map(&mut c, &Limits::SPEC, "m").unwrap();
        assert!(c.is_empty());
        back
    }

    #[test]
    fn every_type_round_trips() {
        let map: Map = vec![
            ("s".into(), Value::String("héllo".into())),
            ("i".into(), Value::Int(-7)),
            ("f".into(), Value::Float(0.25)),
            ("b".into(), Value::Bool(true)),
            ("a".into(), Value::strings(["x", "y"])),
            (
                "nested".into(),
                Value::Array(ValueType::Array, vec![Value::ints([1, 2]), Value::ints([])]),
            ),
        ];
        assert_eq!(round_trip(&map), map);
    }

    #[test]
    fn rejects_duplicate_keys_and_deep_nesting() {
        let mut bytes = Vec::new();
        write_map(
            &vec![("k".into(), Value::Int(1)), ("j".into(), Value::Int(2))],
            &mut bytes,
        );
        let j = bytes.iter().position(|&b| b == b'j').unwrap();
        bytes[j] = b'k';
        let err = read_map(&mut Cursor::new(&bytes, 0), &Limits::SPEC, "m").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DuplicateKey));

        let mut deep = Value::Int(1);
        for _ in 0..5 {
            deep = Value::Array(deep.value_type(), vec![deep]);
        }
        let mut bytes = Vec::new();
        write_map(&vec![("d".into(), deep)], &mut bytes);
        let err = read_map(&mut Cursor::new(&bytes, 0), &Limits::SPEC, "m").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::LimitExceeded));
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        // count = u32::MAX entries in a 4-byte map.
        let bytes = u32::MAX.to_le_bytes();
        let err = read_map(&mut Cursor::new(&bytes, 0), &Limits::SPEC, "m").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::LimitExceeded));
        // An array claiming 16M elements with 0 bytes behind it.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&1u16.to_le_bytes());
        bytes.extend_from_slice(b"a");
        bytes.push(5);
        bytes.push(2);
        bytes.extend_from_slice(&(1u32 << 24).to_le_bytes());
        let err = read_map(&mut Cursor::new(&bytes, 0), &Limits::SPEC, "m").unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Truncated));
    }
}
