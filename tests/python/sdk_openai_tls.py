"""Drives a Warden node served over HTTPS with the official `openai` Python SDK, and probes
its TLS with Python's `ssl` module.

Reads WARDEN_URL (an https:// base URL ending in /v1), WARDEN_TOKEN, WARDEN_MODEL and
WARDEN_CA_FILE (the only CA trusted). Runs a plain and a streaming chat completion through
the SDK, then makes raw handshakes: the default (what version and ALPN protocol the node
picks), TLS 1.2 only, and TLS 1.1 only (the SSL error text is reported: OpenSSL names an
alert sent by the node "... alert ..."). Prints one JSON object; the Rust test asserts on it.
"""

import json
import os
import socket
import ssl
import sys
import urllib.parse
import warnings

import openai

base_url = os.environ["WARDEN_URL"]
token = os.environ["WARDEN_TOKEN"]
model = os.environ["WARDEN_MODEL"]
ca_file = os.environ["WARDEN_CA_FILE"]

context = ssl.create_default_context(cafile=ca_file)
client = openai.OpenAI(
    base_url=base_url,
    api_key=token,
    max_retries=0,
    timeout=20,
    http_client=openai.DefaultHttpxClient(verify=context),
)
result = {"sdk_version": openai.__version__}

plain = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "hello over tls"}]
)
result["plain_content"] = plain.choices[0].message.content

pieces = []
for chunk in client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "stream over tls"}],
    stream=True,
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
result["stream_content"] = "".join(pieces)

url = urllib.parse.urlsplit(base_url)
address = (url.hostname, url.port)


def probe(ctx):
    """One handshake under `ctx`: (version, alpn) or the error text."""
    with socket.create_connection(address, timeout=5) as sock:
        try:
            with ctx.wrap_socket(sock, server_hostname=url.hostname) as tls:
                return {"version": tls.version(), "alpn": tls.selected_alpn_protocol()}
        except (ssl.SSLError, OSError) as e:
            return {"error": str(e)}


ctx = ssl.create_default_context(cafile=ca_file)
ctx.set_alpn_protocols(["h2", "http/1.1"])
result["default"] = probe(ctx)

ctx = ssl.create_default_context(cafile=ca_file)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.set_alpn_protocols(["http/1.1"])
result["tls12"] = probe(ctx)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    ctx = ssl.create_default_context(cafile=ca_file)
    # OpenSSL 3 refuses TLS 1.1 itself below security level 0: lower it so that the
    # ClientHello really offers TLS 1.1 and the answer is the node's.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1_1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    result["tls11"] = probe(ctx)

json.dump(result, sys.stdout)
