#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzzing/corpus/<target>/seed-*): real
examples of what each parser reads. Run from anywhere; needs `cryptography` for the enc:v2
seeds (the repository's .venv has it). Seeds are stable: rerunning rewrites the same files,
except that the JWT seeds carry an expiry in 2100. Regression inputs found by fuzzing are
kept next to them as regression-*, never rewritten here."""

import base64, hashlib, hmac, json, os, struct, zlib
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parent.parent / "corpus"


def write(target, name, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


def j(v):
    return json.dumps(v, indent=None).encode()


# credential: well-formed credentials of each kind (fixed bytes), near misses.
for i, prefix in enumerate(["wk_", "wa_", "wn_"]):
    raw = bytes((i * 37 + k) % 256 for k in range(32))
    body = raw + struct.pack(">I", zlib.crc32(raw))
    cred = prefix + base64.urlsafe_b64encode(body).decode().rstrip("=")
    write("credential", f"{prefix[:2]}", cred)
    write("credential", f"{prefix[:2]}-bad-crc", cred[:-1] + ("A" if cred[-1] != "A" else "B"))
write("credential", "short", "wk_abc")
write("credential", "bearer", "Bearer wk_" + "A" * 48)

# jwt: HS256 tokens under the corpus key (fuzzing/src/jwt.rs), and attacks on them.
SECRET = b"warden fuzz corpus hs256 secret, not a real key"


def b64(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def token(header, claims, key=SECRET):
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64(sig)


claims = {"iss": "warden", "sub": "svc-a", "aud": "warden", "exp": 4102444800, "nbf": 0,
          "iat": 0, "jti": "jti-1", "scope": "read write", "models": ["*"]}
hdr = {"alg": "HS256", "typ": "JWT", "kid": "k-fuzz-hs"}
good = token(hdr, claims)
write("jwt", "valid", good)
write("jwt", "alg-none", b64(json.dumps({"alg": "none", "kid": "k-fuzz-hs"}).encode()) + "." + good.split(".")[1] + ".")
write("jwt", "kid-traversal", token({**hdr, "kid": "../../etc/passwd"}, claims))
write("jwt", "kid-nul", token({**hdr, "kid": "k-fuzz-hs\u0000x"}, claims))
write("jwt", "wrong-iss", token(hdr, {**claims, "iss": "evil"}))
write("jwt", "two-signatures", good + "." + good.split(".")[2])
write("jwt", "json-serialization", json.dumps({"payload": good.split(".")[1], "signatures": [
    {"protected": good.split(".")[0], "signature": good.split(".")[2]},
    {"protected": good.split(".")[0], "signature": good.split(".")[2]}]}))
write("jwt", "no-jti", token(hdr, {k: v for k, v in claims.items() if k != "jti"}))
write("jwt", "crit", token({**hdr, "crit": ["exp"]}, claims))

# request / translate_request: client requests of every endpoint.
chat = {"model": "gpt-4o", "messages": [{"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters":
                   {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "auto", "max_tokens": 100, "stream": True,
        "stream_options": {"include_usage": True}, "n": 1, "temperature": 0.5, "stop": ["\n\n"]}
messages = {"model": "claude-3", "max_tokens": 1024, "system": [{"type": "text", "text": "be brief",
            "cache_control": {"type": "ephemeral"}}], "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
             {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "sunny"}]},
             {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"], "stream": False, "metadata": {"user_id": "u1"}}
for target in ["request", "translate_request"]:
    write(target, "chat", j(chat))
    write(target, "messages", j(messages))
    write(target, "chat-minimal", j({"model": "m", "messages": [{"role": "user", "content": "x"}]}))
    write(target, "embeddings", j({"model": "text-embedding-3-small", "input": ["a", "b"]}))
    write(target, "responses", j({"model": "gpt-4o", "input": "hi", "store": True,
                                  "previous_response_id": "resp_1", "max_output_tokens": 10}))
    write(target, "json-mode", j({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                  "response_format": {"type": "json_schema", "json_schema":
                                                      {"name": "o", "schema": {"type": "object"}}}}))
write("request", "nested", b"[" * 200 + b"]" * 200)
write("request", "bad-utf8-model", b'{"model":"\xff\xfe","messages":[{"role":"user","content":"x"}]}')

# translate_response: provider answers and error bodies.
openai_answer = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello",
                  "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f",
                   "arguments": "{\"a\":1}"}}], "refusal": None}, "finish_reason": "tool_calls"}],
                 "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                           "prompt_tokens_details": {"cached_tokens": 2}}}
anthropic_answer = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3",
                    "content": [{"type": "text", "text": "hello"}, {"type": "thinking", "thinking": "x",
                                "signature": "s"}, {"type": "tool_use", "id": "toolu_1", "name": "f",
                                "input": {"a": 1}}], "stop_reason": "tool_use", "stop_sequence": None,
                    "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 2,
                              "cache_creation_input_tokens": 1}}
write("translate_response", "openai", j(openai_answer))
write("translate_response", "anthropic", j(anthropic_answer))
write("translate_response", "openai-error", j({"error": {"message": "bad", "type": "invalid_request_error",
                                                          "param": None, "code": "invalid_api_key"}}))
write("translate_response", "anthropic-error", j({"type": "error", "error": {"type": "overloaded_error",
                                                                             "message": "busy"}}))

# sse: both providers' streams (two cut bytes first: see fuzzing/src/sse.rs).
openai_chunks = [
    {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
    {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"content": "hé"}}]},
    {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}}]},
    {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}}]},
    {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
]
openai_sse = "".join(f"data: {json.dumps(c)}\n\n" for c in openai_chunks) + "data: [DONE]\n\n"
anthropic_events = [
    ("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "usage": {"input_tokens": 3, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hé"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
    ("message_stop", {"type": "message_stop"}),
]
anthropic_sse = "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in anthropic_events)
write("sse", "openai", b"\x02\x07\x10" + openai_sse.encode())
write("sse", "anthropic", b"\x02\x05\x33" + anthropic_sse.encode())
write("sse", "crlf-bom-comments", b"\x01\x01" + "\ufeff: hi\r\ndata: a\r\ndata: b\r\n\r\nevent: x\rdata: {}\r\r".encode())
write("sse", "error-event", b"\x00" + b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n')

# audit_detail: details as both planes write them, and free text.
write("audit_detail", "request", 'request_id=r-1 endpoint=/v1/chat/completions client_ip=127.0.0.0 '
      'user_agent="curl/8.0 (x)" credential=vk_1234****cdef provider=openai model_served=gpt-4o '
      'tokens_in=5 tokens_out=7 cost_usd=0.0001 latency_ms=12 status=200')
write("audit_detail", "quoted", 'reason=jwt_unknown_kid count=3 message="a \\"quoted\\" \\\\ value\\nline\\u{7}"')
write("audit_detail", "free-text", "issued token for svc-a with scopes read write")
write("audit_detail", "empty-value", 'name="" owner=ops')

# cipher: values sealed under the fuzz key (fuzzing/src/cipher.rs), name "n".
key = bytes([0x42]) * 32
kid = hashlib.sha256(b"warden master key id\0" + key).hexdigest()[:8]
for i, (name, plain) in enumerate([("n", b"sk-test-provider-key"), ("n", b""), ("warden/jwt/k1", b"\x00\x01")]):
    nonce = bytes([i]) * 12
    sealed = base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plain, name.encode())).decode()
    prefix = "" if name == "n" else name + "\0"
    write("cipher", f"v2-{i}", f"{prefix}enc:v2:{kid}:{sealed}")
    write("cipher", f"v1-{i}", f"{prefix}enc:v1:{sealed}")
write("cipher", "unknown-kid", "enc:v2:deadbeef:AAAA")
write("cipher", "malformed-kid", "enc:v2:../etc:AAAA")
write("cipher", "plaintext", "sk-plaintext")
