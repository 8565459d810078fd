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
# Usage: scripts/release.sh [--out DIR] [--base-url URL] [--docker]
#   --out DIR       where to write the files (default: dist/ in the repository)
#   --base-url URL  where the tarball will be uploaded; only used to print the
#                   complete artifact_url for terraform
#   --docker        build in Docker (scripts/release.Dockerfile, linux/amd64)
#                   instead of on this machine: works on macOS and on Linux
#                   with Docker (BuildKit) and needs no Rust toolchain here
#
# The --docker path runs on macOS too: bash 3.2 and BSD tools, so no
# associative arrays, no mapfile and no GNU-only flags there.
set -euo pipefail

readonly NAME="e2b-webhook-emitter"
readonly TARGET="x86_64-unknown-linux-gnu"

usage() {
  sed -n 's/^# \{0,1\}//; 12,18p' "${BASH_SOURCE[0]}"
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
docker=false
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
    --docker)
      docker=true
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

# The version of the [package] section of Cargo.toml.
version="$(awk -F'"' '
  /^\[/ { section = $0 }
  section == "[package]" && /^version[[:space:]]*=/ { print $2; exit }
' Cargo.toml)"
[[ -n "$version" ]] || die "could not read the package version from Cargo.toml"

stem="$NAME-$version-$TARGET"
tarball="$stem.tar.gz"

# Builds with cargo on this machine, which must be x86_64 Linux: the binary
# links the host's static glibc.
build_natively() {
  local host
  host="$(uname -s) $(uname -m)"
  [[ "$host" == "Linux x86_64" ]] ||
    die "a native build needs an x86_64 Linux host (this is $host); run scripts/release.sh --docker instead"

  local tool
  for tool in cargo tar gzip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is required"
  done

  local target_dir
  target_dir="$(cargo metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
  [[ -n "$target_dir" ]] || die "could not find cargo's target directory"

  # Rewrite the paths rustc embeds (panic locations, generated code) so the
  # binary does not depend on where the checkout, the cargo home and the
  # target directory are: the same commit gives the same bytes here and in
  # scripts/release.Dockerfile. The last matching prefix wins, so the more
  # specific target directory comes after the repository root. RUSTFLAGS is
  # split on spaces, so these paths cannot contain whitespace.
  local cargo_home="${CARGO_HOME:-$HOME/.cargo}" path
  for path in "$repo_root" "$cargo_home" "$target_dir"; do
    [[ "$path" != *[[:space:]]* ]] ||
      die "'$path' contains whitespace, which RUSTFLAGS cannot carry; build from a path without spaces or use --docker"
  done
  local remap="--remap-path-prefix=$cargo_home=/cargo"
  remap+=" --remap-path-prefix=$repo_root=/$NAME"
  remap+=" --remap-path-prefix=$target_dir=/$NAME/target"

  # An explicit --target keeps crt-static away from build scripts and proc
  # macros (which must stay dynamic host libraries) and puts the result in
  # its own directory, so it does not disturb other builds in the same
  # target dir.
  echo "Building $NAME $version for $TARGET (static)..." >&2
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static $remap" \
    cargo build --release --locked --target "$TARGET" --bin "$NAME"

  local binary="$target_dir/$TARGET/release/$NAME"
  [[ -x "$binary" ]] || die "build produced no $binary"

  # Refuse to ship a binary that needs the build machine's shared libraries.
  if command -v file >/dev/null; then
    local description
    description="$(file -b "$binary")"
    if [[ "$description" == *"dynamically linked"* ]]; then
      die "$binary is dynamically linked: $description"
    fi
  fi

  staging="$(mktemp -d)"
  trap 'rm -rf "$staging"' EXIT
  install -m 0755 "$binary" "$staging/$NAME"

  # Fixed owner, order and (when known) timestamp, and no name or time in the
  # gzip header, so that the same binary always gives the same checksum.
  local mtime_args=() commit_time
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
}

# Builds scripts/release.Dockerfile for linux/amd64, which runs this script's
# native build in a Rust image, and exports the tarball and its .sha256 into
# the output directory. Works from macOS (emulated amd64 on Apple silicon).
build_in_docker() {
  command -v docker >/dev/null ||
    die "--docker needs the docker CLI and an engine with BuildKit (Docker Desktop, or Docker Engine 23 or later)"

  # The container has no .git: pass the commit time, which fixes the
  # tarball's timestamps as on a native build of the same commit.
  local epoch="${SOURCE_DATE_EPOCH:-}"
  if [[ -z "$epoch" ]]; then
    epoch="$(git log -1 --format=%ct 2>/dev/null)" || epoch=""
  fi
  [[ -n "$epoch" ]] ||
    die "cannot read the commit time (is this a git checkout?); set SOURCE_DATE_EPOCH to the commit's Unix time"

  # docker reads --output as comma-separated key=value pairs.
  [[ "$out_dir" != *,* ]] || die "--out '$out_dir' contains a comma, which docker's --output cannot take; choose another directory"

  # Whatever is there from an earlier build must not pass for this one.
  rm -f "$out_dir/$tarball" "$out_dir/$tarball.sha256"

  echo "Building $NAME $version for $TARGET in Docker (scripts/release.Dockerfile)..." >&2
  # DOCKER_BUILDKIT=1: --output and RUN --mount need BuildKit, which older
  # engines (before 23.0) only use when asked.
  DOCKER_BUILDKIT=1 docker build \
    --platform linux/amd64 \
    --build-arg "SOURCE_DATE_EPOCH=$epoch" \
    -f scripts/release.Dockerfile \
    --output "type=local,dest=$out_dir" \
    . >&2 || die "docker build failed (see above); is Docker running?"

  [[ -f "$out_dir/$tarball" && -f "$out_dir/$tarball.sha256" ]] ||
    die "docker build wrote no $tarball and $tarball.sha256 to $out_dir"
  verify_checksum "$out_dir" "$tarball"
}

# Checks <dir>/<tarball> against <dir>/<tarball>.sha256, which must name
# exactly that file (sha256sum --check verifies whatever file a line names).
verify_checksum() {
  local dir="$1" file="$2" line hex_re='^[0-9a-f]{64} [ *]'
  line="$(cat "$dir/$file.sha256")"
  [[ "$line" =~ $hex_re && "${line:66}" == "$file" ]] ||
    die "$dir/$file.sha256 is not one sha256sum line for $file"
  # GNU coreutils, or macOS 14 and later; older macOS only has shasum.
  if command -v sha256sum >/dev/null; then
    (cd "$dir" && sha256sum --check --strict "$file.sha256") >&2 ||
      die "$dir/$file does not match $file.sha256: the build output is damaged; build again"
  elif command -v shasum >/dev/null; then
    (cd "$dir" && shasum -a 256 -c "$file.sha256") >&2 ||
      die "$dir/$file does not match $file.sha256: the build output is damaged; build again"
  else
    die "sha256sum or shasum is required to check the tarball"
  fi
}

if [[ "$docker" == true ]]; then
  build_in_docker
else
  build_natively
fi

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
