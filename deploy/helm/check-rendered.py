"""Checks one `helm template` output of the Warden chart (run by
scripts/deploy-checks/30-helm.sh).

usage: check-rendered.py RENDERED.yaml OUT_DIR SERVICEMONITOR_SCHEMA.json BIN_DIR

- writes every manifest but the ServiceMonitor to OUT_DIR/k8s-NN.yaml (for
  kubernetes-validate) and validates each ServiceMonitor against the checked-in schema;
- every pod (Deployments, Jobs) runs non-root with a numeric user, a read-only root
  filesystem, no privilege escalation, no capability and the RuntimeDefault seccomp profile;
- every `--flag` and subcommand the chart passes exists in `BIN_DIR/<binary> --help`, and
  warden-dp accepts the nodes' rendered arguments (it runs until it opens the audit spool);
- the control plane's rendered warden-cp.toml passes `warden-cp --config … validate`
  (with throwaway values for the variables the chart sets from Secrets);
- the nodes point --cp-addr at the headless control-plane Service, and their
  terminationGracePeriodSeconds exceeds the preStop sleep plus --upstream-deadline.
"""

import base64
import json
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

rendered, out_dir, sm_schema_path, bin_dir = sys.argv[1:5]
errors = []


def err(msg):
    errors.append(msg)


docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
os.makedirs(out_dir, exist_ok=True)
sm_schema = json.load(open(sm_schema_path))
jsonschema.Draft202012Validator.check_schema(sm_schema)
kinds = {}
for i, doc in enumerate(docs):
    kinds.setdefault(doc["kind"], []).append(doc)
    if doc["kind"] == "ServiceMonitor":
        for e in jsonschema.Draft202012Validator(sm_schema).iter_errors(doc):
            err(f"ServiceMonitor {doc['metadata']['name']}: {e.message} at {list(e.absolute_path)}")
        continue
    with open(os.path.join(out_dir, f"k8s-{i:02d}.yaml"), "w") as f:
        yaml.safe_dump(doc, f)

for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"):
    if kind not in kinds:
        err(f"no {kind} rendered")

help_cache = {}


def help_of(binary):
    if binary not in help_cache:
        path = os.path.join(bin_dir, binary)
        if not os.access(path, os.X_OK):
            err(f"{path} is not built (needed to check the chart's flags)")
            help_cache[binary] = ""
        else:
            help_cache[binary] = subprocess.run(
                [path, "--help"], capture_output=True, text=True, check=True
            ).stdout
    return help_cache[binary]


def pod_specs():
    for doc in kinds.get("Deployment", []) + kinds.get("Job", []):
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


