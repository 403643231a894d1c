#!/usr/bin/env bash
# Puts the ONNX Runtime C API headers (onnxruntime_c_api.h, ...) into DEST, from Debian's
# libonnxruntime-dev package (MIT). Nothing is installed: a private apt configuration downloads the .deb
# (cached under ${XDG_CACHE_HOME:-~/.cache}/parekit/native) and `dpkg-deb -x` unpacks it.
#
#   scripts/fetch_ort_headers.sh DEST [SUITE]      SUITE: a Debian release holding the package (trixie)
set -euo pipefail
dest=${1:?usage: fetch_ort_headers.sh DEST [SUITE]}
suite=${2:-${PAREKIT_ORT_DEBIAN_SUITE:-trixie}}
if [[ -f "$dest/onnxruntime_c_api.h" ]]; then exit 0; fi
for tool in apt-get dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "fetch_ort_headers: $tool not found; set PAREKIT_ORT_INCLUDE_DIR to your ONNX Runtime's include folder" >&2; exit 1; }
done
cache=${XDG_CACHE_HOME:-$HOME/.cache}/parekit/native/apt-$suite
mkdir -p "$cache/lists/partial" "$cache/archives/partial" "$cache/debs"
deb=$(ls "$cache"/debs/libonnxruntime-dev_*.deb 2>/dev/null | head -n1 || true)
if [[ -z "$deb" ]]; then
  # The mirror this machine already uses (deb822 or one-line sources), else Debian's own.
  mirror=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 | sed 's/^URIs: *//' || true)
  if [[ -z "$mirror" ]]; then
    mirror=$(grep -hoE '^deb +(\[[^]]*\] +)?[a-z]+://[^ ]+' /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 | awk '{print $NF}' || true)
  fi
  mirror=${mirror:-http://deb.debian.org/debian}
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  opts=""
  [[ -f $keyring ]] && opts="[signed-by=$keyring]"
  echo "deb $opts $mirror $suite main" > "$cache/sources.list"
  apt=(apt-get -q -o "Dir::Etc::SourceList=$cache/sources.list" -o Dir::Etc::SourceParts=/dev/null
       -o "Dir::State::Lists=$cache/lists" -o "Dir::Cache=$cache" -o APT::Sandbox::User=root)
  "${apt[@]}" update >/dev/null
  (cd "$cache/debs" && "${apt[@]}" download libonnxruntime-dev >/dev/null)
  deb=$(ls "$cache"/debs/libonnxruntime-dev_*.deb | head -n1)
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
header=$(find "$tmp" -name onnxruntime_c_api.h | head -n1)
[[ -n "$header" ]] || { echo "fetch_ort_headers: $deb holds no onnxruntime_c_api.h" >&2; exit 1; }
mkdir -p "$dest"
cp "$(dirname "$header")"/*.h "$dest"/
copyright=$(find "$tmp" -name copyright | head -n1)
[[ -n "$copyright" ]] && cp "$copyright" "$dest/COPYRIGHT.debian"
echo "fetch_ort_headers: $(basename "$deb") -> $dest"
