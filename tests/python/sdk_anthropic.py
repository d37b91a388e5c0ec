"""Drives a Warden node with the official `anthropic` Python SDK.

Reads WARDEN_URL, WARDEN_TOKEN and WARDEN_MODEL. WARDEN_URL is the node's base URL
WITHOUT `/v1` (e.g. `http://127.0.0.1:8080`): the SDK appends `/v1/messages` itself, unlike
the `openai` SDK whose base URL ends in `/v1`.

The SDK sends its key as `Authorization: Bearer <key>`; with WARDEN_AUTH_HEADER=x-api-key the
script sends it as `x-api-key: <key>` instead (no Authorization header), as Claude Code and
older SDK versions do.

Runs a plain message, a streamed message (raw events: their types in order, as the SDK
yields them, which drops `ping`), the SDK's stream helper, a tool call (tools=[get_weather]
and a prompt about the weather: a `tool_use` block is expected) and its follow-up with the
tool result, a streamed tool call, `count_tokens`, and two calls that must fail: a bad
credential (AuthenticationError, 401) and a model the token may not use
(PermissionDeniedError, 403). Prints one JSON object with what it saw; the Rust test asserts
on that object.
"""

import json
import os
import sys
import time

import anthropic
from anthropic import omit

base_url = os.environ["WARDEN_URL"]
token = os.environ["WARDEN_TOKEN"]
model = os.environ["WARDEN_MODEL"]
auth_header = os.environ.get("WARDEN_AUTH_HEADER", "authorization").lower()


def make_client(key):
    headers = None
    if auth_header == "x-api-key":
        headers = {"x-api-key": key, "Authorization": omit}
    return anthropic.Anthropic(
        base_url=base_url, api_key=key, default_headers=headers, max_retries=0, timeout=20
    )


def text_of(message):
    return "".join(block.text for block in message.content if block.type == "text")


def error_case(prefix, call):
    """Runs a call that must fail; records the exception class, status and error type."""
    try:
        call()
        result[prefix + "_error"] = None
    except anthropic.APIStatusError as e:
        result[prefix + "_error"] = type(e).__name__
        result[prefix + "_status"] = e.status_code
        body = e.body if isinstance(e.body, dict) else {}
        result[prefix + "_error_type"] = (body.get("error") or {}).get("type")


client = make_client(token)
result = {"sdk_version": anthropic.__version__}

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city name"}},
        "required": ["city"],
    },
}
WEATHER_PROMPT = {"role": "user", "content": "What is the weather in Paris?"}

plain = client.messages.create(
    model=model,
    max_tokens=256,
    messages=[{"role": "user", "content": "hello from the sdk"}],
)
result["plain_type"] = plain.type
result["plain_role"] = plain.role
result["plain_content"] = text_of(plain)
result["plain_stop_reason"] = plain.stop_reason
result["plain_input_tokens"] = plain.usage.input_tokens
result["plain_output_tokens"] = plain.usage.output_tokens

pieces = []
event_types = []
arrivals = []
stop_reason = None
output_tokens = None
start = time.monotonic()
stream = client.messages.create(
    model=model,
    max_tokens=256,
    messages=[{"role": "user", "content": "stream these words please"}],
    stream=True,
)
for event in stream:
    arrivals.append(time.monotonic() - start)
    event_types.append(event.type)
    if event.type == "content_block_delta" and event.delta.type == "text_delta":
        pieces.append(event.delta.text)
    elif event.type == "message_delta":
        stop_reason = event.delta.stop_reason
        output_tokens = event.usage.output_tokens
result["stream_content"] = "".join(pieces)
result["stream_event_types"] = event_types
result["stream_events"] = len(arrivals)
result["stream_stop_reason"] = stop_reason
result["stream_output_tokens"] = output_tokens

with client.messages.stream(
    model=model,
    max_tokens=256,
    messages=[{"role": "user", "content": "helper stream please"}],
) as helper:
    helper_text = "".join(helper.text_stream)
    helper_final = helper.get_final_message()
result["helper_stream_content"] = helper_text
result["helper_stream_stop_reason"] = helper_final.stop_reason

tool = client.messages.create(
    model=model, max_tokens=256, tools=[WEATHER_TOOL], messages=[WEATHER_PROMPT]
)
tool_use = next((block for block in tool.content if block.type == "tool_use"), None)
result["tool_stop_reason"] = tool.stop_reason
result["tool_name"] = tool_use.name if tool_use else None
result["tool_input"] = tool_use.input if tool_use else None
result["tool_use_id"] = tool_use.id if tool_use else None
if tool_use:
    followup = client.messages.create(
        model=model,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[
            WEATHER_PROMPT,
            {"role": "assistant", "content": tool.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": tool_use.id, "content": "sunny, 18 C"}
                ],
            },
        ],
    )
    result["tool_followup_stop_reason"] = followup.stop_reason
    result["tool_followup_content"] = text_of(followup)

with client.messages.stream(
    model=model, max_tokens=256, tools=[WEATHER_TOOL], messages=[WEATHER_PROMPT]
) as tool_stream:
    streamed_tool = tool_stream.get_final_message()
streamed_use = next((b for b in streamed_tool.content if b.type == "tool_use"), None)
result["stream_tool_stop_reason"] = streamed_tool.stop_reason
result["stream_tool_name"] = streamed_use.name if streamed_use else None
result["stream_tool_input"] = streamed_use.input if streamed_use else None

count = client.messages.count_tokens(
    model=model,
    system="be brief",
    tools=[WEATHER_TOOL],
    messages=[{"role": "user", "content": "how many tokens is this?"}],
)
result["count_input_tokens"] = count.input_tokens

bad = make_client("not-a-real-token")
error_case(
    "bad_credential",
    lambda: bad.messages.create(
        model=model, max_tokens=16, messages=[{"role": "user", "content": "x"}]
    ),
)
error_case(
    "forbidden",
    lambda: client.messages.create(
        model="model-that-is-not-allowed",
        max_tokens=16,
        messages=[{"role": "user", "content": "x"}],
    ),
)

json.dump(result, sys.stdout)
