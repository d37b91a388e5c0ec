#!/usr/bin/env bash
# deploy/systemd: the units and their environment examples.
#  1. `systemd-analyze verify` of each unit, its ExecStart= pointed at the built binary (a
#     sed'ed copy in a temp dir): any line it prints about a unit fails the check (unknown
#     keys, bad values and a missing executable are only printed, not all of them in the
#     exit status); the ExecStart= arguments are parsed by the binary itself (with --help).
#  2. the hardening the units promise is written in them, line by line (DynamicUser= and
#     friends imply several, so the score alone would not notice one going).
#  3. `systemd-analyze security --offline=yes`: the exposure score, failing above
#     $MAX_EXPOSURE. What the units keep is what a network gateway needs: the host's network
#     (PrivateNetwork= 0.5, AF_INET/AF_INET6 0.3, no IPAddressDeny= 0.2, AF_UNIX 0.1), the
#     host's root directory (0.1) and read access to the RTC (0.1, from ProtectClock=), 1.1
#     in all. Losing the syscall filter (-> 2.6), the empty capability set (-> 2.8) or the
#     namespace restriction (-> 1.8) crosses 1.5.
#  4. the environment examples: every WARDEN_* name is one the binary reads, none sets what
#     the unit sets (EnvironmentFile= wins over Environment=), `warden-cp validate` accepts
#     each deploy/config file with it the way the unit passes it, and the node's stop
#     timeout covers its upstream deadline (the longest a drain waits for a stream).
# Needs systemd-analyze (Debian package `systemd`, installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

MAX_EXPOSURE=1.5
THRESHOLD=15 # the same in tenths, what `security --threshold=` takes
UNITS=(warden-cp warden-dp)
DIR=deploy/systemd
BIN=$(realpath -m "${CARGO_TARGET_DIR:-target}/debug")

fail() {
    printf 'deploy-checks/20-systemd: %s\n' "$*" >&2
    exit 1
}

if ! command -v systemd-analyze >/dev/null; then
    [[ $(id -u) == 0 ]] || fail "systemd-analyze is missing (apt-get install systemd, as root)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q systemd >/dev/null ||
        fail "apt-get install systemd failed"
fi
for unit in "${UNITS[@]}"; do
    [[ -x $BIN/$unit ]] || fail "$BIN/$unit is not built (cargo build --workspace --bins)"
done

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# 1. verify, with the units' ExecStart= at the built binaries.
for unit in "${UNITS[@]}"; do
    grep -q "^ExecStart=/usr/local/bin/$unit\b" "$DIR/$unit.service" ||
        fail "$unit.service: ExecStart= is not /usr/local/bin/$unit"
    sed "s#^ExecStart=/usr/local/bin/$unit#ExecStart=$BIN/$unit#" "$DIR/$unit.service" \
        >"$TMP/$unit.service"
    status=0
    out=$(systemd-analyze verify "$TMP/$unit.service" 2>&1) || status=$?
    # Lines about the host's own units (a dependency such as network-online.target) are
    # shown but not this check's business.
    if [[ $status != 0 ]] || grep -q 'warden' <<<"$out"; then
        printf '%s\n' "$out" >&2
        fail "systemd-analyze verify $unit.service: exit $status or a warning about the unit"
    fi
    [[ -z $out ]] || printf '(about other units) %s\n' "$out"
    # verify does not run the binary: its arguments are checked by the binary's own parser.
    line=$(grep "^ExecStart=/usr/local/bin/$unit" "$DIR/$unit.service")
    read -ra args <<<"${line#ExecStart=/usr/local/bin/"$unit"}"
    "$BIN/$unit" "${args[@]}" --help >/dev/null ||
        fail "$unit.service: $unit refuses the ExecStart= arguments '${args[*]}'"
    echo "verify $unit.service: clean"
done

# 2. the hardening, written out.
# shellcheck disable=SC2016 # $MAINPID is the unit's text, not to expand here
REQUIRED=(
    'Type=exec' 'DynamicUser=yes' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes'
    'NoNewPrivileges=yes' 'CapabilityBoundingSet=' 'AmbientCapabilities='
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'SystemCallFilter=@system-service'
    'MemoryDenyWriteExecute=yes' 'LockPersonality=yes' 'ProtectKernelTunables=yes'
    'ProtectKernelModules=yes' 'ProtectKernelLogs=yes' 'ProtectControlGroups=yes'
    'RestrictNamespaces=yes' 'RestrictRealtime=yes' 'RestrictSUIDSGID=yes'
    'Restart=on-failure' 'KillSignal=SIGTERM' 'ExecReload=/bin/kill -HUP $MAINPID'
    'LimitNOFILE=65536' 'UMask=0077'
)
for unit in "${UNITS[@]}"; do
    for line in "${REQUIRED[@]}"; do
        grep -qxF "$line" "$DIR/$unit.service" || fail "$unit.service lacks the line '$line'"
    done
    for key in StateDirectory TimeoutStopSec LoadCredential EnvironmentFile; do
        grep -q "^$key=." "$DIR/$unit.service" || fail "$unit.service lacks $key="
    done
