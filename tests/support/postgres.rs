//! A real PostgreSQL for tests (Debian's `postgresql` package): `initdb` and `postgres` on a free
//! loopback port in a private directory, killed on drop, with the subset of E2B's schema the
//! emitter reads and a login role holding only the grants docs/events-api.md tells operators to
//! give.
//! Postgres refuses to run as root, so as root (CI) the server runs as the `postgres` user.
#![allow(dead_code)] // each test crate uses a different subset

use crate::common::free_port;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The role the emitter connects as, and its password.
pub const EMITTER_ROLE: &str = "webhook_emitter";
pub const EMITTER_PASSWORD: &str = "emitter-pw-7c1d";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `postgres`.
pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl PostgresServer {
    /// A fresh cluster with E2B's tables and the emitter's role.
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().expect("a temporary directory for Postgres");
        let server = Self {
            child: None,
            port: free_port(),
            bin,
            dir,
        };
        if as_root() {
            // The postgres user must own the data directory and reach it through the temp dir.
            std::fs::set_permissions(server.dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(server.dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown of the Postgres test directory failed"
            );
        }
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--auth-local=trust",
            ])
            .args(["--auth-host=scram-sha-256"])
            .output()
            .expect("running initdb (install Debian's postgresql)");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = server;
        server.spawn();
        server
            .psql_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/e2b_schema.sql"));
        // The grants docs/events-api.md documents: read E2B's four tables, create our own schema.
        server.psql(&format!(
            "CREATE ROLE {EMITTER_ROLE} LOGIN PASSWORD '{EMITTER_PASSWORD}';
             GRANT CONNECT, CREATE ON DATABASE postgres TO {EMITTER_ROLE};
             GRANT USAGE ON SCHEMA public TO {EMITTER_ROLE};
             GRANT SELECT ON public.teams, public.team_api_keys,
                             public.user_identities, public.users_teams TO {EMITTER_ROLE};"
        ));
        server
    }

    /// The emitter's connection string (its own role, over TCP with a password).
    pub fn url(&self) -> String {
        format!(
            "postgresql://{EMITTER_ROLE}:{EMITTER_PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs `sql` as the superuser; returns what psql printed (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> String {
        let out = self
            .psql_command()
            .args(["-c", sql])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Adds a team and an API key for it; returns (team id, key). The hash is computed by
    /// Postgres the way E2B's migration 20250825102800_hash_existing_keys.sql computes it.
    pub fn add_team(&self, name: &str) -> (String, String) {
        let team = self.psql(&format!(
            "INSERT INTO public.teams (name, tier, email) VALUES ('{name}', 'base_v1', '{name}@example.com') RETURNING id"
        ));
        let hex: String = (0..20).map(|_| format!("{:02x}", rand_byte())).collect();
        let key = format!("e2b_{hex}");
        self.psql(&format!(
            "INSERT INTO public.team_api_keys
                 (team_id, api_key_hash, api_key_prefix, api_key_length, api_key_mask_prefix, api_key_mask_suffix)
             VALUES ('{team}',
                     '$sha256$' || rtrim(encode(sha256(decode('{hex}', 'hex')), 'base64'), '='),
                     'e2b_', 40, '{}', '{}')",
            &hex[..2],
            &hex[36..]
        ));
        (team, key)
    }

    /// Adds `count` teams named `<prefix>-<n>`, each with an API key, in two statements (for
    /// tests and benchmarks of thousands of teams); returns (team id, key) in order.
    pub fn add_teams(&self, prefix: &str, count: usize) -> Vec<(String, String)> {
        // A psql argument may not exceed 128 KiB: 500 teams a statement stay well below.
        (0..count)
            .step_by(500)
            .flat_map(|first| self.add_team_range(prefix, first..count.min(first + 500)))
            .collect()
    }

    fn add_team_range(&self, prefix: &str, range: std::ops::Range<usize>) -> Vec<(String, String)> {
        let count = range.len();
        let names: Vec<String> = range.map(|n| format!("{prefix}-{n}")).collect();
        let values: Vec<String> = names
            .iter()
            .map(|name| format!("('{name}', 'base_v1', '{name}@example.com')"))
            .collect();
        // Returned in insertion order (one statement, WITH ORDINALITY over the values).
        let teams = self.psql(&format!(
            "WITH added AS (INSERT INTO public.teams (name, tier, email) VALUES {} RETURNING id, name)
             SELECT id FROM added ORDER BY array_position(ARRAY[{}]::text[], name)",
            values.join(","),
            names.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(",")
        ));
        let teams: Vec<String> = teams.lines().map(str::to_owned).collect();
        assert_eq!(teams.len(), count);
        let hexes: Vec<String> = (0..count)
            .map(|_| (0..20).map(|_| format!("{:02x}", rand_byte())).collect())
            .collect();
        let keys: Vec<String> = teams
            .iter()
            .zip(&hexes)
            .map(|(team, hex)| {
                format!(
                    "('{team}', '$sha256$' || rtrim(encode(sha256(decode('{hex}', 'hex')), 'base64'), '='), 'e2b_', 40, '{}', '{}')",
                    &hex[..2],
                    &hex[36..]
                )
            })
            .collect();
        self.psql(&format!(
            "INSERT INTO public.team_api_keys
                 (team_id, api_key_hash, api_key_prefix, api_key_length, api_key_mask_prefix, api_key_mask_suffix)
             VALUES {}",
            keys.join(",")
        ));
        teams
            .into_iter()
            .zip(hexes)
            .map(|(team, hex)| (team, format!("e2b_{hex}")))
            .collect()
    }

    /// Adds a user known to the issuer `iss` as `sub` (as E2B's OIDC bootstrap records one);
    /// returns the user id.
    pub fn add_user(&self, email: &str, iss: &str, sub: &str) -> String {
        let user = self.psql(&format!(
            "INSERT INTO public.users (id, email) VALUES (gen_random_uuid(), '{email}') RETURNING id"
        ));
        self.psql(&format!(
            "INSERT INTO public.user_identities (oidc_iss, oidc_sub, user_id) VALUES ('{iss}', '{sub}', '{user}')"
        ));
        user
    }

    /// Makes `user` a member of `team`.
    pub fn add_member(&self, user: &str, team: &str) {
        self.psql(&format!(
            "INSERT INTO public.users_teams (user_id, team_id) VALUES ('{user}', '{team}')"
        ));
    }

    /// What `pg_dump` (Debian's, beside the server) writes of the whole database, as an operator's
    /// backup holds it.
    pub fn dump(&self) -> String {
        let out = self.client("pg_dump").output().expect("running pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server at once (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("postgres.log")).unwrap();
        if as_root() {
            let _ = Command::new("chown")
                .arg("postgres:postgres")
                .arg(self.dir.path().join("postgres.log"))
                .status();
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = self
                .psql_command()
                .args(["-c", "SELECT 1"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn psql_file(&self, path: &Path) {
        let out = self
            .psql_command()
            .arg("-f")
            .arg(path)
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql -f {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn psql_command(&self) -> Command {
        let mut cmd = self.client("psql");
        cmd.args(["-v", "ON_ERROR_STOP=1", "-A", "-t", "-q"]);
        cmd
    }

    /// A client `program` (psql, pg_dump) of the server, as the superuser over its socket.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.arg("-h").arg(self.dir.path()).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ]);
        cmd
    }

    /// `program` from Postgres's bin directory, as the postgres user when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if as_root() {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                .arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's postgresql is installed (scripts/test installs it)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql")
        .1
}

fn rand_byte() -> u8 {
    rand::random()
}
