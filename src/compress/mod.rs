//! Compression policies that choose encodings for whole models: which weights to prune, how
//! many bits to quantize them to, and which stored form of each tensor is smallest. The
//! encodings themselves live in [`crate::encoding`]; the retraining that the papers pair with
//! these steps lives in the trainer.

pub mod deep;
#[cfg(feature = "factorize")]
pub mod factorize;
pub mod model;
pub mod prune;
pub mod rules;
