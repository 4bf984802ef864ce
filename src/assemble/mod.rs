//! Assembly: from fetched packages to the image tree.

pub mod tree;
