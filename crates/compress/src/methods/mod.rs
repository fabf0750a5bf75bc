//! The compression methods, one module each. A method's storage side (`store`: how its result
//! is encoded, with no training framework) sits beside its retraining side (`retrain`: the
//! burn fine-tuning its paper pairs with it, feature `train`).

pub mod deep_compression;
#[cfg(feature = "train")]
pub mod distill;
pub mod factorize;
