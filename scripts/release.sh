#!/usr/bin/env bash
# Builds the release tarball that the Nomad job's artifact block downloads:
#
#   <out>/e2b-webhook-emitter-<version>-x86_64-unknown-linux-gnu.tar.gz
#   <out>/e2b-webhook-emitter-<version>-x86_64-unknown-linux-gnu.tar.gz.sha256
#
# The binary is linked statically (glibc with crt-static; TLS is rustls, so
# there is no OpenSSL), so it runs on any x86_64 Linux Nomad client, whatever
# its distribution. It sits at the root of the archive, which Nomad unpacks
# into the task's local/ directory.
#
# Usage: scripts/release.sh [--out DIR] [--base-url URL]
#   --out DIR       where to write the files (default: dist/ in the repository)
#   --base-url URL  where the tarball will be uploaded; only used to print the
#                   complete artifact_url for terraform
set -euo pipefail

readonly NAME="e2b-webhook-emitter"
readonly TARGET="x86_64-unknown-linux-gnu"

usage() {
  sed -n 's/^# \{0,1\}//; 12,15p' "${BASH_SOURCE[0]}"
}

die() {
  echo "release.sh: $*" >&2
  exit 1
}

usage_error() {
  usage >&2
  echo "release.sh: $*" >&2
  exit 2
}

out_dir=""
base_url=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out)
      [[ $# -ge 2 && -n "$2" ]] || usage_error "--out needs a directory"
      out_dir="$2"
      shift 2
      ;;
    --out=*)
      out_dir="${1#*=}"
      shift
      ;;
    --base-url)
      [[ $# -ge 2 && -n "$2" ]] || usage_error "--base-url needs a URL"
      base_url="$2"
      shift 2
      ;;
    --base-url=*)
      base_url="${1#*=}"
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage_error "unknown argument: $1"
      ;;
  esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out_dir="${out_dir:-$repo_root/dist}"
mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
cd "$repo_root"

for tool in cargo tar gzip sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# The version of the [package] section of Cargo.toml.
version="$(awk -F'"' '
  /^\[/ { section = $0 }
  section == "[package]" && /^version[[:space:]]*=/ { print $2; exit }
' Cargo.toml)"
[[ -n "$version" ]] || die "could not read the package version from Cargo.toml"

target_dir="$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[[ -n "$target_dir" ]] || die "could not find cargo's target directory"

# Rewrite the paths rustc embeds (panic locations, generated code) so the
# binary does not depend on where the checkout, the cargo home and the
# target directory are: the same commit gives the same bytes in another
# directory. The last matching prefix wins, so the more specific target
# directory comes after the repository root. RUSTFLAGS is split on spaces,
# so these paths cannot contain whitespace.
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
for path in "$repo_root" "$cargo_home" "$target_dir"; do
  [[ "$path" != *[[:space:]]* ]] ||
    die "'$path' contains whitespace, which RUSTFLAGS cannot carry; build from a path without spaces"
done
remap="--remap-path-prefix=$cargo_home=/cargo"
remap+=" --remap-path-prefix=$repo_root=/$NAME"
remap+=" --remap-path-prefix=$target_dir=/$NAME/target"

# An explicit --target keeps crt-static away from build scripts and proc
# macros (which must stay dynamic host libraries) and puts the result in its
# own directory, so it does not disturb other builds in the same target dir.
echo "Building $NAME $version for $TARGET (static)..." >&2
RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static $remap" \
  cargo build --release --locked --target "$TARGET" --bin "$NAME"
binary="$target_dir/$TARGET/release/$NAME"
[[ -x "$binary" ]] || die "build produced no $binary"

# Refuse to ship a binary that needs the build machine's shared libraries.
if command -v file >/dev/null; then
  description="$(file -b "$binary")"
  if [[ "$description" == *"dynamically linked"* ]]; then
    die "$binary is dynamically linked: $description"
  fi
fi

stem="$NAME-$version-$TARGET"
tarball="$stem.tar.gz"
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
install -m 0755 "$binary" "$staging/$NAME"

# Fixed owner, order and (when known) timestamp, and no name or time in the
# gzip header, so that the same binary always gives the same checksum.
mtime_args=()
if [[ -n "${SOURCE_DATE_EPOCH:-}" ]]; then
  mtime_args=(--mtime="@$SOURCE_DATE_EPOCH")
elif commit_time="$(git log -1 --format=%ct 2>/dev/null)" && [[ -n "$commit_time" ]]; then
  mtime_args=(--mtime="@$commit_time")
fi
tar --create --file=- --directory="$staging" \
  --owner=0 --group=0 --numeric-owner --sort=name ${mtime_args[@]+"${mtime_args[@]}"} \
  "$NAME" | gzip -9 -n >"$out_dir/$tarball.tmp"
mv "$out_dir/$tarball.tmp" "$out_dir/$tarball"

(cd "$out_dir" && sha256sum "$tarball" >"$tarball.sha256")
sha256="$(cut -d' ' -f1 "$out_dir/$tarball.sha256")"

if [[ -n "$base_url" ]]; then
  artifact_url="${base_url%/}/$tarball"
else
  artifact_url="https://<where-you-upload-it>/$tarball"
fi

cat <<EOF

Built  $out_dir/$tarball
       $out_dir/$tarball.sha256

Upload the tarball (keep its .tar.gz name: Nomad unpacks archives by their
extension), then set in terraform.tfvars:

artifact_url      = "$artifact_url"
artifact_checksum = "sha256:$sha256"
EOF
