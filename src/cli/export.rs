//! `tollgate configs export`: the configs file of a running fleet, on stdout. What it
//! prints applies back as all `unchanged`.

use super::client::Api;
use super::{EXIT_OK, EXIT_SERVER};
use crate::configs_file::Format;
use crate::configs_file::render::render;

pub async fn export(api: &Api, format: Format) -> u8 {
    let configs = match api.list_all().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot list the model configs: {e}");
            return EXIT_SERVER;
        }
    };
    match render(&configs, format) {
        Ok(text) => {
            print!("{text}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("cannot write the configs file: {e}");
            EXIT_SERVER
        }
    }
}
