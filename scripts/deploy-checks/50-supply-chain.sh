#!/usr/bin/env bash
# Supply chain. 1) `cargo deny check licenses bans sources` against deny.toml (licence
# allow-list, no OpenSSL/ring, no `*` versions, crates.io only), then mutations that must
# each fail with their own error, proof the checks bite: copies of the policy (MIT not
# allowed, tokio banned, no registry allowed) and a `*` requirement in cargo's metadata.
# 2) One CycloneDX 1.5 SBOM per shipped binary (warden-cp, warden-dp, wardenctl) from
# `cargo cyclonedx --describe binaries`, in $TARGET/sbom/, checked by sbom.py (official
# schema, the exact crate set and Cargo.lock hashes, no local path) after its own
# mutation self-test.
# cargo-deny and cargo-cyclonedx are built from crates.io (pinned, --locked) into
# $TARGET/tools/ on the first run: no official prebuilt binary is reachable here (their
# releases are on GitHub). `advisories` needs the RustSec database from GitHub, which these
# machines cannot reach: it runs only with WARDEN_DENY_ADVISORIES=1 (README, "Supply chain").
set -euo pipefail
cd "$(dirname "$0")/../.."

TARGET="${CARGO_TARGET_DIR:-target}"
TOOLS="$(realpath -m "$TARGET/tools")"
SBOM_DIR="$TARGET/sbom"
DENY_VERSION=0.20.2
CYCLONEDX_VERSION=0.5.9
CDXLIB_VERSION=11.12.0
# The shipped binaries, as BINARY=PACKAGE.
BINS=(warden-cp=warden-control-plane warden-dp=warden-data-plane wardenctl=warden-cli)

fail() { echo "50-supply-chain: FAILED: $*" >&2; exit 1; }

# cargo_tool CRATE VERSION: builds CRATE from crates.io into $TOOLS/CRATE-VERSION, once.
cargo_tool() {
  local crate=$1 version=$2 root="$TOOLS/$1-$2" start=$SECONDS
  [ -x "$root/bin/$crate" ] && return 0
  mkdir -p "$root"
  echo "50-supply-chain: building $crate $version from crates.io (log: $root/install.log)"
  env -u CARGO_TARGET_DIR CARGO_INCREMENTAL=0 \
    cargo install --locked --version "$version" --root "$root" "$crate" >"$root/install.log" 2>&1 \
    || { tail -n 30 "$root/install.log" >&2; fail "cargo install --locked --version $version $crate"; }
  echo "50-supply-chain: $crate $version built in $((SECONDS - start)) s"
}

cargo_tool cargo-deny "$DENY_VERSION"
cargo_tool cargo-cyclonedx "$CYCLONEDX_VERSION"
DENY="$TOOLS/cargo-deny-$DENY_VERSION/bin/cargo-deny"
CDX="$TOOLS/cargo-cyclonedx-$CYCLONEDX_VERSION/bin/cargo-cyclonedx"
"$DENY" --version | grep -qx "cargo-deny $DENY_VERSION" || fail "$DENY is not cargo-deny $DENY_VERSION"
"$CDX" cyclonedx --version | grep -qE "^cargo-cyclonedx(-cyclonedx)? $CYCLONEDX_VERSION$" || fail "$CDX is not cargo-cyclonedx $CYCLONEDX_VERSION"

# The CycloneDX schema and its validator (the CycloneDX project's own Python library), in a
# venv of their own. rfc3987 (GPL-3.0, a tool here, never shipped) replaces the default IRI
# checker, whose Earley parser takes ~0.25 s per URL: 3 minutes per SBOM instead of 2 s.
PYTOOLS="$TOOLS/cyclonedx-python-lib-$CDXLIB_VERSION"
if ! "$PYTOOLS/bin/python" -c 'import cyclonedx.validation.json, rfc3987' 2>/dev/null; then
  rm -rf "$PYTOOLS"
  .venv/bin/python -m venv "$PYTOOLS" || fail "python -m venv $PYTOOLS"
  "$PYTOOLS/bin/pip" install -q --disable-pip-version-check \
    "cyclonedx-python-lib[json-validation]==$CDXLIB_VERSION" 'rfc3987==1.3.8' \
    || fail "pip install cyclonedx-python-lib[json-validation]==$CDXLIB_VERSION rfc3987==1.3.8"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. cargo deny: the policy, then mutated policies that must fail.
start=$SECONDS
"$DENY" --locked check licenses bans sources >"$tmp/deny.out" 2>&1 \
  || { cat "$tmp/deny.out" >&2; fail "cargo deny check licenses bans sources (policy: deny.toml)"; }
echo "50-supply-chain: cargo deny: $(tail -n 1 "$tmp/deny.out"); $(grep -c '^warning\[duplicate\]' "$tmp/deny.out" || true) crates in more than one version (warn)"

