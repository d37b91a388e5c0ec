"""A DLP `block` rule as the official SDKs see it.

Reads WARDEN_URL (the node's base URL without `/v1`), WARDEN_TOKEN, WARDEN_MODEL (an
OpenAI-format alias), WARDEN_CLAUDE_MODEL (an Anthropic-format alias) and WARDEN_SECRET (a
value a `block` rule matches). Sends it once through each SDK and prints one JSON object:
the error class, status, code / type and message each SDK raised.
"""

import json
import os

import anthropic
import openai

base_url = os.environ["WARDEN_URL"]
token = os.environ["WARDEN_TOKEN"]
secret = os.environ["WARDEN_SECRET"]
out = {}

client = openai.OpenAI(base_url=base_url + "/v1", api_key=token, max_retries=0, timeout=20)
try:
    client.chat.completions.create(
        model=os.environ["WARDEN_MODEL"],
        messages=[{"role": "user", "content": "my key is " + secret}],
    )
    out["openai_error"] = None
except openai.APIStatusError as e:
    out["openai_error"] = type(e).__name__
    out["openai_status"] = e.status_code
    out["openai_code"] = e.code
    out["openai_message"] = e.message

claude = anthropic.Anthropic(base_url=base_url, api_key=token, max_retries=0, timeout=20)
try:
    claude.messages.create(
        model=os.environ["WARDEN_CLAUDE_MODEL"],
        max_tokens=16,
        messages=[{"role": "user", "content": [{"type": "text", "text": "key " + secret}]}],
    )
    out["anthropic_error"] = None
except anthropic.APIStatusError as e:
    out["anthropic_error"] = type(e).__name__
    out["anthropic_status"] = e.status_code
    out["anthropic_type"] = e.body.get("error", {}).get("type") if isinstance(e.body, dict) else None
    out["anthropic_message"] = e.message

print(json.dumps(out))
