"""Drives the Key Vault test double with the official Azure SDK for Python.

There is no Key Vault emulator, so Warden's Azure secret store is tested against an HTTPS
double of the Key Vault REST API (control-plane/tests/support/azure_double.rs). This script
checks that double with the real client: `azure.keyvault.secrets.SecretClient`, authenticated
by `azure.identity.ClientSecretCredential` (MSAL) with the double as its authority, through
Key Vault's own challenge flow (an unauthenticated request, a 401 `WWW-Authenticate: Bearer`
challenge, then a token for the challenge's resource).

Reads from the environment (all required):
  KV_TEST_VAULT_URL, KV_TEST_AUTHORITY   https://127.0.0.1:PORT (vault and Entra ID double)
  KV_TEST_CA_FILE                        PEM of the double's CA
  KV_TEST_TENANT_ID, KV_TEST_CLIENT_ID, KV_TEST_CLIENT_SECRET
  KV_TEST_API_VERSION                    the Key Vault REST version to speak (Warden's)
  KV_TEST_NAME, KV_TEST_VALUE_1, KV_TEST_VALUE_2
                                         set twice through the SDK and left in place
  KV_TEST_WARDEN_NAME, KV_TEST_WARDEN_VALUE
                                         written by Warden before this runs
  KV_TEST_WARDEN_DELETED_NAME            written and deleted by Warden before this runs
  KV_TEST_DOOMED_NAME, KV_TEST_DOOMED_VALUE
                                         set, deleted, purged and set again here
  KV_TEST_MISSING_NAME                   never set

Prints one JSON object: one entry per step with what the SDK returned (versions, flags such
as `value_matches`), or `{"error": <exception type>, "status", "code", "message"}`. Secret
values are never printed: they are compared here, and every message is scrubbed of them.
The Rust test (control-plane/tests/azure_sdk_conformance.rs) asserts on that object.
"""

import json
import os
from importlib.metadata import version as package_version

from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

env = os.environ
name = env["KV_TEST_NAME"]
value_1 = env["KV_TEST_VALUE_1"]
value_2 = env["KV_TEST_VALUE_2"]
warden_name = env["KV_TEST_WARDEN_NAME"]
warden_value = env["KV_TEST_WARDEN_VALUE"]
warden_deleted_name = env["KV_TEST_WARDEN_DELETED_NAME"]
doomed_name = env["KV_TEST_DOOMED_NAME"]
doomed_value = env["KV_TEST_DOOMED_VALUE"]
missing_name = env["KV_TEST_MISSING_NAME"]
client_secret = env["KV_TEST_CLIENT_SECRET"]
ca_file = env["KV_TEST_CA_FILE"]

SECRETS = [value_1, value_2, warden_value, doomed_value, client_secret]

# MSAL against the double: the authority is not a known Entra ID host, so instance
# discovery (a call to login.microsoftonline.com) is off; MSAL still reads the tenant's
# OpenID configuration from the double to find its token endpoint.
credential = ClientSecretCredential(
    env["KV_TEST_TENANT_ID"],
    env["KV_TEST_CLIENT_ID"],
    client_secret,
    authority=env["KV_TEST_AUTHORITY"],
    disable_instance_discovery=True,
    connection_verify=ca_file,
    retry_total=0,
)
# The challenge names resource https://vault.azure.net, which the SDK checks against the
# vault's host; the double is on 127.0.0.1, so that one check is off.
client = SecretClient(
    env["KV_TEST_VAULT_URL"],
    credential,
    api_version=env["KV_TEST_API_VERSION"],
    verify_challenge_resource=False,
    connection_verify=ca_file,
    retry_total=0,
    connection_timeout=5,
    read_timeout=10,
)

result = {
    "packages": {
        p: package_version(p)
        for p in ("azure-keyvault-secrets", "azure-identity", "azure-core", "msal")
    },
    "credential": type(credential).__name__,
}