for name, spec in pod_specs():
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or not isinstance(psc.get("runAsUser"), int):
        err(f"{name}: pod securityContext needs runAsNonRoot and a numeric runAsUser")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        err(f"{name}: pod seccompProfile is not RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        err(f"{name}: the service account token is mounted")
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        want = {
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
        }
        for k, v in want.items():
            if sc.get(k) is not v:
                err(f"{name}/{c['name']}: securityContext.{k} is not {v}")
        if not isinstance(sc.get("runAsUser"), int) or sc["runAsUser"] == 0:
            err(f"{name}/{c['name']}: runAsUser is not a non-zero number")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc["capabilities"].get("add"):
            err(f"{name}/{c['name']}: capabilities are not drop [ALL]")
        if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            err(f"{name}/{c['name']}: seccompProfile is not RuntimeDefault")
        binary = os.path.basename(c["command"][0])
        text = help_of(binary)
        for arg in c.get("args", []):
            if arg.startswith("--"):
                flag = arg.split("=", 1)[0]
                if not re.search(re.escape(flag) + r"(?![\w-])", text):
                    err(f"{name}/{c['name']}: {binary} has no flag {flag}")
            elif not arg.startswith("-") and not re.search(r"^\s+" + re.escape(arg) + r"\s", text, re.M):
                err(f"{name}/{c['name']}: {binary} has no subcommand {arg}")


def deployment(component):
    for doc in kinds.get("Deployment", []):
        if doc["metadata"]["labels"].get("app.kubernetes.io/component") == component:
            return doc
    err(f"no {component} Deployment")
    return None


def throwaway_env(container, toml_text):
    env = {"PATH": os.environ.get("PATH", ""), "RUST_BACKTRACE": "0"}
    for e in container.get("env") or []:
        n = e["name"]
        if n == "WARDEN_DATABASE_URL":
            env[n] = "postgres://warden@127.0.0.1:5432/warden"
        elif n == "WARDEN_REDIS_URL":
            scheme = "rediss" if "ca_file" in toml_text.split("[redis]", 1)[-1].split("[", 1)[0] else "redis"
            env[n] = f"{scheme}://127.0.0.1:6379/0"
        elif n == "WARDEN_OTLP_HEADERS":
            env[n] = "x-api-key=throwaway"
        else:
            env[n] = e.get("value", "throwaway")
    # The key is read from a file the chart mounts; the variable stands in for it here.
    env["WARDEN_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
    return env


cp = deployment("control-plane")
if cp is not None:
    c = cp["spec"]["template"]["spec"]["containers"][0]
    conf = [d for d in kinds["ConfigMap"] if d["metadata"]["name"] == cp["metadata"]["name"]]
    toml_text = conf[0]["data"]["warden-cp.toml"] if conf else ""
    if not toml_text:
        err("no warden-cp.toml in the control plane's ConfigMap")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "warden-cp.toml")
        open(cfg, "w").write(toml_text)
        data = os.path.join(tmp, "data")
        r = subprocess.run(
            [os.path.join(bin_dir, "warden-cp"), "--config", cfg, "--data-dir", data, "validate"],
            env=throwaway_env(c, toml_text),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode != 0:
            err(f"warden-cp validate refuses the rendered warden-cp.toml: {r.stderr.strip().splitlines()[0:1]}")

node = deployment("node")
if node is not None:
    spec = node["spec"]["template"]["spec"]
    c = spec["containers"][0]
    args = dict(a[2:].split("=", 1) for a in c["args"] if a.startswith("--") and "=" in a)
    headless = [
        s["metadata"]["name"]
        for s in kinds.get("Service", [])
        if s["spec"].get("clusterIP") == "None"
        and s["spec"]["selector"].get("app.kubernetes.io/component") == "control-plane"
        and any(p["name"] == "grpc" for p in s["spec"]["ports"])
    ]
    if not headless or not re.match(rf"https?://{re.escape(headless[0])}\.", args.get("cp-addr", "")):
        err(f"--cp-addr {args.get('cp-addr')} is not the headless control-plane Service {headless}")
    m = re.fullmatch(r"(\d+)s", args.get("upstream-deadline", ""))
    if not m:
        err("the nodes have no --upstream-deadline in seconds (their drain would be unbounded)")
    else:
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        if spec["terminationGracePeriodSeconds"] <= sleep + int(m.group(1)):
            err("node terminationGracePeriodSeconds does not exceed preStop + --upstream-deadline")
    # The values parse: warden-dp run with the rendered args (listeners moved to loopback
    # port 0, a throwaway credential) gets through its whole configuration and stops where
    # it opens the audit spool, pointed here at a file.
    with tempfile.TemporaryDirectory() as tmp:
        blocker = os.path.join(tmp, "not-a-directory")
        open(blocker, "w").write("wn_helmcheck\n")
        # Certificates the pods get from Secrets: throwaway ones from `wardenctl certs dev`.
        certs = os.path.join(tmp, "certs")
        subprocess.run(
            [os.path.join(bin_dir, "wardenctl"), "certs", "dev", "--out", certs],
            capture_output=True,
            check=True,
        )
        stand_in = {"ca.crt": "ca.pem", "tls.crt": "server.pem", "tls.key": "server.key"}
        run_args = []
        for a in c["args"]:
            a = re.sub(r"=0\.0\.0\.0:\d+$", "=127.0.0.1:0", a).replace("$(POD_NAME)", "helm-check")
            flag, _, value = a.partition("=")
            if flag in ("--node-token-file", "--audit-spool-dir"):
                a = f"{flag}={blocker}"
            elif flag.endswith("-file") and os.path.basename(value) in stand_in:
                a = f"{flag}={os.path.join(certs, stand_in[os.path.basename(value)])}"
            run_args.append(a)
        env = {"PATH": os.environ.get("PATH", ""), "RUST_BACKTRACE": "0"}
        for e in c.get("env") or []:
            if e["name"] == "WARDEN_REDIS_URL":
                tls = "redis-ca-file" in args
                env[e["name"]] = ("rediss" if tls else "redis") + "://127.0.0.1:6379/0"
            elif "value" in e:
                env[e["name"]] = e["value"]
        try:
            r = subprocess.run(
                [os.path.join(bin_dir, "warden-dp"), *run_args],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if f"audit spool {blocker}" not in r.stderr:
                last = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
                err(f"warden-dp refuses the rendered args: {last or r.stderr[-300:]}")
        except subprocess.TimeoutExpired:
            err("warden-dp with the rendered args kept running (expected to stop at the audit spool)")
    probes = (c.get("readinessProbe", {}).get("httpGet", {}), c.get("livenessProbe", {}).get("httpGet", {}))
    if probes[0].get("path") != "/readyz" or probes[1].get("path") != "/healthz":
        err("node probes are not /readyz (readiness) and /healthz (liveness)")

if errors:
    for e in errors:
        print(f"  {rendered}: {e}", file=sys.stderr)
    sys.exit(1)
