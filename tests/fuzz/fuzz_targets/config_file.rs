//! The `hongbao serve --config FILE` settings file: its text through
//! `hongbao::cli::ServeOptions::from_config_text`, which the path version reads into. Any input
//! must give settings or an error naming the file, line and key, never a panic; the error is
//! rendered, since it quotes the line's key.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(error) = hongbao::cli::ServeOptions::from_config_text(Path::new("hongbao.yaml"), text) {
        let _ = format!("{error:#}");
    }
});
