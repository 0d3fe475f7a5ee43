//! The five capabilities a scene can switch on, each with the host's native built-in.
//!
//! | capability     | built-in                                                              |
//! |----------------|-----------------------------------------------------------------------|
//! | rate limiting  | [`rate_limit`]: a token bucket per scene and a window count per user  |
//! | inventory      | [`inventory`]: chooses the amount; the store reserves count and budget |
//! | bill copy      | [`bill_copy`]: renders the scene's template for the user's bill       |
//! | compensation   | [`compensation`]: the back-off schedule for retrying a failed step    |
//! | reconciliation | [`reconciliation`]: compares issued, credited and stock per scene     |
//!
//! Each built-in sits behind the shape a WebAssembly plugin will later fill (the plugin issue):
//! a pure decision over a context the host hands in, with any state kept by the host.

pub mod bill_copy;
pub mod compensation;
pub mod inventory;
pub mod rate_limit;
pub mod reconciliation;
