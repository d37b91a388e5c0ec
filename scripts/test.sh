#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): prepares the Python clients in .venv,
# starts and checks the test backends, then runs rustfmt, clippy, the whole test suite and
# the dependency checks. Needs a Rust toolchain, Python 3.11 with pip, and cargo-nextest
# (falls back to `cargo test` without it). Any missing piece fails the run loudly.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
REQUIREMENTS=tests/python/requirements.txt
STAMP=$VENV/.requirements.sha256

die() {
    printf '\nERROR: %s\n' "$*" >&2
    exit 1
}

# Runs one step under a header and prints how long it took.
step() {
    local name=$1 start=$SECONDS
    shift
    printf '\n==> %s\n' "$name"
    "$@"
    printf '<== %s: %ds\n' "$name" $((SECONDS - start))
}

python_venv() {
    if ! "$VENV/bin/python" -c '' 2>/dev/null; then
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" ||
            die "could not create $VENV with '$PYTHON -m venv' (on Debian: apt-get install python3-venv)"
    fi
    local want
    want=$( (sha256sum "$REQUIREMENTS" && "$VENV/bin/python" --version) | sha256sum | cut -d' ' -f1)
    if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
        echo "$VENV is up to date with $REQUIREMENTS"
        return
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" ||
        die "pip could not install $REQUIREMENTS into $VENV"
    echo "$want" >"$STAMP"
    "$VENV/bin/python" -m pip freeze --disable-pip-version-check
}

# Backend start-up goes here. Redis, PostgreSQL, OpenBao (`bao server -dev`) and moto_server
# come with later issues (see "Test backends" in DESIGN.md): each is started on 127.0.0.1 —
# or, for Redis and PostgreSQL on CI, found already running — and exported to the tests
# (e.g. WARDEN_TEST_REDIS_URL). A backend that cannot be had must fail the run here, with
# its name; tests never skip silently because a backend is missing.
start_backends() {
    echo "no backends needed yet"
}

# Checks that everything this suite needs is really there.
check_backends() {
    "$VENV/bin/python" -c 'import openai; print("python openai", openai.__version__)' ||
        die "the Python 'openai' package does not import from $VENV; the end-to-end tests need it"
}

run_tests() {
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --locked --no-fail-fast
        # nextest does not run doc tests; run them only once there are any to run.
        if grep -rqE '^\s*//[/!].*```' --include='*.rs' -- */src; then
            cargo test --workspace --doc --locked
        else
            echo "no doc tests"
        fi
    else
        echo "cargo-nextest not found: falling back to cargo test"
        cargo test --workspace --locked
    fi
}

# `cargo tree -i` exits non-zero ("did not match any packages") when the crate is not even
# in Cargo.lock, and prints nothing when it is locked but unused; both mean it is absent.
forbid_dependency() {
    local crate=$1 tree rc=0
    tree=$(cargo tree -i "$crate" --workspace --locked --target all --prefix none 2>&1) || rc=$?
    if [[ $rc -ne 0 ]]; then
        grep -q 'did not match any packages' <<<"$tree" || die "cargo tree failed: $tree"
    elif grep -qv -e '^warning: nothing to print' -e '^To find dependencies' -e '^$' <<<"$tree"; then
        die "$crate is in the dependency graph (one TLS stack: rustls + aws-lc-rs):"$'\n'"$tree"
    fi
    echo "no $crate"
}

check_dependencies() {
    forbid_dependency openssl-sys
    forbid_dependency ring
}

total=$SECONDS
step "python clients ($REQUIREMENTS)" python_venv
step "backends" start_backends
step "backend checks" check_backends
export WARDEN_TEST_PYTHON=$PWD/$VENV/bin/python
step "rustfmt" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# End-to-end tests start the real binaries from target/debug: build them first.
step "build binaries" cargo build --workspace --bins --locked
step "tests" run_tests
step "dependency checks" check_dependencies
printf '\nall checks passed in %ds\n' $((SECONDS - total))