done

# 3. the exposure score.
for unit in "${UNITS[@]}"; do
    status=0
    out=$(systemd-analyze security --offline=yes --threshold="$THRESHOLD" \
        "$TMP/$unit.service" 2>&1) || status=$?
    score=$(grep -o 'Overall exposure level for [^:]*: [0-9.]*' <<<"$out" | awk '{print $NF}')
    [[ -n $score ]] || { printf '%s\n' "$out" >&2; fail "no exposure score for $unit.service"; }
    echo "security $unit.service: exposure $score (fails above $MAX_EXPOSURE)"
    if [[ $status != 0 ]] || awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
        grep '✗' <<<"$out" >&2 || true
        fail "$unit.service: exposure $score is above $MAX_EXPOSURE"
    fi
done

# 4. the environment examples.
env_lines() { grep -E '^[A-Z_]+=' "$1"; }
commented_lines() { grep -E '^#[A-Z_]+=' "$1" | sed 's/^#//'; }
for unit in "${UNITS[@]}"; do
    example=$DIR/$unit.env.example
    [[ -f $example ]] || fail "$example is missing"
    grep -q "^EnvironmentFile=/etc/warden/$unit.env$" "$DIR/$unit.service" ||
        fail "$unit.service does not read /etc/warden/$unit.env"
    names=$({ env_lines "$example" || true; commented_lines "$example" || true; } | cut -d= -f1)
    # Names the unit sets itself: an EnvironmentFile= line would override them.
    # shellcheck disable=SC2013 # variable names: one word a line
    for owned in $(grep -oE '^Environment=[A-Z_]+' "$DIR/$unit.service" | cut -d= -f2); do
        ! grep -qx "$owned" <<<"$names" || fail "$example sets $owned, which $unit.service sets"
    done
    # shellcheck disable=SC2013
    for name in $(grep '^WARDEN_' <<<"$names"); do
        grep -aqF "$name" "$BIN/$unit" || fail "$example: $name is not read by $unit"
    done
done
mkdir -m 0700 "$TMP/state"
head -c 32 /dev/urandom | base64 >"$TMP/master-key"
unit_env=(WARDEN_MASTER_KEY_FILE="$TMP/master-key" WARDEN_DATA_DIR="$TMP/state")
mapfile -t cp_env < <(env_lines "$DIR/warden-cp.env.example")
mapfile -t cp_ha_env < <(commented_lines "$DIR/warden-cp.env.example")
env -i "${cp_env[@]}" "${unit_env[@]}" "$BIN/warden-cp" --config deploy/config/warden-cp.toml validate ||
    fail "warden-cp validate refuses deploy/config/warden-cp.toml with warden-cp.env.example"
# The HA lines are uncommented for the HA config; its TLS key is in the config file.
env -i "${cp_env[@]}" "${cp_ha_env[@]}" "${unit_env[@]}" \
    "$BIN/warden-cp" --config deploy/config/warden-cp-ha.toml validate ||
    fail "warden-cp validate refuses deploy/config/warden-cp-ha.toml with warden-cp.env.example (HA lines uncommented)"

seconds() { # 330s, 5m, 1h, 5min -> seconds
    local v=$1
    case $v in
    *min) echo $((${v%min} * 60)) ;; *h) echo $((${v%h} * 3600)) ;;
    *m) echo $((${v%m} * 60)) ;; *s) echo "${v%s}" ;; *) echo "$v" ;;
    esac
}
stop=$(seconds "$(grep -oP '^TimeoutStopSec=\K\S+' "$DIR/warden-dp.service")")
deadline=$(seconds "$(env_lines "$DIR/warden-dp.env.example" | grep -oP '^WARDEN_UPSTREAM_DEADLINE=\K\S+')")
((stop >= deadline + 10)) ||
    fail "warden-dp.service TimeoutStopSec= (${stop}s) must exceed WARDEN_UPSTREAM_DEADLINE (${deadline}s) by 10s or more"
echo "env examples: names read by the binaries, warden-cp validate ok, node stop timeout ${stop}s >= upstream deadline ${deadline}s + 10s"
