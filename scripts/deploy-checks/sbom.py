#!/usr/bin/env python3
"""The CycloneDX SBOMs that `cargo cyclonedx --describe binaries` writes, one per binary
(run by 50-supply-chain.sh, with cyclonedx-python-lib installed for the schema).

`relocate ROOT FILE...`: cargo's package ids, which cargo-cyclonedx uses as bom-refs,
carry the absolute path of the checkout (`path+file:///home/me/warden/core#warden-core@0.1.0`);
this rewrites `path+file://ROOT` to `path+file://.` so an SBOM names no directory of the
machine that built it and two checkouts of one commit give the same file.

`check --metadata M --lock L --target T --root ROOT BIN=PACKAGE:FILE...`: each SBOM
  - is CycloneDX 1.5 JSON that the official schema (strict: no unknown keys) accepts;
  - describes BIN (an application, purl pkg:cargo/PACKAGE@version) for target T;
  - lists exactly the crates, at exactly the versions, that PACKAGE needs on T (normal and
    build dependencies, from `cargo metadata --filter-platform T` in M), our own included,
    tokio and rustls among them;
  - gives every crates.io crate a licence and the SHA-256 that Cargo.lock (L) pins;
  - has a dependency graph whose references all resolve;
  - holds no absolute path: not ROOT, $HOME, $CARGO_HOME, nor any `file:///` URL.

`self-test` (the options of `check`, one BIN=PACKAGE:FILE): mutated copies of that good SBOM
(a crate left out, a hash changed, a home path, an unknown key, another spec version) must
each fail with their own message.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import tomllib

SPEC = "1.5"
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
MUST_LIST = ("tokio", "rustls", "warden-core")


def relocate(root: str, files: list[str]) -> None:
    root = os.path.realpath(root).rstrip("/")
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        text = text.replace(f"path+file://{root}/", "path+file://./")
        text = text.replace(f"path+file://{root}#", "path+file://.#")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def expected_crates(metadata: dict, package: str) -> set[tuple[str, str]]:
    """(name, version) of every crate PACKAGE needs: normal and build edges, no dev ones."""
    packages = {p["id"]: p for p in metadata["packages"]}
    nodes = {n["id"]: n for n in metadata["resolve"]["nodes"]}
    roots = [i for i in metadata["workspace_members"] if packages[i]["name"] == package]
    if len(roots) != 1:
        raise SystemExit(f"sbom: no workspace package {package} in the metadata")
    seen: set[str] = set()
    todo = [roots[0]]
    while todo:
        for dep in nodes[todo.pop()]["deps"]:
            kinds = {k["kind"] for k in dep["dep_kinds"]}
            if kinds & {None, "build"} and dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                todo.append(dep["pkg"])
    return {(packages[i]["name"], packages[i]["version"]) for i in seen}


def lock_checksums(lock: dict) -> dict[tuple[str, str], str]:
    return {
        (p["name"], p["version"]): p["checksum"]
        for p in lock["package"]
        if p.get("source") == CRATES_IO and "checksum" in p
    }


def leak_markers(root: str) -> list[str]:
    """The checkout, and the home and cargo directories as path prefixes (`/root/`, so a
    URL like `…/webpki-roots` is no match)."""
    markers = [os.path.realpath(root).rstrip("/")]
    for var in ("HOME", "CARGO_HOME"):
        value = os.environ.get(var, "").rstrip("/")
        if value:
            markers.append(value + "/")
    return markers


def schema_errors(validator, text: str) -> list[str]:
    found = validator.validate_str(text, all_errors=True)
    if found is None:
        return []
    errors = []
    for error in found:
        data = error.data
        where = "/".join(str(p) for p in data.absolute_path)
        errors.append(f"schema: {data.message} at /{where}")
    return errors


def check(doc: dict, text: str, ctx: dict) -> list[str]:
    errors = []
    bin_name, package = ctx["bin"], ctx["package"]
    if doc.get("bomFormat") != "CycloneDX" or doc.get("specVersion") != SPEC:
        errors.append(f"not CycloneDX {SPEC}: {doc.get('bomFormat')} {doc.get('specVersion')}")
    errors += schema_errors(ctx["validator"], text)

    meta = doc.get("metadata", {})
    top = meta.get("component", {})
    if top.get("name") != bin_name or top.get("type") != "application":
        errors.append(f"metadata.component is {top.get('type')} {top.get('name')}, not application {bin_name}")
    if not str(top.get("purl", "")).startswith(f"pkg:cargo/{package}@"):
        errors.append(f"metadata.component.purl {top.get('purl')} is not pkg:cargo/{package}@…")
    triples = [p["value"] for p in meta.get("properties", []) if p.get("name") == "cdx:rustc:sbom:target:triple"]
    if triples != [ctx["target"]]:
        errors.append(f"target triple {triples}, expected [{ctx['target']}]")

    components = doc.get("components", [])
    listed = {(c.get("name"), c.get("version")) for c in components}
    missing, extra = ctx["expected"] - listed, listed - ctx["expected"]
    if missing:
        errors.append(f"{len(missing)} crates {package} needs are not listed: {sorted(missing)[:10]}")
    if extra:
        errors.append(f"{len(extra)} crates listed that {package} does not need: {sorted(extra)[:10]}")
    for name in MUST_LIST:
        if not any(c.get("name") == name and c.get("version") for c in components):
            errors.append(f"{name} is not listed with a version")

    for c in components:
        label = f"{c.get('name')}@{c.get('version')}"
        if not c.get("licenses"):
            errors.append(f"{label} has no licence")
        if not str(c.get("bom-ref", "")).startswith(CRATES_IO):
            continue
        pinned = ctx["checksums"].get((c.get("name"), c.get("version")))
        hashes = [h.get("content") for h in c.get("hashes", []) if h.get("alg") == "SHA-256"]
        if pinned is None or hashes != [pinned]:
            errors.append(f"{label}: SHA-256 {hashes} is not Cargo.lock's {pinned}")

    refs = {c.get("bom-ref") for c in components} | {top.get("bom-ref")}
    for dep in doc.get("dependencies", []):
        for ref in [dep.get("ref"), *dep.get("dependsOn", [])]:
            if ref not in refs:
                errors.append(f"dependency graph names {ref}, which no component has")

    for marker in ctx["leaks"]:
        if marker in text:
            errors.append(f"the SBOM names a local path ({marker})")
    if "file:///" in text:
        errors.append("the SBOM holds an absolute file:/// URL: " + re.findall(r"file:///[^\"#]*", text)[0])
    return errors


def self_test(doc: dict, ctx: dict) -> list[str]:
    """Each mutation of a good SBOM must be refused with its own message."""

    def without_tokio(d):
        d["components"] = [c for c in d["components"] if c["name"] != "tokio"]

    def changed_hash(d):
        crate = next(c for c in d["components"] if c.get("hashes"))
        crate["hashes"][0]["content"] = "0" * 64

    def home_path(d):
        d["components"][0]["bom-ref"] = f"path+file://{ctx['leaks'][0]}/core#warden-core@0.1.0"

    def unknown_key(d):
        d["metadata"]["buildMachine"] = "ci-1"

    def old_spec(d):
        d["specVersion"] = "1.4"

    cases = [
        (without_tokio, "not listed"),
        (changed_hash, "is not Cargo.lock's"),
        (home_path, "local path"),
        (unknown_key, "schema: Additional properties"),
        (old_spec, "not CycloneDX 1.5"),
    ]
    failures = []
    if check(doc, json.dumps(doc), ctx):
        failures.append("the unmutated SBOM does not pass: " + "; ".join(check(doc, json.dumps(doc), ctx)))
    for mutate, want in cases:
        mutated = copy.deepcopy(doc)
        mutate(mutated)
        found = check(mutated, json.dumps(mutated), ctx)
        if not any(want in e for e in found):
            failures.append(f"{mutate.__name__}: expected an error with '{want}', got {found}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rel = sub.add_parser("relocate")
    rel.add_argument("root")
    rel.add_argument("files", nargs="+")
    for name in ("check", "self-test"):
        p = sub.add_parser(name)
        p.add_argument("--metadata", required=True)
        p.add_argument("--lock", required=True)
        p.add_argument("--target", required=True)
        p.add_argument("--root", required=True)
        p.add_argument("sboms", nargs="+", help="BIN=PACKAGE:FILE")
    args = parser.parse_args()
    if args.command == "relocate":
        relocate(args.root, args.files)
        return 0

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    with open(args.metadata, encoding="utf-8") as f:
        metadata = json.load(f)
    with open(args.lock, "rb") as f:
        checksums = lock_checksums(tomllib.load(f))
    validator = JsonStrictValidator(SchemaVersion.V1_5)
    failed = False
    for spec in args.sboms:
        bin_name, rest = spec.split("=", 1)
        package, path = rest.split(":", 1)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        doc = json.loads(text)
        ctx = {
            "bin": bin_name,
            "package": package,
            "target": args.target,
            "expected": expected_crates(metadata, package),
            "checksums": checksums,
            "leaks": leak_markers(args.root),
            "validator": validator,
        }
        if args.command == "self-test":
            errors = self_test(doc, ctx)
            verdict = "5 mutations refused"
        else:
            errors = check(doc, text, ctx)
            verdict = f"CycloneDX {SPEC}, {len(doc['components'])} crates with Cargo.lock's versions and hashes"
        for error in errors:
            print(f"sbom: {path}: {error}", file=sys.stderr)
        failed |= bool(errors)
        if not errors:
            print(f"sbom: {bin_name}: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
