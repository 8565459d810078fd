#!/usr/bin/env bash
# Uploads a release tarball built by scripts/release.sh to the bucket the
# Nomad clients download it from (E2B keeps its orchestrator binary in
# <prefix>fc-env-pipeline), after checking it against the .sha256 beside it.
#
# Usage: scripts/upload-artifact.sh [--object NAME] [--profile PROFILE] TARBALL DESTINATION
#   TARBALL         the .tar.gz written by scripts/release.sh; TARBALL.sha256
#                   must be beside it
#   DESTINATION     gs://BUCKET (uploads with gcloud) or s3://BUCKET (aws)
#   --object NAME   object name in the bucket, ending in .tar.gz
#                   (default: e2b-webhook-emitter.tar.gz)
#   --profile P     the aws CLI profile to use (s3:// only)
#
# Runs on macOS as on Linux: bash 3.2 and BSD tools, no GNU-only flags.
set -euo pipefail

readonly DEFAULT_OBJECT="e2b-webhook-emitter.tar.gz"
readonly SYNOPSIS="scripts/upload-artifact.sh [--object NAME] [--profile PROFILE] TARBALL gs://BUCKET|s3://BUCKET"

die() {
  echo "upload-artifact.sh: $*" >&2
  exit 1
}

# One line, so that it reads well in CI logs too.
usage_error() {
  echo "upload-artifact.sh: $* (usage: $SYNOPSIS)" >&2
  exit 2
}

object="$DEFAULT_OBJECT"
profile=""
tarball=""
destination=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --object)
      [[ $# -ge 2 && -n "$2" ]] || usage_error "--object needs a name"
      object="$2"
      shift 2
      ;;
    --object=*)
      object="${1#*=}"
      shift
      ;;
    --profile)
      [[ $# -ge 2 && -n "$2" ]] || usage_error "--profile needs an aws profile name"
      profile="$2"
      shift 2
      ;;
    --profile=*)
      profile="${1#*=}"
      [[ -n "$profile" ]] || usage_error "--profile needs an aws profile name"
      shift
      ;;
    -h | --help)
      sed -n 's/^# \{0,1\}//; 6,12p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    -*)
      usage_error "unknown option: $1"
      ;;
    *)
      if [[ -z "$tarball" ]]; then
        tarball="$1"
      elif [[ -z "$destination" ]]; then
        destination="$1"
      else
        usage_error "unexpected argument: $1"
      fi
      shift
      ;;
  esac
done
[[ -n "$tarball" && -n "$destination" ]] || usage_error "TARBALL and DESTINATION are required"

case "$destination" in
  gs://*) scheme="gs" ;;
  s3://*) scheme="s3" ;;
  *) usage_error "DESTINATION must be gs://BUCKET or s3://BUCKET, not '$destination'" ;;
esac
bucket="${destination#*://}"
bucket="${bucket%/}"
bucket_re='^[a-z0-9][a-z0-9._-]*[a-z0-9]$'
[[ "$bucket" != */* ]] ||
  usage_error "DESTINATION is a bucket ($scheme://BUCKET); name the object with --object"
[[ "$bucket" =~ $bucket_re ]] || usage_error "'$bucket' is not a bucket name"

# Nomad's artifact getter (go-getter) unpacks an archive by the extension of
# the path it downloads: any other name would leave the tarball unextracted
# and the job without its binary.
[[ "$object" == *.tar.gz ]] ||
  usage_error "the object name must end in .tar.gz (Nomad unpacks archives by their extension), not '$object'"
# It also ends up in artifact_url, which must stay a plain URL path.
object_re='^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$'
[[ "$object" =~ $object_re ]] ||
  usage_error "the object name may only hold letters, digits, '.', '_', '-' and '/' separators, not '$object'"

[[ -z "$profile" || "$scheme" == s3 ]] || usage_error "--profile is for s3:// destinations (aws)"

# Upload only what release.sh wrote: the tarball must match its .sha256,
# which must name exactly this file (the check verifies whatever file a line
# names).
[[ -f "$tarball" ]] || die "no such file: $tarball (build it with scripts/release.sh)"
checksum_file="$tarball.sha256"
[[ -f "$checksum_file" ]] || die "$checksum_file is missing: upload the tarball scripts/release.sh wrote, with its .sha256"
dir="$(dirname "$tarball")"
file="$(basename "$tarball")"
line="$(cat "$checksum_file")"
hex_re='^[0-9a-f]{64} [ *]'
[[ "$line" =~ $hex_re && "${line:66}" == "$file" ]] ||
  die "$checksum_file is not one sha256sum line for $file; rebuild with scripts/release.sh"
# GNU coreutils, or macOS 14 and later; older macOS only has shasum.
if command -v sha256sum >/dev/null; then
  check=(sha256sum --check --strict)
elif command -v shasum >/dev/null; then
  check=(shasum -a 256 -c)
else
  die "sha256sum or shasum is required to check the tarball"
fi
(cd "$dir" && "${check[@]}" "$file.sha256") >&2 ||
  die "$tarball does not match $checksum_file: not uploading it; rebuild with scripts/release.sh"
sha256="${line:0:64}"

# no-cache: the object keeps its name from release to release, so no cache
# along the way may serve the previous one. The checksum goes along as
# metadata, to compare with artifact_checksum later.
readonly CACHE_CONTROL="no-cache, max-age=0"
url="$scheme://$bucket/$object"
case "$scheme" in
  gs)
    command -v gcloud >/dev/null || die "gcloud is required for gs:// (install the Google Cloud CLI and run gcloud auth login)"
    gcloud storage cp --cache-control="$CACHE_CONTROL" --custom-metadata="sha256=$sha256" "$tarball" "$url"
    cat <<EOF

Uploaded $tarball
      to $url (sha256 $sha256)

Pin the object's generation in artifact_url, so that the next upload changes
the URL and redeploys the job (a google_storage_bucket_object data source
gives it to Terraform). See the generation, and the checksum stored with the
object, with:

  gcloud storage objects describe $url --format='value(generation,custom_fields.sha256)'

artifact_url      = "gcs::https://www.googleapis.com/storage/v1/$bucket/$object?version=<generation>"
artifact_checksum = "sha256:$sha256"
EOF
    ;;
  s3)
    command -v aws >/dev/null || die "aws is required for s3:// (install the AWS CLI and configure a profile)"
    if [[ -n "$profile" ]]; then
      aws s3 cp "$tarball" "$url" --cache-control "$CACHE_CONTROL" --metadata "sha256=$sha256" --profile "$profile"
      profile_arg=" --profile $profile"
    else
      aws s3 cp "$tarball" "$url" --cache-control "$CACHE_CONTROL" --metadata "sha256=$sha256"
      profile_arg=""
    fi
    cat <<EOF

Uploaded $tarball
      to $url (sha256 $sha256)

Pin the object's ETag in artifact_url, so that the next upload changes the
URL and redeploys the job (an aws_s3_object data source gives it to
Terraform). See the ETag, and the checksum stored with the object, with:

  aws s3api head-object --bucket $bucket --key $object$profile_arg --query '[ETag,Metadata.sha256]' --output text

artifact_url      = "s3::https://$bucket.s3.<region>.amazonaws.com/$object?etag=<etag>"
artifact_checksum = "sha256:$sha256"
EOF
    ;;
esac
