//! What a host's commands are made of: the privilege they run with, the
//! remote shell's quoting, and the values refused on a command line.

use super::error::{HostError, HostFailure};

/// How a host's privileged commands are run: as the SSH user (root), or
/// through `sudo -n` (a non-root user with passwordless sudo).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Direct,
    Sudo,
}

impl Privilege {
    /// `argv` as this privilege runs it.
    pub fn wrap<'a>(self, argv: &[&'a str]) -> Vec<&'a str> {
        match self {
            Privilege::Direct => argv.to_vec(),
            Privilege::Sudo => ["sudo", "-n", "--"].into_iter().chain(argv.iter().copied()).collect(),
        }
    }
}

/// Whether a failed command's stderr is sudo asking for a password it
/// cannot have (`sudo -n`).
pub fn wants_password(stderr: &str) -> bool {
    stderr.contains("a password is required")
}

/// What to tell a user whose deploy user's sudo wants a password.
pub fn sudo_refused(unit: &str) -> HostError {
    HostError::new(
        unit,
        HostFailure::SudoPasswordRequired,
        "sudo asked for a password: the deploy user needs passwordless sudo for nginx, the lock directory and Docker (see the sudoers line in docs/hosts.md), or log in as root",
    )
}

/// Quotes one argument for the remote POSIX shell.
pub fn quote(arg: &str) -> String {
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-=:@,+%".contains(&b)) {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// The command string for `argv`.
///
/// # Errors
/// An empty vector, or an argument with a NUL byte (it cannot be passed).
pub fn command_line(argv: &[&str]) -> Result<String, String> {
    if argv.is_empty() {
        return Err("empty command".into());
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err("an argument contains a NUL byte".into());
    }
    Ok(argv.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "))
}

/// A value (path, name) placed on a command line: refused if it could be
/// read as an option.
///
/// # Errors
/// `invalid_remote_value` naming `what`.
pub fn value<'a>(unit: &str, what: &str, v: &'a str) -> Result<&'a str, HostError> {
    if v.is_empty() || v.starts_with('-') || v.contains('\0') || v.contains('\n') {
        return Err(HostError::new(
            unit,
            HostFailure::InvalidRemoteValue,
            format!("{what} '{v}' cannot be used on a command line"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_the_remote_shell() {
        assert_eq!(quote("/etc/nginx/x.conf"), "/etc/nginx/x.conf");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote(""), "''");
        assert_eq!(command_line(&["mkdir", "/x y", ";reboot"]).unwrap(), "mkdir '/x y' ';reboot'");
        assert!(command_line(&[]).is_err());
        assert!(command_line(&["a\0b"]).is_err());
    }

    #[test]
    fn option_like_values_are_refused() {
        assert!(value("h", "lock-dir", "/var/lib/x").is_ok());
        assert!(value("h", "lock-dir", "-rf").is_err());
        assert!(value("h", "lock-dir", "").is_err());
    }
}
