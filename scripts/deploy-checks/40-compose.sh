#!/usr/bin/env bash
# deploy/compose/compose.yaml against the Compose specification's JSON schema (the copy
# vendored in check-jsonschema, pinned here: offline, no Docker needed). The schema refuses
# unknown keys at every level (only `x-` extensions pass); a mutated copy with a misspelt key
# proves that here on every run. Then what the schema cannot see: every secret, config,
# network and volume a service names is declared, every file the project reads exists
# (secrets/ excepted: the README's commands make it), and every Warden service carries the
# hardening (read_only, a non-root user, cap_drop ALL, no-new-privileges, a healthcheck).
# The topology itself is started as processes by tests/tests/e2e/compose_topology.rs.
set -euo pipefail
cd "$(dirname "$0")/../.."
compose=deploy/compose/compose.yaml
version=0.39.0
if [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("check-jsonschema"))' 2>/dev/null)" != "$version" ]; then
  .venv/bin/pip install -q "check-jsonschema==$version"
fi
.venv/bin/check-jsonschema --builtin-schema vendor.compose-spec "$compose"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed 's/^  redis:$/  redis:\n    restart_policy: always/' "$compose" > "$tmp/compose.yaml"
if .venv/bin/check-jsonschema --builtin-schema vendor.compose-spec "$tmp/compose.yaml" > "$tmp/out" 2>&1; then
  echo "40-compose: the schema accepted an unknown key (services.redis.restart_policy): it checks nothing" >&2
  exit 1
fi
grep -q restart_policy "$tmp/out" || { cat "$tmp/out" >&2; exit 1; }

.venv/bin/python - "$compose" <<'PY'
import os, sys
from ruamel.yaml import YAML

path = sys.argv[1]
base = os.path.dirname(path)
doc = YAML(typ="safe").load(open(path))
errors = []
declared = {k: set((doc.get(k) or {}).keys()) for k in ("secrets", "configs", "networks", "volumes")}

def names(items):
    for item in items or []:
        yield item if isinstance(item, str) else item["source"]

for name, svc in doc["services"].items():
    for kind in ("secrets", "configs"):
        for ref in names(svc.get(kind)):
            if ref not in declared[kind]:
                errors.append(f"services.{name}.{kind}: {ref} is not declared")
    for net in svc.get("networks") or []:
        if net not in declared["networks"]:
            errors.append(f"services.{name}.networks: {net} is not declared")
    for vol in svc.get("volumes") or []:
        src = vol.split(":")[0] if isinstance(vol, str) else vol.get("source")
        if src and not src.startswith((".", "/")) and src not in declared["volumes"]:
            errors.append(f"services.{name}.volumes: {src} is not declared")
    for dep in (svc.get("depends_on") or {}):
        if dep not in doc["services"]:
            errors.append(f"services.{name}.depends_on: no service {dep}")
    for env_file in svc.get("env_file") or []:
        if not env_file.startswith("./secrets/") and not os.path.exists(os.path.join(base, env_file)):
            errors.append(f"services.{name}.env_file: {env_file} does not exist")
    if name.startswith("warden-"):
        if svc.get("read_only") is not True:
            errors.append(f"services.{name}: read_only is not true")
        if str(svc.get("user", "0")).split(":")[0] in ("0", "root"):
            errors.append(f"services.{name}: runs as root")
        if svc.get("cap_drop") != ["ALL"]:
            errors.append(f"services.{name}: cap_drop is not [ALL]")
        if "no-new-privileges:true" not in (svc.get("security_opt") or []):
            errors.append(f"services.{name}: no no-new-privileges:true")
        if name != "warden-bootstrap" and "healthcheck" not in svc:
            errors.append(f"services.{name}: no healthcheck")
for kind in ("secrets", "configs"):
    for name, spec in (doc.get(kind) or {}).items():
        f = spec.get("file", "")
        if not f.startswith("./secrets/") and not os.path.exists(os.path.join(base, f)):
            errors.append(f"{kind}.{name}: {f} does not exist")
if errors:
    print("40-compose: " + "\n40-compose: ".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"40-compose: {len(doc['services'])} services, references and hardening checked")
PY
