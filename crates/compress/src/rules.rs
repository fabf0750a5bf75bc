//! Per-layer settings as users write them: `0.9`, or `conv=0.6,fc=0.9,features.3.weight=0.5`.
//! A tensor takes the value for its exact name, else for its kind (`conv`: rank-4 weights,
//! `fc`: rank-2 weights), else the bare default.

use cxrm_format::error::{Error, Result};
use std::collections::HashMap;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq)]
pub struct PerLayer<T> {
    pub default: Option<T>,
    pub conv: Option<T>,
    pub fc: Option<T>,
    pub names: HashMap<String, T>,
}

impl<T> Default for PerLayer<T> {
    fn default() -> Self {
        PerLayer {
            default: None,
            conv: None,
            fc: None,
            names: HashMap::new(),
        }
    }
}

impl<T: Copy + FromStr> PerLayer<T> {
    pub fn uniform(value: T) -> Self {
        PerLayer {
            default: Some(value),
            ..Default::default()
        }
    }

    pub fn parse(text: &str, check: impl Fn(T) -> bool) -> Result<Self> {
        let mut rule = PerLayer::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, raw) = match part.split_once('=') {
                Some((k, v)) => (Some(k.trim()), v.trim()),
                None => (None, part),
            };
            let value: T = raw.parse().ok().filter(|v| check(*v)).ok_or_else(|| {
                Error::Usage(format!("{part:?}: {raw:?} is not an allowed value"))
            })?;
            match key {
                None => rule.default = Some(value),
                Some("conv") => rule.conv = Some(value),
                Some("fc") => rule.fc = Some(value),
                Some(name) => {
                    rule.names.insert(name.to_string(), value);
                }
            }
        }
        Ok(rule)
    }

    /// The value for a tensor, if any rule covers it.
    pub fn get(&self, name: &str, shape: &[u64]) -> Option<T> {
        if let Some(v) = self.names.get(name) {
            return Some(*v);
        }
        let by_kind = match shape.len() {
            4 => self.conv,
            2 => self.fc,
            _ => None,
        };
        by_kind.or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beat_kinds_beat_default() {
        let r = PerLayer::<u8>::parse("4, conv=8, fc=5, fc2.weight=3", |b| (1..=8).contains(&b))
            .unwrap();
        assert_eq!(r.get("conv1.weight", &[20, 1, 5, 5]), Some(8));
        assert_eq!(r.get("fc1.weight", &[500, 800]), Some(5));
        assert_eq!(r.get("fc2.weight", &[10, 500]), Some(3));
        assert_eq!(r.get("other", &[3, 3, 3]), Some(4));
        assert!(PerLayer::<u8>::parse("conv=9", |b| (1..=8).contains(&b)).is_err());
        assert!(PerLayer::<f64>::parse("x", |_| true).is_err());
    }
}
