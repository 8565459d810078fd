//! The release pipeline: `scripts/release.sh` builds the tarball the Nomad
//! job downloads (natively, or in Docker with `--docker`), and
//! `scripts/upload-artifact.sh` puts it in a bucket.
//!
//! The native build is real, and runs once for the whole test binary (several
//! minutes the first time): the tarball holds only the binary, at its root,
//! the checksum file matches it, and the binary runs, needs no shared library
//! from the build machine and does not embed where it was built. Docker,
//! gcloud and aws are stand-ins (shell scripts first on PATH) that record how
//! they were called: nothing is built in a container or uploaded here.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

const NAME: &str = "e2b-webhook-emitter";
const TARGET: &str = "x86_64-unknown-linux-gnu";
const BASE_URL: &str = "https://downloads.example.com/emitter/";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The name release.sh gives the tarball of this version.
fn tarball_name() -> String {
    format!("{NAME}-{}-{TARGET}.tar.gz", env!("CARGO_PKG_VERSION"))
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs a command that is expected to fail; returns its output.
fn run_failing(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        !output.status.success(),
        "{command:?} succeeded but should not have:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hex::encode(Sha256::digest(bytes))
}

/// The commit time release.sh passes to Docker as SOURCE_DATE_EPOCH.
fn commit_time() -> String {
    let output = run(Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root()));
    stdout(&output).trim().to_owned()
}

/// Where `tool` is on the PATH this test runs with.
fn which(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{tool} is not on PATH"))
}

/// Quotes a string for a POSIX shell script.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn sh_path(path: &Path) -> String {
    sh_quote(path.to_str().expect("UTF-8 path"))
}

/// The one real release build of this test binary, shared by the tests that
/// need a real tarball: a static build with fat LTO takes minutes.
struct NativeRelease {
    out: PathBuf,
    /// What release.sh printed (with --base-url BASE_URL).
    printed: String,
}

impl NativeRelease {
    fn tarball(&self) -> PathBuf {
        self.out.join(tarball_name())
    }

    fn checksum_file(&self) -> PathBuf {
        self.out.join(format!("{}.sha256", tarball_name()))
    }
}

/// Builds once; a failure is kept (not retried by every test that waits).
fn native_release() -> &'static NativeRelease {
    static RELEASE: OnceLock<Result<NativeRelease, String>> = OnceLock::new();
    let release = RELEASE.get_or_init(|| {
        // Not a TempDir: a static is never dropped. The next run clears it.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("release_artifact_native");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
        let mut command = Command::new(root().join("scripts/release.sh"));
        command
            .arg("--out")
            .arg(&out)
            .args(["--base-url", BASE_URL])
            .current_dir(root());
        let output = command
            .output()
            .map_err(|e| format!("running {command:?}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{command:?} failed ({}):\n{}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(NativeRelease {
            out,
            printed: stdout(&output),
        })
    });
    release
        .as_ref()
        .unwrap_or_else(|e| panic!("the native release build failed: {e}"))
}

/// A small stand-in for a release: `<dir>/<tarball>` (a gzip'd tar holding a
/// file named like the binary) and a matching `<tarball>.sha256`, as
/// sha256sum writes it. For the tests where the content does not matter.
fn fake_release(dir: &Path) -> (PathBuf, String) {
    let staging = tempfile::tempdir().expect("temporary directory");
    std::fs::write(staging.path().join(NAME), b"#!/bin/sh\necho stand-in\n").unwrap();
    let tarball = dir.join(tarball_name());
    run(Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(staging.path())
        .arg(NAME));
    let hex = sha256_hex(&tarball);
    std::fs::write(
        dir.join(format!("{}.sha256", tarball_name())),
        format!("{hex}  {}\n", tarball_name()),
    )
    .unwrap();
    (tarball, hex)
}

/// Stand-in executables in a temporary directory put first on PATH. Each
/// records its argv (NUL-separated), its environment and its working
/// directory under `records/`, then runs the body it was given.
struct StandIns {
    dir: tempfile::TempDir,
}

impl StandIns {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::create_dir(dir.path().join("records")).unwrap();
        StandIns { dir }
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn record_path(&self, name: &str, what: &str) -> PathBuf {
        self.dir
            .path()
            .join("records")
            .join(format!("{name}.{what}"))
    }