# mutant NAME ERROR OPTION FILE: cargo deny with the mutated policy or metadata FILE must
# fail with error[ERROR].
mutant() {
  local name=$1 want=$2 option=$3 file=$4
  if "$DENY" --locked "$option" "$file" check licenses bans sources >"$tmp/$name.out" 2>&1; then
    fail "cargo deny passed with the mutation $name: the check bites on nothing"
  fi
  grep -q "^error\[$want\]" "$tmp/$name.out" || { cat "$tmp/$name.out" >&2; fail "the mutation $name did not fail with error[$want]"; }
}
grep -v '^    "MIT",$' deny.toml >"$tmp/no-mit.toml"
sed 's/^deny = \[$/deny = [\n    { crate = "tokio", reason = "self-test" },/' deny.toml >"$tmp/ban-tokio.toml"
sed 's#^allow-registry = .*#allow-registry = []#' deny.toml >"$tmp/no-registry.toml"
for name in no-mit ban-tokio no-registry; do
  cmp -s deny.toml "$tmp/$name.toml" && fail "the mutation $name changed nothing in deny.toml"
done
mutant no-mit rejected --config "$tmp/no-mit.toml"
mutant ban-tokio banned --config "$tmp/ban-tokio.toml"
mutant no-registry source-not-allowed --config "$tmp/no-registry.toml"
# A `*` requirement, put into cargo's metadata rather than into a Cargo.toml of the checkout.
cargo metadata --format-version 1 --locked --all-features >"$tmp/metadata-all.json" || fail "cargo metadata"
"$PYTOOLS/bin/python" - "$tmp/metadata-all.json" "$tmp/wildcard.json" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
cli = next(p for p in meta["packages"] if p["name"] == "warden-cli")
next(d for d in cli["dependencies"] if d["name"] == "anyhow")["req"] = "*"
json.dump(meta, open(sys.argv[2], "w"))
PY
mutant wildcard wildcard --metadata-path "$tmp/wildcard.json"
echo "50-supply-chain: mutations refused (licence, ban, source, wildcard) in $((SECONDS - start)) s"

if [ "${WARDEN_DENY_ADVISORIES:-0}" = 1 ]; then
  "$DENY" --locked check advisories || fail "cargo deny check advisories"
else
  echo "50-supply-chain: advisories not checked: the RustSec database is on GitHub; set WARDEN_DENY_ADVISORIES=1 where it is reachable"
fi

# 2. One SBOM per shipped binary. cargo-cyclonedx writes NAME_bin_TRIPLE.cdx.json beside each
# workspace package's Cargo.toml; they are moved to $SBOM_DIR (the rest, e.g. the bench
# tool's, removed) and their absolute checkout path rewritten (sbom.py relocate).
start=$SECONDS
triple=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$triple" ] || fail "rustc -vV names no host triple"
cargo metadata --format-version 1 --locked --filter-platform "$triple" >"$tmp/metadata.json" \
  || fail "cargo metadata --filter-platform $triple"
mapfile -t dirs < <("$PYTOOLS/bin/python" -c '
import json, os, sys
m = json.load(open(sys.argv[1]))
for p in m["packages"]:
    if p["id"] in m["workspace_members"]:
        print(os.path.dirname(p["manifest_path"]))' "$tmp/metadata.json")
remove_generated() { local d; for d in "${dirs[@]}"; do rm -f "$d"/*_bin_"$triple".cdx.json; done; }
remove_generated
trap 'remove_generated; rm -rf "$tmp"' EXIT
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0) \
  "$CDX" cyclonedx -q --format json --describe binaries --spec-version 1.5 --all \
  --target "$triple" --target-in-filename || fail "cargo cyclonedx"
rm -rf "$SBOM_DIR"
mkdir -p "$SBOM_DIR"
specs=()
for entry in "${BINS[@]}"; do
  bin=${entry%%=*} package=${entry#*=}
  file="${bin}_bin_$triple.cdx.json"
  found=
  for d in "${dirs[@]}"; do
    if [ -f "$d/$file" ]; then found="$d/$file"; fi
  done
  [ -n "$found" ] || fail "cargo cyclonedx wrote no $file for $bin"
  mv "$found" "$SBOM_DIR/$file"
  specs+=("$bin=$package:$SBOM_DIR/$file")
done
remove_generated
"$PYTOOLS/bin/python" scripts/deploy-checks/sbom.py relocate "$PWD" "$SBOM_DIR"/*.cdx.json
sbom_args=(--metadata "$tmp/metadata.json" --lock Cargo.lock --target "$triple" --root "$PWD")
"$PYTOOLS/bin/python" scripts/deploy-checks/sbom.py self-test "${sbom_args[@]}" "${specs[0]}" \
  || fail "sbom.py self-test: a mutated SBOM passed"
"$PYTOOLS/bin/python" scripts/deploy-checks/sbom.py check "${sbom_args[@]}" "${specs[@]}" \
  || fail "the SBOMs in $SBOM_DIR"
echo "50-supply-chain: ${#specs[@]} SBOMs in $SBOM_DIR checked in $((SECONDS - start)) s"
