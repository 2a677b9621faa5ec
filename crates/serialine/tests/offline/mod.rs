//! What the CLI tests on a stopped service share: line-1's secret, a
//! configuration whose ledger is `<dir>/ledger/line-1` (its devices never
//! reached), and the binary run on it.

// Each test binary that includes this module uses a part of it.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const LINE: &str = "line-1";

/// Writes `<dir>/line-1.secret` (mode 0600) and `<dir>/serialine.toml`,
/// with `extra` (whole tables, e.g. `[retention]`) before the line;
/// returns the config's path.
pub fn write_config(dir: &Path, secret: &[u8], extra: &str) -> PathBuf {
    let secret_file = dir.join("line-1.secret");
    std::fs::write(&secret_file, secret).expect("secret");
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600))
        .expect("secret's mode");
    let profile = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/printer-cij-stx.toml"
    );
    let config = dir.join("serialine.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \".\"\n[site]\nid = \"t\"\n{extra}\n[[line]]\nid = \"{LINE}\"\nsecret_file = \"line-1.secret\"\n\
             printer = {{ kind = \"framed\", profile = \"{profile}\", transport = {{ kind = \"tcp\", addr = \"127.0.0.1:9\" }} }}\n\
             camera = {{ transport = {{ kind = \"tcp\", addr = \"127.0.0.1:9\" }} }}\n"
        ),
    )
    .expect("config");
    config
}

/// `serialine ARGS --config CONFIG`, SERIALINE_CONFIG cleared.
pub fn serialine(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_serialine"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("SERIALINE_CONFIG")
        .output()
        .expect("serialine runs")
}

/// Its standard output, after its standard error when it failed.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
