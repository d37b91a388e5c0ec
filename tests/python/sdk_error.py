"""Makes one call with an official SDK and reports the exception it raised.

Env: WARDEN_SDK (`openai` or `anthropic`), WARDEN_URL (with /v1 for openai, without for
anthropic), WARDEN_TOKEN, WARDEN_MODEL, and optionally WARDEN_BAD_BODY=1 to send a request
the gateway must refuse as malformed. Prints one JSON object: the exception class, the
HTTP status and the Retry-After header (or `null`s when the call succeeded).
"""

import json
import os
import sys

sdk = os.environ["WARDEN_SDK"]
base_url = os.environ["WARDEN_URL"]
token = os.environ["WARDEN_TOKEN"]
model = os.environ["WARDEN_MODEL"]
bad_body = os.environ.get("WARDEN_BAD_BODY") == "1"

result = {"error": None, "status": None, "retry_after": None}
try:
    if sdk == "openai":
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=20)
        messages = [] if bad_body else [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model=model, messages=messages)
    else:
        import anthropic

        client = anthropic.Anthropic(base_url=base_url, api_key=token, max_retries=0, timeout=20)
        messages = [] if bad_body else [{"role": "user", "content": "hi"}]
        client.messages.create(model=model, max_tokens=16, messages=messages)
except Exception as e:  # noqa: BLE001 - report whatever the SDK raised
    result["error"] = type(e).__name__
    response = getattr(e, "response", None)
    result["status"] = getattr(e, "status_code", None)
    if response is not None:
        result["retry_after"] = response.headers.get("retry-after")
json.dump(result, sys.stdout)