    /// Writes the stand-in `name`, which records how it was called and then
    /// runs `body` (sh). Tools are called by absolute path, so a stand-in
    /// also works on a PATH made only of stand-ins and links.
    fn add(&self, name: &str, body: &str) -> &Self {
        let script = format!(
            "#!/bin/sh\n\
             printf '%s\\0' \"$@\" >{argv}\n\
             {env} >{environment}\n\
             pwd >{cwd}\n\
             {body}\n",
            argv = sh_path(&self.record_path(name, "argv")),
            env = sh_path(&which("env")),
            environment = sh_path(&self.record_path(name, "env")),
            cwd = sh_path(&self.record_path(name, "cwd")),
        );
        let path = self.bin().join(name);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Links the real `tools` in, for a PATH that holds nothing else (to
    /// leave a tool out, as on a machine without it).
    fn link(&self, tools: &[&str]) -> &Self {
        for tool in tools {
            std::os::unix::fs::symlink(which(tool), self.bin().join(tool)).unwrap();
        }
        self
    }

    /// The stand-ins first, then this process's PATH.
    fn path(&self) -> OsString {
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.bin()];
        dirs.extend(std::env::split_paths(&inherited));
        std::env::join_paths(dirs).unwrap()
    }

    /// The stand-ins and linked tools only.
    fn isolated_path(&self) -> OsString {
        self.bin().into_os_string()
    }

    /// The argv `name` was called with, if it was called.
    fn argv(&self, name: &str) -> Option<Vec<String>> {
        let recorded = std::fs::read_to_string(self.record_path(name, "argv")).ok()?;
        Some(
            recorded
                .strip_suffix('\0')
                .map(|args| args.split('\0').map(str::to_owned).collect())
                .unwrap_or_default(),
        )
    }

    fn record(&self, name: &str, what: &str) -> String {
        std::fs::read_to_string(self.record_path(name, what))
            .unwrap_or_else(|e| panic!("{name} recorded no {what}: {e}"))
    }
}

fn read_u16(bytes: &[u8], at: usize) -> u64 {
    u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap()).into()
}

