//! Which keys tollgate's scripts really touch: `redis-cli monitor` on a real node logs
//! every script call (`EVAL`/`EVALSHA` with its declared KEYS) followed by each command
//! the script ran (`[0 lua] "HGET" …`). `undeclared` replays that log and asks the node
//! (`COMMAND GETKEYS`) which keys each inner command names, so a script that reads or
//! writes a key it did not declare is caught, whatever the command. On Redis Cluster an
//! undeclared key does not follow its slot through a migration, which is how a usage
//! marker could be read on the wrong node. Included with `#[path]` by the tests that
//! need it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `redis-cli monitor` on one node, its output in a file; stopped when dropped.
pub struct Monitor {
    pub port: u16,
    child: Child,
    out: tempfile::NamedTempFile,
}

impl Monitor {
    pub fn start(port: u16) -> Self {
        let out = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "monitor"])
            .stdout(out.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli must be installed (scripts/test.sh installs redis)");
        // MONITOR answers OK once it is on.
        let on = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            std::fs::read_to_string(out.path()).is_ok_and(|s| s.starts_with("OK"))
        });
        assert!(on, "MONITOR on port {port} never started");
        Monitor { port, child, out }
    }

    /// Every logged line so far.
    pub fn lines(&self) -> Vec<String> {
        let bytes = std::fs::read(self.out.path()).unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One logged command: who sent it (`lua` for a script's own commands) and its arguments.
#[derive(Debug)]
pub struct Logged {
    pub client: String,
    pub args: Vec<Vec<u8>>,
}

/// Parses a MONITOR line: `<time> [<db> <client>] "arg" "arg" …`, arguments quoted and
/// escaped as Redis's `sdscatrepr` writes them.
pub fn parse(line: &str) -> Option<Logged> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let client = line[open + 1..close].split(' ').nth(1)?.to_string();
    let bytes = &line.as_bytes()[close + 1..];
    let mut args = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        i += 1;
        let mut arg = Vec::new();
        while i < bytes.len() && bytes[i] != b'"' {
            if bytes[i] == b'\\' && i + 1 < bytes.len() {
                i += 1;
                match bytes[i] {
                    b'n' => arg.push(b'\n'),
                    b'r' => arg.push(b'\r'),
                    b't' => arg.push(b'\t'),
                    b'a' => arg.push(7),
                    b'b' => arg.push(8),
                    b'x' if i + 2 < bytes.len() => {
                        let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                        arg.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 2;
                    }
                    other => arg.push(other),
                }
            } else {
                arg.push(bytes[i]);
            }
            i += 1;
        }
        args.push(arg);
        i += 1;
    }
    Some(Logged { client, args })
}

/// The keys a command names, as the node itself says (`COMMAND GETKEYS`); none for
/// commands without keys (`TIME`, `PUBLISH`).
fn keys_of(conn: &mut redis::Connection, args: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut cmd = redis::cmd("COMMAND");
    cmd.arg("GETKEYS");
    for a in args {
        cmd.arg(a.as_slice());
    }
    cmd.query::<Vec<Vec<u8>>>(conn).unwrap_or_default()
}

/// What one script call touched without declaring it.
#[derive(Debug)]
pub struct Undeclared {
    pub command: String,
    pub key: String,
}

/// Script calls seen, and every inner command that touched a key its call did not
/// declare, from one node's MONITOR log.
pub fn undeclared(port: u16, lines: &[String]) -> (usize, Vec<Undeclared>) {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let mut cache: HashMap<Vec<Vec<u8>>, Vec<Vec<u8>>> = HashMap::new();
    let mut declared: Option<Vec<Vec<u8>>> = None;
    let mut scripts = 0;
    let mut found = Vec::new();
    for logged in lines.iter().filter_map(|l| parse(l)) {
        let Some(name) = logged.args.first() else {
            continue;
        };
        if logged.client != "lua" {
            let name = String::from_utf8_lossy(name).to_ascii_uppercase();
            declared = matches!(name.as_str(), "EVAL" | "EVALSHA").then(|| {
                scripts += 1;
                let n: usize = String::from_utf8_lossy(&logged.args[2]).parse().unwrap();
                logged.args[3..3 + n].to_vec()
            });
            continue;
        }
        let declared = declared
            .as_ref()
            .expect("a script's commands follow its EVAL or EVALSHA");
        // The same command shape names the same keys: ask once per distinct call.
        let keys = cache
            .entry(logged.args.clone())
            .or_insert_with(|| keys_of(&mut conn, &logged.args))
            .clone();
        for key in keys {
            if !declared.contains(&key) {
                found.push(Undeclared {
                    command: String::from_utf8_lossy(name).into_owned(),
                    key: String::from_utf8_lossy(&key).into_owned(),
                });
            }
        }
    }
    (scripts, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escaped_arguments() {
        let l = parse(r#"1.5 [0 lua] "HSET" "k\"1" "f" "\x00\xffa\\b""#).unwrap();
        assert_eq!(l.client, "lua");
        assert_eq!(l.args[1], b"k\"1");
        assert_eq!(l.args[3], b"\x00\xffa\\b");
        let e = parse(r#"1.5 [0 127.0.0.1:5] "EVALSHA" "ab" "1" "key""#).unwrap();
        assert_eq!(e.client, "127.0.0.1:5");
        assert_eq!(e.args.len(), 4);
    }
}
