//! `tessera keygen`: create a channel identity (a Noise X25519 static key) or show its public key.

use std::path::PathBuf;

use anyhow::Context;
use tessera_channel::Identity;

/// Create an identity key file, or print the public key of one.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Write a new identity to this file (mode 0600; an existing file is never overwritten).
    #[arg(long, short, value_name = "FILE", required_unless_present = "show")]
    pub out: Option<PathBuf>,
    /// Print the public key of an existing key file.
    #[arg(long, value_name = "FILE", conflicts_with = "out")]
    pub show: Option<PathBuf>,
}

/// Runs `tessera keygen`.
pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    match (args.out, args.show) {
        (_, Some(file)) => {
            let identity = Identity::load(&file)?;
            println!("{}", identity.public_key());
        }
        (Some(file), None) => {
            let identity = Identity::generate();
            identity
                .save(&file)
                .with_context(|| format!("writing {}", file.display()))?;
            eprintln!("wrote {} (mode 0600); public key:", file.display());
            println!("{}", identity.public_key());
        }
        (None, None) => anyhow::bail!("give --out FILE or --show FILE"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_file_that_show_reads() {
        let dir = std::env::temp_dir().join(format!("tessera-keygen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("id.key");
        let _ = std::fs::remove_file(&file);
        run(KeygenArgs {
            out: Some(file.clone()),
            show: None,
        })
        .expect("keygen");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        run(KeygenArgs {
            out: None,
            show: Some(file.clone()),
        })
        .expect("show");
        // Never overwrites.
        assert!(
            run(KeygenArgs {
                out: Some(file.clone()),
                show: None,
            })
            .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
