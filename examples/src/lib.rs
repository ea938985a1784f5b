//! Library code shared by the example programs (and tested in this crate's tests).

pub mod http1;
pub mod sim;
