//! `tollgate configs validate`: offline, every error with its place.

use super::{EXIT_INVALID, EXIT_OK};
use crate::configs_file::FileError;
use crate::configs_file::format;
use std::path::Path;

pub fn validate(file: &Path) -> u8 {
    match format::read(file, chrono::Utc::now()) {
        Ok(configs) => {
            println!("{}: valid, {} configs", file.display(), configs.len());
            EXIT_OK
        }
        Err(errors) => {
            print_errors(file, &errors);
            EXIT_INVALID
        }
    }
}

/// One line per error (`FILE: configs[3] (…): …`), then their count.
pub fn print_errors(file: &Path, errors: &[FileError]) {
    for e in errors {
        eprintln!("{}: {e}", file.display());
    }
    eprintln!(
        "{}: invalid, {} error{}",
        file.display(),
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}
