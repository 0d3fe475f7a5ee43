//! Scene YAML: the text of one scene file through the parser and the validator
//! (`hongbao::config::parse_activity`, what the registry and `hongbao scenes validate` run on
//! every file). Any input must give an activity or errors, never a panic; the errors are
//! rendered too, since their messages quote pieces of the input.
#![no_main]

use std::fmt::Write as _;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Files are read as bytes and refused unless UTF-8 before this parser runs.
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(errors) = hongbao::config::parse_activity(Path::new("scenes/fuzz.yaml"), text) {
        let mut rendered = String::new();
        for error in &errors {
            let _ = write!(rendered, "{error}");
        }
    }
});
