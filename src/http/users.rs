//! People who log in with a name and a password instead of the token: `http.users` holds
//! their names and argon2 password hashes (PHC strings, as `trapline hash-password` prints
//! them), never a password.
//!
//! - A hash is checked when the server starts: one that is not an argon2 PHC string stops
//!   `run` with the position of the bad entry, instead of failing every log-in later.
//! - Verifying costs tens of milliseconds and 19 MiB by design, so it runs on a blocking
//!   thread; an unknown name is verified against a dummy hash so that the answer's timing
//!   does not tell which names exist.

use anyhow::{Result, bail};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, ParamsBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One entry of `http.users`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserDef {
    /// The name typed at log-in; recorded with what the person does (accepting a change).
    pub name: String,
    /// The argon2 hash of the password as a PHC string (`$argon2id$v=19$m=...`), from
    /// `trapline hash-password`.
    pub password_hash: String,
}

/// The configured users, checked.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: Vec<(String, String)>,
}

impl Users {
    /// Checks every entry; `position(i)` names entry `i` in the config for an error.
    pub fn new(defs: &[UserDef], position: impl Fn(usize) -> String) -> Result<Users> {
        let mut users: Vec<(String, String)> = Vec::new();
        for (i, u) in defs.iter().enumerate() {
            let name = u.name.trim();
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
                bail!("{}: a user name is 1 to 64 printable characters", position(i));
            }
            if users.iter().any(|(n, _)| n == name) {
                bail!("{}: user {name:?} is listed twice", position(i));
            }
            match PasswordHash::new(&u.password_hash) {
                Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
                Ok(h) => bail!(
                    "{}: the password hash of {name:?} is {}, not argon2; make one with `trapline hash-password`",
                    position(i),
                    h.algorithm
                ),
                Err(e) => bail!(
                    "{}: the password hash of {name:?} is not a PHC string ({e}); make one with `trapline hash-password`",
                    position(i)
                ),
            }
            users.push((name.to_string(), u.password_hash.clone()));
        }
        Ok(Users { users })
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `name`'s. Slow on purpose (call it off the async runtime); as
    /// slow for a name that does not exist.
    pub fn verify(&self, name: &str, password: &str) -> bool {
        let stored = self.users.iter().find(|(n, _)| n == name).map(|(_, h)| h.as_str());
        let hash = stored.unwrap_or(DUMMY);
        let ok = PasswordHash::new(hash)
            .map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false);
        ok && stored.is_some()
    }
}

/// A hash of the password "x" with the default parameters: what an unknown name is checked
/// against, so that it costs the same time as a known one.
const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$K8yNLbM4Tf1nWqFPFv0I1V3fVwS4a6TJ1mJ3j1eT1gA";

/// The PHC string of `password` with argon2id's default (OWASP) parameters and a random salt.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("cannot read the kernel's random source: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("{e}"))?;
    let argon = Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        ParamsBuilder::new().build().map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    Ok(argon.hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("{e}"))?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        let users = Users::new(&[UserDef { name: "alice".into(), password_hash: h }], |i| format!("#{i}")).unwrap();
        assert!(users.verify("alice", "correct horse"));
        assert!(!users.verify("alice", "correct horse "));
        assert!(!users.verify("bob", "correct horse"));
    }

    #[test]
    fn the_dummy_hash_parses() {
        // An unknown name must cost a real verification, not a parse error's shortcut.
        assert!(PasswordHash::new(DUMMY).is_ok());
    }

    #[test]
    fn bad_entries_are_refused_with_their_position() {
        let bad = |h: &str| {
            Users::new(&[UserDef { name: "a".into(), password_hash: h.into() }], |i| format!("cfg:#{i}"))
                .unwrap_err()
                .to_string()
        };
        assert!(
            bad("hunter2").starts_with("cfg:#0: the password hash of \"a\" is not a PHC string"),
            "{}",
            bad("hunter2")
        );
        let scrypt = bad("$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E");
        assert!(scrypt.contains("is scrypt, not argon2"), "{scrypt}");
        let h = hash_password("x").unwrap();
        let twice = Users::new(
            &[UserDef { name: "a".into(), password_hash: h.clone() }, UserDef { name: "a".into(), password_hash: h }],
            |i| format!("#{i}"),
        )
        .unwrap_err();
        assert!(twice.to_string().starts_with("#1: user \"a\" is listed twice"));
    }
}
