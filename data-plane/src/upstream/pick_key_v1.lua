-- warden_pick_key_v1: round-robin over a provider's keys, skipping keys that are cooling
-- down or disabled on any node.
--
-- KEYS[1]: the provider's cursor; KEYS[2..n+1]: each key's health key.
-- ARGV: n, then n flags (1 = the caller already tried this key in this request).
-- Returns {index (1-based), 0} for the chosen key, or {0, wait_ms} when none is usable
-- (wait_ms: shortest remaining cooldown, -1 when every key is disabled).
local n = tonumber(ARGV[1])
local start = redis.call('INCR', KEYS[1])
local wait = -1
for step = 0, n - 1 do
  local i = ((start + step) % n) + 1
  if ARGV[1 + i] ~= '1' then
    local ttl = redis.call('PTTL', KEYS[1 + i])
    if ttl == -2 then
      return {i, 0}
    end
    if ttl > 0 and (wait < 0 or ttl < wait) then wait = ttl end
  end
end
return {0, wait}