fn read_u32(bytes: &[u8], at: usize) -> u64 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()).into()
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Reads the ELF64 program headers: whether the binary asks for a dynamic
/// loader (PT_INTERP) and how many shared libraries it needs (DT_NEEDED).
/// A static-pie binary has a dynamic section (to relocate itself) but
/// neither of these.
fn elf_dynamic_needs(path: &Path) -> (bool, usize) {
    const PT_DYNAMIC: u64 = 2;
    const PT_INTERP: u64 = 3;
    const DT_NULL: u64 = 0;
    const DT_NEEDED: u64 = 1;

    let elf = std::fs::read(path).expect("reading the binary");
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    assert_eq!(elf[5], 1, "not little-endian");
    assert_eq!(read_u16(&elf, 0x12), 0x3e, "not x86-64");

    let phoff = read_u64(&elf, 0x20) as usize;
    let phentsize = read_u16(&elf, 0x36) as usize;
    let phnum = read_u16(&elf, 0x38) as usize;
    let mut interp = false;
    let mut needed = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match read_u32(&elf, ph) {
            PT_INTERP => interp = true,
            PT_DYNAMIC => {
                let offset = read_u64(&elf, ph + 0x08) as usize;
                let size = read_u64(&elf, ph + 0x20) as usize;
                for entry in (offset..offset + size).step_by(16) {
                    match read_u64(&elf, entry) {
                        DT_NULL => break,
                        DT_NEEDED => needed += 1,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (interp, needed)
}

#[test]
fn release_script_builds_a_static_tarball_with_its_checksum() {
    let release = native_release();
    let version = env!("CARGO_PKG_VERSION");
    let printed = &release.printed;

    let tarball_name = tarball_name();
    let tarball = release.tarball();
    let checksum_file = release.checksum_file();
    assert!(tarball.is_file(), "{} was not written", tarball.display());
    assert!(
        checksum_file.is_file(),
        "{} was not written",
        checksum_file.display()
    );

    // The archive holds the binary, at its root, and nothing else: Nomad
    // unpacks it into local/ and runs local/e2b-webhook-emitter.
    let listing = stdout(&run(Command::new("tar").arg("-tzf").arg(&tarball)));
    assert_eq!(listing.lines().collect::<Vec<_>>(), [NAME]);
    let verbose = stdout(&run(Command::new("tar").arg("-tvzf").arg(&tarball)));
    assert!(
        verbose.starts_with("-rwxr-xr-x") && verbose.contains("0/0"),
        "expected an executable owned by uid/gid 0: {verbose}"
    );

    // The checksum file is what sha256sum prints, and it verifies.
    let expected = stdout(&run(Command::new("sha256sum")
        .arg(&tarball_name)
        .current_dir(&release.out)));
    let written = std::fs::read_to_string(&checksum_file).unwrap();
    assert_eq!(written, expected);
    run(Command::new("sha256sum")
        .args(["--check", "--strict"])
        .arg(checksum_file.file_name().unwrap())
        .current_dir(&release.out));
    let hex = expected.split_whitespace().next().unwrap();
    assert_eq!(hex.len(), 64);

    // The script prints the terraform settings to use.
    assert!(
        printed.contains(&format!("artifact_checksum = \"sha256:{hex}\"")),
        "artifact_checksum not printed:\n{printed}"
    );
    assert!(
        printed.contains(&format!("artifact_url      = \"{BASE_URL}{tarball_name}\"")),
        "artifact_url not printed:\n{printed}"
    );

    // The binary inside runs and reports this version.
    let unpacked = tempfile::tempdir().expect("temporary directory");
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(unpacked.path()));
    let binary = unpacked.path().join(NAME);
    let version_output = stdout(&run(Command::new(&binary).arg("--version").env_clear()));
    assert!(
        version_output.contains(NAME) && version_output.contains(version),
        "unexpected --version output: {version_output}"
    );

    // Statically linked: no dynamic loader, no shared library. The ELF
    // headers are the proof; `file` (not on every machine) and `ldd` agree.
    match Command::new("file").arg("-b").arg(&binary).output() {
        Ok(output) if output.status.success() => {
            let description = stdout(&output);
            assert!(
                description.contains("statically linked")
                    || description.contains("static-pie linked"),
                "`file` says: {description}"
            );
        }
        _ => eprintln!("`file` is not available; relying on the ELF headers"),
    }
    let (interp, needed) = elf_dynamic_needs(&binary);
    assert!(!interp, "the binary asks for a dynamic loader (PT_INTERP)");
    assert_eq!(needed, 0, "the binary needs {needed} shared libraries");
    let ldd = Command::new("ldd")
        .arg(&binary)
        .output()
        .expect("running ldd");
    let ldd = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    assert!(!ldd.contains("=>"), "ldd lists shared libraries:\n{ldd}");

    // Built with --remap-path-prefix: no trace of the checkout, the cargo
    // home or the target directory, so that another directory (or the
    // Docker build) gives the same bytes.
    let elf = std::fs::read(&binary).unwrap();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".cargo"));
    let metadata = stdout(&run(Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())));
    let target_dir: serde_json::Value = serde_json::from_str(&metadata).unwrap();
    let target_dir = target_dir["target_directory"].as_str().unwrap();
    for (what, path) in [
        ("the checkout", root().to_str().unwrap()),
        ("the cargo home", cargo_home.to_str().unwrap()),
        ("the target directory", target_dir),
    ] {
        assert!(
            !elf.windows(path.len())
                .any(|window| window == path.as_bytes()),
            "the binary embeds {what}, {path}"
        );
    }
    // What the paths became instead (the generated gRPC code, a dependency).
    for remapped in [
        format!("/{NAME}/target/{TARGET}/release/build/"),
        "/cargo/registry/src/".to_owned(),
    ] {
        assert!(
            elf.windows(remapped.len())
                .any(|w| w == remapped.as_bytes()),
            "the binary has no path under {remapped}"
        );
    }
}

// --- release.sh --docker ----------------------------------------------------

