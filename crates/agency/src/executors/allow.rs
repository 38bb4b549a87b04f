//! What a worker's operator allows the sessions it runs to reach: the programs `command` may
//! start and the hosts `http_get` may call. A distributed worker allows nothing unless told
//! (`agency worker --allow-command`, `--allow-http`, `--allow-file`): whoever can produce to
//! `agency_action` must not run any program, nor reach any address, on the workers. An
//! embedded run, a user's own file on their own machine, and the library's default allow
//! everything ([`Allowed::everything`]).
//!
//! Patterns:
//! - a program's name (`python3`) allows that name only as given bare (found on `PATH`);
//! - a path (`/usr/bin/python3`, `/opt/tools/*`) allows the program whose real path it matches
//!   (a bare name is found on `PATH`, then links and `..` are resolved);
//! - a host (`api.example.com`, `*.example.com`, `127.0.0.1:8000`) allows URLs to it, on any
//!   port unless one is given;
//! - `*` allows every program, or every host.

use std::path::{Path, PathBuf};

/// The programs and hosts a worker allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    commands: Rule,
    hosts: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Everything,
    Only(Vec<String>),
}

impl Default for Allowed {
    fn default() -> Self {
        Self::everything()
    }
}

impl Allowed {
    /// Every program and every host: an embedded run's, and the library's default.
    pub fn everything() -> Self {
        Self {
            commands: Rule::Everything,
            hosts: Rule::Everything,
        }
    }

    /// Only the programs `commands` and the hosts `hosts` name (patterns, see the module).
    pub fn only(commands: Vec<String>, hosts: Vec<String>) -> Self {
        let rule = |patterns: Vec<String>| match patterns.iter().any(|p| p == "*") {
            true => Rule::Everything,
            false => Rule::Only(patterns),
        };
        // Host names compare without case: lowered once here, each URL's host at its call.
        let hosts = hosts.iter().map(|host| host.to_ascii_lowercase()).collect();
        Self {
            commands: rule(commands),
            hosts: rule(hosts),
        }
    }

    /// Reads an allow file: a rule per line, `command PATTERN` or `http HOST`; `#` starts a
    /// comment. The rules join `commands` and `hosts`.
    pub fn read_file(
        path: &Path,
        commands: &mut Vec<String>,
        hosts: &mut Vec<String>,
    ) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            match line.split_once(char::is_whitespace) {
                Some(("command", pattern)) => commands.push(pattern.trim().to_string()),
                Some(("http", host)) => hosts.push(host.trim().to_string()),
                _ => {
                    return Err(format!(
                        "{}: line {}: `{line}` is not `command PATTERN` or `http HOST`",
                        path.display(),
                        n + 1
                    ))
                }
            }
        }
        Ok(())
    }

    /// Whether `program` (a `command`'s `argv[0]`) may be started; why not, naming the switch.
    pub fn program(&self, program: &str) -> Result<(), String> {
        let Rule::Only(patterns) = &self.commands else {
            return Ok(());
        };
        // Found on PATH and resolved only when a path pattern needs it: this runs per attempt.
        let by_path = patterns.iter().any(|pattern| pattern.contains('/'));
        let real = by_path.then(|| real_path(program)).flatten();
        let allowed = patterns.iter().any(|pattern| match pattern.contains('/') {
            true => real.as_deref().is_some_and(|real| glob(pattern, real)),
            false => !program.contains('/') && glob(pattern, program),
        });
        match allowed {
            true => Ok(()),
            false => Err(format!(
                "program `{program}` is not allowed on this worker ({}); its operator allows programs with `agency worker --allow-command PATTERN` (AGENCY_ALLOW_COMMAND) or an --allow-file",
                listed(patterns)
            )),
        }
    }

    /// Whether `url` may be called; why not, naming the switch.
    pub fn url(&self, url: &str) -> Result<(), String> {
        let Rule::Only(patterns) = &self.hosts else {
            return Ok(());
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = parsed.port_or_known_default();
        let allowed = patterns
            .iter()
            .any(|pattern| match pattern.rsplit_once(':') {
                Some((name, wanted)) if wanted.parse::<u16>().is_ok() => {
                    glob(name, &host) && port.map(|p| p.to_string()) == Some(wanted.to_string())
                }
                _ => glob(pattern, &host),
            });
        match allowed {
            true => Ok(()),
            false => Err(format!(
                "host `{host}` is not allowed on this worker ({}); its operator allows hosts with `agency worker --allow-http HOST` (AGENCY_ALLOW_HTTP) or an --allow-file",
                listed(patterns)
            )),
        }
    }
}

/// The patterns allowed, for a refusal.
fn listed(patterns: &[String]) -> String {
    match patterns {
        [] => "it allows none".to_string(),
        patterns => format!("it allows: {}", patterns.join(", ")),
    }
}

/// `program`'s real path: found on `PATH` when it is a bare name, links and `..` resolved.
fn real_path(program: &str) -> Option<String> {
    let found: PathBuf = if program.contains('/') {
        PathBuf::from(program)
    } else {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())?
    };
    let real = std::fs::canonicalize(found).ok()?;
    real.to_str().map(str::to_string)
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("*", "anything"));
        assert!(glob("/opt/tools/*", "/opt/tools/solve"));
        assert!(!glob("/opt/tools/*", "/opt/other/solve"));
        assert!(glob("*.example.com", "api.example.com"));
        assert!(!glob("*.example.com", "example.com.evil.org"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("python3", "python3") && !glob("python3", "python3.11"));
    }

    #[test]
    fn a_name_allows_it_only_bare_and_a_path_allows_the_real_program() {
        let sh = real_path("sh").expect("sh on PATH");
        let allowed = Allowed::only(vec!["sh".into(), "/opt/tools/*".into()], vec![]);
        assert_eq!(allowed.program("sh"), Ok(()));
        let refused = allowed.program("/tmp/elsewhere/sh").unwrap_err();
        assert!(refused.starts_with("program `/tmp/elsewhere/sh` is not allowed on this worker (it allows: sh, /opt/tools/*)"), "{refused}");
        assert!(allowed.program("python3").is_err());
        let by_path = Allowed::only(vec![sh.clone()], vec![]);
        assert_eq!(by_path.program("sh"), Ok(()), "found on PATH: {sh}");
        assert_eq!(by_path.program(&sh), Ok(()));
        let none = Allowed::only(vec![], vec![]);
        assert!(none.program("sh").unwrap_err().contains("(it allows none)"));
        assert_eq!(
            Allowed::only(vec!["*".into()], vec![]).program("anything"),
            Ok(())
        );
    }

    #[test]
    fn hosts_are_allowed_by_name_and_port() {
        let allowed = Allowed::only(
            vec![],
            vec!["*.example.com".into(), "127.0.0.1:8000".into()],
        );
        assert_eq!(allowed.url("https://api.example.com/x"), Ok(()));
        assert_eq!(allowed.url("http://127.0.0.1:8000/item/1"), Ok(()));
        let refused = allowed.url("http://127.0.0.1:6379/").unwrap_err();
        assert!(
            refused.starts_with("host `127.0.0.1` is not allowed on this worker"),
            "{refused}"
        );
        assert!(allowed.url("http://169.254.169.254/latest").is_err());
        assert!(allowed
            .url("not a url")
            .unwrap_err()
            .contains("is not a URL"));
        assert_eq!(Allowed::everything().url("http://anywhere/"), Ok(()));
    }
}
