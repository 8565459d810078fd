//! Builds the release tarball with `scripts/release.sh` and checks what the
//! Nomad job will download: a tarball holding only the binary, at its root,
//! a checksum file that matches it, and a binary that runs and needs no
//! shared library from the build machine.
//!
//! This runs a real release build (several minutes the first time).

use std::path::Path;
use std::process::{Command, Output};

const NAME: &str = "e2b-webhook-emitter";
const TARGET: &str = "x86_64-unknown-linux-gnu";

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

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let version = env!("CARGO_PKG_VERSION");
    let out = tempfile::tempdir().expect("temporary directory");

    let release = run(Command::new(root.join("scripts/release.sh"))
        .arg("--out")
        .arg(out.path())
        .args(["--base-url", "https://downloads.example.com/emitter/"])
        .current_dir(root));
    let printed = stdout(&release);

    let tarball_name = format!("{NAME}-{version}-{TARGET}.tar.gz");
    let tarball = out.path().join(&tarball_name);
    let checksum_file = out.path().join(format!("{tarball_name}.sha256"));
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
        .current_dir(out.path())));
    let written = std::fs::read_to_string(&checksum_file).unwrap();
    assert_eq!(written, expected);
    run(Command::new("sha256sum")
        .args(["--check", "--strict"])
        .arg(checksum_file.file_name().unwrap())
        .current_dir(out.path()));
    let hex = expected.split_whitespace().next().unwrap();
    assert_eq!(hex.len(), 64);

    // The script prints the terraform settings to use.
    assert!(
        printed.contains(&format!("artifact_checksum = \"sha256:{hex}\"")),
        "artifact_checksum not printed:\n{printed}"
    );
    assert!(
        printed.contains(&format!(
            "artifact_url      = \"https://downloads.example.com/emitter/{tarball_name}\""
        )),
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
}