/// A `docker` stand-in that copies the files of `fixture` into the directory
/// named by `--output type=local,dest=DIR`, as the Dockerfile's scratch stage
/// would be exported; and a `cargo` that fails, since --docker must not build
/// here.
fn docker_stand_ins(fixture: &Path) -> StandIns {
    let stand_ins = StandIns::new();
    stand_ins.add(
        "docker",
        &format!(
            r#"dest=
previous=
for arg in "$@"; do
  if [ "$previous" = --output ]; then dest="${{arg#type=local,dest=}}"; fi
  previous="$arg"
done
[ -d "$dest" ] || {{ echo "docker stand-in: no --output type=local,dest=DIR" >&2; exit 1; }}
for file in {fixture}/*; do
  [ -e "$file" ] || continue
  {cp} "$file" "$dest/"
done
echo "docker stand-in: exported" >&2"#,
            fixture = sh_path(fixture),
            cp = sh_path(&which("cp")),
        ),
    );
    stand_ins.add(
        "cargo",
        "echo 'cargo stand-in: release.sh --docker ran cargo' >&2; exit 99",
    );
    stand_ins
}

/// Runs `release.sh --docker --out OUT --base-url BASE_URL` from another
/// directory than the repository, with the given PATH.
fn release_in_docker(out: &Path, path: OsString, source_date_epoch: Option<&str>) -> Command {
    let mut command = Command::new(root().join("scripts/release.sh"));
    command
        .arg("--docker")
        .arg("--out")
        .arg(out)
        .args(["--base-url", BASE_URL])
        .current_dir(std::env::temp_dir())
        .env("PATH", path)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("DOCKER_BUILDKIT");
    if let Some(epoch) = source_date_epoch {
        command.env("SOURCE_DATE_EPOCH", epoch);
    }
    command
}

fn expected_docker_argv(out: &Path, epoch: &str) -> Vec<String> {
    [
        "build",
        "--platform",
        "linux/amd64",
        "--build-arg",
        &format!("SOURCE_DATE_EPOCH={epoch}"),
        "-f",
        "scripts/release.Dockerfile",
        "--output",
        &format!("type=local,dest={}", out.display()),
        ".",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// One docker build, for amd64, of the release Dockerfile, with BuildKit and
/// the given time, exported into `out`, from the repository root.
fn assert_docker_built(stand_ins: &StandIns, out: &Path, epoch: &str) {
    assert_eq!(
        stand_ins.argv("docker").expect("docker was not run"),
        expected_docker_argv(out, epoch)
    );
    assert_eq!(
        Path::new(stand_ins.record("docker", "cwd").trim()),
        root().canonicalize().unwrap()
    );
    assert!(
        stand_ins
            .record("docker", "env")
            .lines()
            .any(|line| line == "DOCKER_BUILDKIT=1"),
        "docker ran without DOCKER_BUILDKIT=1"
    );
    assert_eq!(stand_ins.argv("cargo"), None, "--docker ran cargo");
}

#[test]
fn release_script_builds_in_docker_and_prints_the_native_summary() {
    let release = native_release();
    let fixture = tempfile::tempdir().expect("temporary directory");
    for file in [release.tarball(), release.checksum_file()] {
        std::fs::copy(&file, fixture.path().join(file.file_name().unwrap())).unwrap();
    }
    let stand_ins = docker_stand_ins(fixture.path());
    let out = tempfile::tempdir().expect("temporary directory");

    let output = run(&mut release_in_docker(out.path(), stand_ins.path(), None));

    // The commit's time, as a native build of this commit uses.
    assert_docker_built(&stand_ins, out.path(), &commit_time());

    // What docker exported is kept as is, and the summary is the native
    // one, byte for byte, but for the output directory. Docker's own output
    // went to stderr.
    let tarball = out.path().join(tarball_name());
    assert_eq!(
        std::fs::read(&tarball).unwrap(),
        std::fs::read(release.tarball()).unwrap()
    );
    let printed = stdout(&output);
    assert_eq!(
        printed,
        release
            .printed
            .replace(release.out.to_str().unwrap(), out.path().to_str().unwrap())
    );
    assert!(
        printed.contains(&format!(
            "artifact_checksum = \"sha256:{}\"",
            sha256_hex(&tarball)
        )),
        "artifact_checksum not printed:\n{printed}"
    );
    assert!(stderr(&output).contains("docker stand-in: exported"));
}

#[test]
fn release_script_in_docker_takes_source_date_epoch_and_checks_with_shasum() {
    // A PATH without sha256sum (as on macOS before 14): the check falls back
    // to shasum. SOURCE_DATE_EPOCH, when set, is the build-arg.
    let fixture = tempfile::tempdir().expect("temporary directory");
    let (_, hex) = fake_release(fixture.path());
    let stand_ins = docker_stand_ins(fixture.path());
    stand_ins.link(&[
        "bash", "dirname", "mkdir", "awk", "rm", "cat", "cut", "shasum",
    ]);
    let out = tempfile::tempdir().expect("temporary directory");

    let output = run(&mut release_in_docker(
        out.path(),
        stand_ins.isolated_path(),
        Some("1700000000"),
    ));

    assert_docker_built(&stand_ins, out.path(), "1700000000");
    let printed = stdout(&output);
    assert!(
        printed.contains(&format!("artifact_checksum = \"sha256:{hex}\"")),
        "artifact_checksum not printed:\n{printed}"
    );
    assert!(
        stderr(&output).contains(&format!("{}: OK", tarball_name())),
        "shasum did not check the tarball:\n{}",
        stderr(&output)
    );
}

#[test]
fn release_script_in_docker_refuses_what_does_not_match_its_checksum() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 3] = [
        (
            "a corrupted tarball",
            |fixture| {
                let tarball = fixture.join(tarball_name());
                let mut bytes = std::fs::read(&tarball).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 0xff;
                std::fs::write(&tarball, bytes).unwrap();
            },
            "does not match",
        ),
        (
            "a checksum of another file",
            |fixture| {
                let checksum_file = fixture.join(format!("{}.sha256", tarball_name()));
                let line = std::fs::read_to_string(&checksum_file).unwrap();
                let other = line.replace(&tarball_name(), "other.tar.gz");
                std::fs::write(&checksum_file, other).unwrap();
            },
            "is not one sha256sum line",
        ),
        (
            "no tarball",
            |fixture| std::fs::remove_file(fixture.join(tarball_name())).unwrap(),
            "wrote no",
        ),
    ];
    for (case, damage, message) in cases {
        let fixture = tempfile::tempdir().expect("temporary directory");
        fake_release(fixture.path());
        damage(fixture.path());
        let stand_ins = docker_stand_ins(fixture.path());
        // A good tarball from an earlier build must not pass for this one.
        let out = tempfile::tempdir().expect("temporary directory");
        fake_release(out.path());

        let output = run_failing(&mut release_in_docker(out.path(), stand_ins.path(), None));

        assert!(
            stand_ins.argv("docker").is_some(),
            "{case}: docker was not run"
        );
        let errors = stderr(&output);
        assert!(
            errors.contains("release.sh: ") && errors.contains(message),
            "{case}: expected \"{message}\" in:\n{errors}"
        );
        assert!(
            !stdout(&output).contains("artifact_checksum"),
            "{case}: a summary was printed:\n{}",
            stdout(&output)
        );
    }
}

#[test]
fn release_script_refuses_a_native_build_off_x86_64_linux() {
    let stand_ins = StandIns::new();
    stand_ins.add(
        "uname",
        r#"case "$1" in -m) echo arm64 ;; *) echo Darwin ;; esac"#,
    );
    stand_ins.add("cargo", "exit 99");
    let out = tempfile::tempdir().expect("temporary directory");

    let output = run_failing(
        Command::new(root().join("scripts/release.sh"))
            .arg("--out")
            .arg(out.path())
            .env("PATH", stand_ins.path()),
    );

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "release.sh: a native build needs an x86_64 Linux host (this is Darwin arm64); \
         run scripts/release.sh --docker instead\n"
    );
    assert_eq!(stand_ins.argv("cargo"), None);
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

// --- upload-artifact.sh -----------------------------------------------------

/// `gcloud` and `aws` stand-ins that only record their argv.
fn cloud_stand_ins() -> StandIns {
    let stand_ins = StandIns::new();
    stand_ins.add("gcloud", "exit 0");
    stand_ins.add("aws", "exit 0");
    stand_ins
}

fn upload(path: OsString, args: &[&str]) -> Command {
    let mut command = Command::new(root().join("scripts/upload-artifact.sh"));
    command.args(args).env("PATH", path);
    command
}

#[test]
fn upload_script_copies_the_tarball_to_gcs_with_its_checksum() {
    let dist = tempfile::tempdir().expect("temporary directory");
    let (tarball, hex) = fake_release(dist.path());
    let tarball = tarball.to_str().unwrap();
    let stand_ins = cloud_stand_ins();

    let output = run(&mut upload(
        stand_ins.path(),
        &[tarball, "gs://my-project-fc-env-pipeline"],
    ));

    let url = "gs://my-project-fc-env-pipeline/e2b-webhook-emitter.tar.gz";
    assert_eq!(
        stand_ins.argv("gcloud").expect("gcloud was not run"),
        [
            "storage",
            "cp",
            "--cache-control=no-cache, max-age=0",
            &format!("--custom-metadata=sha256={hex}"),
            tarball,
            url,
        ]
    );
    assert_eq!(stand_ins.argv("aws"), None);
    let printed = stdout(&output);
    for expected in [
        format!(
            "gcloud storage objects describe {url} --format='value(generation,custom_fields.sha256)'"
        ),
        "artifact_url      = \"gcs::https://www.googleapis.com/storage/v1/my-project-fc-env-pipeline/e2b-webhook-emitter.tar.gz?version=<generation>\"".to_owned(),
        format!("artifact_checksum = \"sha256:{hex}\""),
    ] {
        assert!(printed.contains(&expected), "not printed: {expected}\n{printed}");
    }
}

#[test]
fn upload_script_copies_the_tarball_to_s3_with_its_checksum() {
    let dist = tempfile::tempdir().expect("temporary directory");
    let (tarball, hex) = fake_release(dist.path());
    let tarball = tarball.to_str().unwrap();
    let bucket = "e2b-123456789012-fc-env-pipeline";

    // Default object, no profile.
    let stand_ins = cloud_stand_ins();
    run(&mut upload(
        stand_ins.path(),
        &[tarball, &format!("s3://{bucket}/")],
    ));
    assert_eq!(
        stand_ins.argv("aws").expect("aws was not run"),
        [
            "s3",
            "cp",
            tarball,
            &format!("s3://{bucket}/e2b-webhook-emitter.tar.gz"),
            "--cache-control",
            "no-cache, max-age=0",
            "--metadata",
            &format!("sha256={hex}"),
        ]
    );
    assert_eq!(stand_ins.argv("gcloud"), None);

    // Another object name and a profile.
    let stand_ins = cloud_stand_ins();
    let output = run(&mut upload(
        stand_ins.path(),
        &[
            "--object",
            "releases/e2b-webhook-emitter-0.1.0.tar.gz",
            "--profile",
            "prod",
            tarball,
            &format!("s3://{bucket}"),
        ],
    ));
    assert_eq!(
        stand_ins.argv("aws").expect("aws was not run"),
        [
            "s3",
            "cp",
            tarball,
            &format!("s3://{bucket}/releases/e2b-webhook-emitter-0.1.0.tar.gz"),
            "--cache-control",
            "no-cache, max-age=0",
            "--metadata",
            &format!("sha256={hex}"),
            "--profile",
            "prod",
        ]
    );
    let printed = stdout(&output);
    for expected in [
        format!(
            "aws s3api head-object --bucket {bucket} --key releases/e2b-webhook-emitter-0.1.0.tar.gz --profile prod --query '[ETag,Metadata.sha256]' --output text"
        ),
        format!(
            "artifact_url      = \"s3::https://{bucket}.s3.<region>.amazonaws.com/releases/e2b-webhook-emitter-0.1.0.tar.gz?etag=<etag>\""
        ),
        format!("artifact_checksum = \"sha256:{hex}\""),
    ] {
        assert!(
            printed.contains(&expected),
            "not printed: {expected}\n{printed}"
        );
    }
}

#[test]
fn upload_script_refuses_a_tarball_that_does_not_match_its_checksum() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 3] = [
        (
            "a changed tarball",
            |dist| {
                let tarball = dist.join(tarball_name());
                let mut bytes = std::fs::read(&tarball).unwrap();
                bytes.push(0);
                std::fs::write(&tarball, bytes).unwrap();
            },
            "does not match",
        ),
        (
            "no checksum file",
            |dist| std::fs::remove_file(dist.join(format!("{}.sha256", tarball_name()))).unwrap(),
            ".sha256 is missing",
        ),
        (
            "the checksum of another file",
            |dist| {
                let checksum_file = dist.join(format!("{}.sha256", tarball_name()));
                let line = std::fs::read_to_string(&checksum_file).unwrap();
                std::fs::write(&checksum_file, line.replace(&tarball_name(), "x.tar.gz")).unwrap();
            },
            "is not one sha256sum line",
        ),
    ];
    for (case, damage, message) in cases {
        let dist = tempfile::tempdir().expect("temporary directory");
        let (tarball, _) = fake_release(dist.path());
        damage(dist.path());
        for destination in ["gs://bucket", "s3://bucket"] {
            let stand_ins = cloud_stand_ins();
            let output = run_failing(&mut upload(
                stand_ins.path(),
                &[tarball.to_str().unwrap(), destination],
            ));
            assert_eq!(output.status.code(), Some(1), "{case}, {destination}");
            let errors = stderr(&output);
            assert!(
                errors.contains("upload-artifact.sh: ") && errors.contains(message),
                "{case}, {destination}: expected \"{message}\" in:\n{errors}"
            );
            assert_eq!(stand_ins.argv("gcloud"), None, "{case}: gcloud ran");
            assert_eq!(stand_ins.argv("aws"), None, "{case}: aws ran");
        }
    }
}

#[test]
fn upload_script_refuses_bad_usage_in_one_line() {
    let dist = tempfile::tempdir().expect("temporary directory");
    let (tarball, _) = fake_release(dist.path());
    let tarball = tarball.to_str().unwrap();
    let cases: [(&[&str], &str); 10] = [
        (&[], "TARBALL and DESTINATION are required"),
        (&[tarball], "TARBALL and DESTINATION are required"),
        (
            &[tarball, "https://storage.example.com/bucket"],
            "DESTINATION must be gs://BUCKET or s3://BUCKET",
        ),
        (
            &[tarball, "bucket"],
            "DESTINATION must be gs://BUCKET or s3://BUCKET",
        ),
        (
            &[tarball, "gs://bucket/releases/e2b.tar.gz"],
            "name the object with --object",
        ),
        (
            &[
                "--object",
                "e2b-webhook-emitter.zip",
                tarball,
                "gs://bucket",
            ],
            "must end in .tar.gz",
        ),
        (
            &[
                "--object",
                "e2b-webhook-emitter.tgz",
                tarball,
                "s3://bucket",
            ],
            "must end in .tar.gz",
        ),
        (
            &["--object", "e2b-webhook-emitter.gz", tarball, "s3://bucket"],
            "must end in .tar.gz",
        ),
        (
            &["--object", "${release}.tar.gz", tarball, "s3://bucket"],
            "may only hold letters, digits",
        ),
        (
            &["--profile", "prod", tarball, "gs://bucket"],
            "--profile is for s3:// destinations",
        ),
    ];
    for (args, message) in cases {
        let stand_ins = cloud_stand_ins();
        let output = run_failing(&mut upload(stand_ins.path(), args));
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let errors = stderr(&output);
        assert!(
            errors.starts_with("upload-artifact.sh: ")
                && errors.contains(message)
                && errors.contains("(usage: scripts/upload-artifact.sh ")
                && errors.lines().count() == 1,
            "{args:?}: expected one line with \"{message}\", got:\n{errors}"
        );
        assert_eq!(stand_ins.argv("gcloud"), None, "{args:?}: gcloud ran");
        assert_eq!(stand_ins.argv("aws"), None, "{args:?}: aws ran");
    }
}

#[test]
fn upload_script_names_the_missing_cloud_cli_and_checks_with_shasum() {
    let dist = tempfile::tempdir().expect("temporary directory");
    let (tarball, hex) = fake_release(dist.path());
    let tarball = tarball.to_str().unwrap();
    // Only what the script needs from a Mac: no sha256sum, no gcloud, no aws.
    const TOOLS: [&str; 4] = ["bash", "dirname", "basename", "cat"];

    for (destination, tool) in [("gs://bucket", "gcloud"), ("s3://bucket", "aws")] {
        let stand_ins = StandIns::new();
        stand_ins.link(&TOOLS).link(&["shasum"]);
        let output = run_failing(&mut upload(
            stand_ins.isolated_path(),
            &[tarball, destination],
        ));
        assert_eq!(output.status.code(), Some(1), "{destination}");
        let errors = stderr(&output);
        assert!(
            errors.contains(&format!("upload-artifact.sh: {tool} is required")),
            "{destination}: the missing {tool} is not named:\n{errors}"
        );
        // shasum checked the tarball before the CLI was looked for.
        assert!(
            errors.contains(&format!("{}: OK", tarball_name())),
            "{destination}: not checked with shasum:\n{errors}"
        );
    }

    // The same PATH with a gcloud: the upload goes ahead.
    let stand_ins = cloud_stand_ins();
    stand_ins.link(&TOOLS).link(&["shasum"]);
    run(&mut upload(
        stand_ins.isolated_path(),
        &[tarball, "gs://bucket"],
    ));
    assert_eq!(
        stand_ins.argv("gcloud").expect("gcloud was not run")[3],
        format!("--custom-metadata=sha256={hex}")
    );

    // Neither sha256sum nor shasum: nothing can check the tarball.
    let stand_ins = cloud_stand_ins();
    stand_ins.link(&TOOLS);
    let output = run_failing(&mut upload(
        stand_ins.isolated_path(),
        &[tarball, "gs://bucket"],
    ));
    assert!(
        stderr(&output).contains("sha256sum or shasum is required"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stand_ins.argv("gcloud"), None);
}

// --- scripts/release.Dockerfile ----------------------------------------------

/// The Dockerfile's instructions: comment lines dropped, continuation lines
/// joined, as (KEYWORD, arguments).
fn dockerfile_instructions(text: &str) -> Vec<(String, String)> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            pending.push_str(continued.trim());
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let instruction = std::mem::take(&mut pending);
        let (keyword, arguments) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((&instruction, ""));
        instructions.push((keyword.to_uppercase(), arguments.trim().to_owned()));
    }
    assert!(pending.is_empty(), "the Dockerfile ends in a continuation");
    instructions
}

#[test]
fn release_dockerfile_runs_release_sh_and_exports_only_the_tarball() {
    let text = std::fs::read_to_string(root().join("scripts/release.Dockerfile")).unwrap();
    let instructions = dockerfile_instructions(&text);
    // Split into the global part (before the first FROM) and the stages.
    let mut stages: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for instruction in instructions {
        if instruction.0 == "FROM" {
            stages.push(Vec::new());
        }
        stages.last_mut().unwrap().push(instruction);
    }
    let global = &stages[0];
    let (builder, last) = (&stages[1], stages.last().unwrap());
    assert_eq!(stages.len(), 3, "expected a builder and a final stage");

    // The Rust image is pinned by a global ARG, at least the crate's MSRV.
    let rust_version = global
        .iter()
        .find_map(|(keyword, args)| {
            (keyword == "ARG")
                .then(|| args.strip_prefix("RUST_VERSION="))
                .flatten()
        })
        .expect("no ARG RUST_VERSION=... before the first FROM");
    let parse = |version: &str| -> Vec<u32> {
        version
            .split('.')
            .map(|part| part.parse().expect("a numeric Rust version"))
            .collect()
    };
    assert!(
        parse(rust_version) >= parse(env!("CARGO_PKG_RUST_VERSION")),
        "RUST_VERSION {rust_version} is older than the crate's rust-version"
    );
    assert_eq!(
        builder[0].1, "rust:${RUST_VERSION}-bookworm AS builder",
        "the builder is not the pinned Rust image"
    );

    // The builder refuses anything but amd64.
    let has = |stage: &[(String, String)], keyword: &str, needle: &str| {
        stage
            .iter()
            .position(|(k, args)| k == keyword && args.contains(needle))
    };
    assert!(has(builder, "ARG", "TARGETARCH").is_some());
    let refusal = has(builder, "RUN", "$TARGETARCH").expect("no RUN checks $TARGETARCH");
    assert!(
        builder[refusal].1.contains("amd64") && builder[refusal].1.contains("exit 1"),
        "the platform check does not refuse: {}",
        builder[refusal].1
    );

    // It runs release.sh into /out, with SOURCE_DATE_EPOCH declared before
    // and cache mounts for the registry and the target directory.
    let epoch = has(builder, "ARG", "SOURCE_DATE_EPOCH").expect("no ARG SOURCE_DATE_EPOCH");
    let build = has(builder, "RUN", "scripts/release.sh --out /out")
        .expect("the builder does not run scripts/release.sh --out /out");
    assert!(epoch < build, "ARG SOURCE_DATE_EPOCH comes after the build");
    for mount in [
        "--mount=type=cache,id=e2b-webhook-emitter-cargo-registry,target=/usr/local/cargo/registry",
        "target=/build/target",
    ] {
        assert!(
            builder[build].1.contains(mount),
            "no {mount} in: {}",
            builder[build].1
        );
    }
    assert!(
        has(builder, "COPY", ". .").is_some(),
        "the sources are not copied"
    );

    // The final stage is empty but for the tarball and its checksum.
    assert_eq!(last[0], ("FROM".to_owned(), "scratch".to_owned()));
    assert!(last.len() > 1, "the final stage copies nothing");
    for (keyword, args) in &last[1..] {
        assert_eq!(keyword, "COPY", "the final stage runs {keyword} {args}");
        let words: Vec<&str> = args.split_whitespace().collect();
        let (destination, sources) = words.split_last().unwrap();
        assert_eq!(sources[0], "--from=builder");
        assert_eq!(*destination, "/");
        for source in &sources[1..] {
            assert!(
                source.starts_with("/out/")
                    && (source.ends_with("*.tar.gz") || source.ends_with("*.sha256")),
                "the final stage copies {source}"
            );
        }
    }

    // The build context leaves out build output, git and node packages.
    let ignored = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignored
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.trim_end_matches('/'))
        .collect();
    for path in ["target", "dist", ".git", "tests/browser/node_modules"] {
        assert!(
            ignored.contains(&path),
            ".dockerignore does not exclude {path}"
        );
    }
}
