//! Connection tokens for load runs against a server that authenticates: a signing key, the
//! files the server reads to verify it, and tokens minted before a run starts (so signing never
//! counts in what a run measures). Not a verifier: the server's `corecast::auth` is that.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;

/// How tokens are signed: the two algorithms the benchmarks compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// HMAC-SHA256 with a shared secret (`--jwt-secret-file`).
    Hs256,
    /// ECDSA P-256 with SHA-256 (`--jwt-public-key-file`).
    Es256,
}

/// The claims a load client's token carries.
#[derive(Debug, Serialize)]
pub struct Claims<'a> {
    pub sub: &'a str,
    pub exp: u64,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub subscribe: &'a [&'a str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub publish: &'a [&'a str],
}

/// A signing key, and the file the server verifies it with.
pub struct TokenKey {
    algorithm: Algorithm,
    key: EncodingKey,
    /// The server flag that names `file`: `--jwt-secret-file` or `--jwt-public-key-file`.
    flag: &'static str,
    file: PathBuf,
}

impl TokenKey {
    /// A fresh key, its verifying half written into `dir` (which must exist).
    pub fn generate(signing: Signing, dir: &Path) -> anyhow::Result<TokenKey> {
        match signing {
            Signing::Hs256 => {
                // A fixed secret is enough: the run is on loopback and its tokens live minutes.
                let secret = b"corecast-load: a secret that only signs load-run tokens";
                let file = dir.join("jwt-secret");
                std::fs::write(&file, secret).with_context(|| format!("writing {file:?}"))?;
                Ok(TokenKey {
                    algorithm: Algorithm::HS256,
                    key: EncodingKey::from_secret(secret),
                    flag: "--jwt-secret-file",
                    file,
                })
            }
            Signing::Es256 => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .context("making a P-256 key")?;
                let file = dir.join("jwt-public.pem");
                std::fs::write(&file, pair.public_key_pem())
                    .with_context(|| format!("writing {file:?}"))?;
                let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
                    .context("reading back the P-256 key")?;
                Ok(TokenKey {
                    algorithm: Algorithm::ES256,
                    key,
                    flag: "--jwt-public-key-file",
                    file,
                })
            }
        }
    }

    /// The server arguments that make it verify this key's tokens.
    pub fn server_args(&self) -> [String; 2] {
        [self.flag.to_string(), self.file.display().to_string()]
    }

    /// A token for `claims`.
    pub fn mint(&self, claims: &Claims<'_>) -> anyhow::Result<String> {
        encode(&Header::new(self.algorithm), claims, &self.key).context("signing a token")
    }

    /// A token for user `sub` that lives `ttl_s` seconds, with the given grants.
    pub fn mint_for(
        &self,
        sub: &str,
        ttl_s: u64,
        subscribe: &[&str],
        publish: &[&str],
    ) -> anyhow::Result<String> {
        self.mint(&Claims {
            sub,
            exp: unix_now() + ttl_s,
            subscribe,
            publish,
        })
    }
}

/// Seconds since the Unix epoch, as `exp` counts them.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecast::auth::Verifier;

    #[test]
    fn tokens_verify_with_the_files_written_for_the_server() {
        let dir = std::env::temp_dir().join(format!("corecast-load-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for signing in [Signing::Hs256, Signing::Es256] {
            let key = TokenKey::generate(signing, &dir).unwrap();
            let token = key.mint_for("alice", 60, &["scores.*"], &[]).unwrap();
            let file = std::fs::read(&key.file).unwrap();
            let verifier = match signing {
                Signing::Hs256 => Verifier::hmac(&file).unwrap(),
                Signing::Es256 => Verifier::public_key_pem(&file).unwrap(),
            };
            let identity = verifier.verify(&token, unix_now()).unwrap();
            assert_eq!(identity.user, "alice", "{signing:?}");
            assert_eq!(
                identity.subscribe,
                vec!["scores.*".to_string()],
                "{signing:?}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
