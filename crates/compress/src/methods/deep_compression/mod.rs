//! Deep Compression (Han, Mao & Dally, ICLR 2016): magnitude pruning, k-means weight sharing
//! and Huffman coding. [`prune`] and [`plan`] choose what to keep for a whole model, [`store`]
//! encodes one tensor in the smallest form the options allow, and `retrain` (feature `train`)
//! is the paper's iterative pruning and centroid fine-tuning.

pub mod plan;
pub mod prune;
#[cfg(feature = "train")]
pub mod retrain;
pub mod store;
