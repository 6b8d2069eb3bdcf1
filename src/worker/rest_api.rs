//! Moved to [`crate::egress::rest_api`]; this re-export keeps the worker's import
//! working until it names the new path (then this file and `pub mod rest_api` go).

pub use crate::egress::rest_api::{HttpOptions, ReqwestHttp};
