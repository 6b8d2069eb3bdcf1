//! `wabot flows keygen`: a new key pair for the Flows endpoint.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use secrecy::ExposeSecret;

use crate::config::Config;
use crate::whatsapp::flows_crypto;

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Write a new 2048-bit RSA key pair and print the public key to upload to Meta.
    ///
    /// The private key (PKCS#8 PEM, mode 0600) goes to --out, else to
    /// WABOT_FLOWS_PRIVATE_KEY, else to ./flows_private.pem; the public key to the
    /// same path with `.pub` appended, and to standard output.
    Keygen {
        /// Where to write the private key.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(config: &Config, cmd: FlowsCommand) -> anyhow::Result<ExitCode> {
    let FlowsCommand::Keygen { out, force } = cmd;
    let path = out
        .or_else(|| config.flows.private_key.clone())
        .unwrap_or_else(|| PathBuf::from("flows_private.pem"));
    let public_path = PathBuf::from(format!("{}.pub", path.display()));
    if !force && (path.exists() || public_path.exists()) {
        anyhow::bail!(
            "{} already exists; pass --force to replace it (the endpoint then needs the new public key at Meta)",
            path.display()
        );
    }
    let pair = flows_crypto::generate().context("cannot generate the key pair")?;
    write_private(&path, pair.private_pem.expose_secret())
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::write(&public_path, &pair.public_pem)
        .with_context(|| format!("cannot write {}", public_path.display()))?;
    eprintln!(
        "private key: {} (set WABOT_FLOWS_PRIVATE_KEY to this path)",
        path.display()
    );
    eprintln!(
        "public key:  {} (upload it to Meta, see README)",
        public_path.display()
    );
    print!("{}", pair.public_pem);
    Ok(ExitCode::SUCCESS)
}

/// Writes the private key readable by its owner only, from the first byte on.
fn write_private(path: &std::path::Path, pem: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()
}