def redact(text):
    for secret in SECRETS:
        text = text.replace(secret, "<redacted>")
    return text


def error_of(e):
    out = {"error": type(e).__name__}
    if isinstance(e, HttpResponseError):
        out["status"] = e.status_code
        out["code"] = e.error.code if e.error else None
    out["message"] = redact(str(e))[:400]
    return out


def step(key, fn):
    try:
        result[key] = fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
        result[key] = error_of(e)


def secret_facts(secret, expected):
    props = secret.properties
    return {
        "name": secret.name,
        "version": props.version,
        "value_matches": secret.value == expected,
        "content_type": props.content_type,
        "tags": props.tags,
        "enabled": props.enabled,
        "has_created_on": props.created_on is not None,
        "recovery_level": props.recovery_level,
        "recoverable_days": props.recoverable_days,
        "vault_url": props.vault_url,
    }


def deleted_facts(deleted):
    return {
        "name": deleted.name,
        "version": deleted.properties.version,
        "recovery_id": deleted.recovery_id,
        "has_deleted_date": deleted.deleted_date is not None,
        "has_scheduled_purge_date": deleted.scheduled_purge_date is not None,
        "has_value": getattr(deleted, "value", None) is not None,
    }


# Versions: set, read, set again, read the latest and the older one by its id, list them.
first = {}


def set_first():
    s = client.set_secret(name, value_1, content_type="text/plain", tags={"owner": "warden-test"})
    first["version"] = s.properties.version
    return secret_facts(s, value_1)


step("set_first", set_first)
step("get_first", lambda: secret_facts(client.get_secret(name), value_1))
step("set_second", lambda: secret_facts(client.set_secret(name, value_2), value_2))
step("get_latest", lambda: secret_facts(client.get_secret(name), value_2))
step("get_older", lambda: secret_facts(client.get_secret(name, first.get("version")), value_1))


def list_versions(secret_name, page_size):
    paged = client.list_properties_of_secret_versions(secret_name, max_page_size=page_size)
    seen = [[p.version for p in page] for page in paged.by_page()]
    return {"pages": len(seen), "versions": [v for page in seen for v in page]}


step("list_versions", lambda: list_versions(name, None))
# One item a page: the SDK follows each nextLink.
step("list_versions_paged", lambda: list_versions(name, 1))
step("list_versions_missing", lambda: list_versions(missing_name, None))

# What Warden wrote, and what Warden deleted, as the SDK sees it.
step("get_warden_written", lambda: secret_facts(client.get_secret(warden_name), warden_value))
step("get_warden_deleted", lambda: deleted_facts(client.get_deleted_secret(warden_deleted_name)))


# Soft delete: the poller waits until the secret shows in /deletedsecrets.
def delete_doomed():
    client.set_secret(doomed_name, doomed_value)
    poller = client.begin_delete_secret(doomed_name)
    facts = deleted_facts(poller.result())
    poller.wait(timeout=20)
    facts["poller_done"] = poller.done()
    return facts


step("delete", delete_doomed)
step("get_deleted", lambda: deleted_facts(client.get_deleted_secret(doomed_name)))
step("get_after_delete", lambda: secret_facts(client.get_secret(doomed_name), doomed_value))
step("set_while_deleted", lambda: secret_facts(client.set_secret(doomed_name, doomed_value), doomed_value))
step("purge", lambda: client.purge_deleted_secret(doomed_name) or {"purged": True})
step("get_deleted_after_purge", lambda: deleted_facts(client.get_deleted_secret(doomed_name)))
step("set_after_purge", lambda: secret_facts(client.set_secret(doomed_name, doomed_value), doomed_value))

# Missing secrets.
step("get_missing", lambda: secret_facts(client.get_secret(missing_name), ""))
step("delete_missing", lambda: deleted_facts(client.begin_delete_secret(missing_name).result()))

print(json.dumps(result, sort_keys=True))
