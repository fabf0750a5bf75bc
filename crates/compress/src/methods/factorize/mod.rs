//! Low-rank factorisation: truncated SVD for any layer (Denton et al. 2014) and Tucker-2 for
//! convolutions (Kim et al. 2016). [`store`] computes the factors (faer, feature `factorize`);
//! `retrain` (feature `train`) fine-tunes the split network and folds it back.

#[cfg(feature = "train")]
pub mod retrain;
#[cfg(feature = "factorize")]
pub mod store;
