"""Drives a Warden node with the official `openai` Python SDK.

Reads WARDEN_URL (base URL ending in /v1), WARDEN_TOKEN and WARDEN_MODEL; runs a plain and
a streaming chat completion, a tool call (tools=[get_weather] and a prompt about the
weather: `tool_calls[0].function.name` is expected), a model listing and a call with a bad
credential; prints one JSON object with what it saw. The Rust test asserts on that object.
"""

import json
import os
import sys
import time

import openai

base_url = os.environ["WARDEN_URL"]
token = os.environ["WARDEN_TOKEN"]
model = os.environ["WARDEN_MODEL"]

client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=20)
result = {"sdk_version": openai.__version__}

plain = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "hello from the sdk"}]
)
result["plain_content"] = plain.choices[0].message.content
result["plain_finish_reason"] = plain.choices[0].finish_reason
result["plain_total_tokens"] = plain.usage.total_tokens

pieces = []
arrivals = []
start = time.monotonic()
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "stream these words please"}],
    stream=True,
)
finish = None
for chunk in stream:
    arrivals.append(time.monotonic() - start)
    if chunk.choices:
        delta = chunk.choices[0].delta
        if delta.content:
            pieces.append(delta.content)
        if chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
result["stream_content"] = "".join(pieces)
result["stream_chunks"] = len(arrivals)
result["stream_finish_reason"] = finish

tool = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    tools=[
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a given city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ],
)
tool_calls = tool.choices[0].message.tool_calls or []
result["tool_finish_reason"] = tool.choices[0].finish_reason
result["tool_name"] = tool_calls[0].function.name if tool_calls else None
result["tool_arguments"] = json.loads(tool_calls[0].function.arguments) if tool_calls else None

result["models"] = sorted(m.id for m in client.models.list().data)

bad = openai.OpenAI(base_url=base_url, api_key="not-a-real-token", max_retries=0, timeout=20)
try:
    bad.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    result["bad_credential_error"] = None
except openai.AuthenticationError as e:
    result["bad_credential_error"] = type(e).__name__
    result["bad_credential_status"] = e.status_code

try:
    client.chat.completions.create(
        model="model-that-is-not-allowed", messages=[{"role": "user", "content": "x"}]
    )
    result["forbidden_error"] = None
except openai.APIStatusError as e:
    result["forbidden_error"] = type(e).__name__
    result["forbidden_status"] = e.status_code

json.dump(result, sys.stdout)
