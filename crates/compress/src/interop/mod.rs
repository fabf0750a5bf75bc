//! Interchange with other formats.

pub mod safetensors;
