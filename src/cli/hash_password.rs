//! `trapline hash-password`: the argon2 hash of a password for `http.users`, so that the
//! config holds no password. Reads the password from the terminal without echo (twice), or the
//! first line of standard input when that is not a terminal (scripts, `< file`).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub struct HashPasswordArgs {}

pub fn hash_password(_a: HashPasswordArgs) -> Result<i32> {
    let password = if std::io::stdin().is_terminal() {
        let first = prompt("Password: ")?;
        let again = prompt("Again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if password.chars().count() < 8 {
        bail!("a password of fewer than 8 characters is refused");
    }
    println!("{}", crate::http::users::hash_password(&password)?);
    Ok(0)
}

/// Asks on the terminal with echo off, restoring it afterwards (also after an error).
fn prompt(what: &str) -> Result<String> {
    eprint!("{what}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal (checked by the caller).
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let echo_off = unsafe { libc::tcgetattr(fd, &mut saved) } == 0 && {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) == 0 }
    };
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if echo_off {
        // SAFETY: restores the attributes read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    eprintln!();
    read.context("cannot read the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
