-- warden_settle_v2: charges (or refunds) tokens and spend after the fact — while a stream
-- flows, when a request ends, and for a batch of ended requests at once — and optionally
-- releases one request's parallel slots.
--
-- KEYS: nb bucket keys, then nk budget keys, then ns slot-set keys.
-- ARGV[1..6]: nb, nk, ns, request id (slot member), own_nb, own_nk
-- then per bucket: capacity, refill per ms, delta (tokens to take; negative refunds)
-- then per budget: add (micro-USD), max, ttl (ms, for a new period key)
-- The first own_nb buckets and own_nk budgets are the calling request's; the others are
-- other requests' settlements riding along, whose levels are not reported.
-- Returns {exceeded_kind, index}: 0 when every own bucket is still >= 0 and every own
-- budget is within its max after the charge; 1 (bucket) or 3 (budget) with the first
-- index otherwise.
local nb, nk, ns = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local member, own_nb, own_nk = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local a = 7
local result = {0, 0}
for i = 1, nb do
  local cap, rate, delta = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local state = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens, ts = tonumber(state[1]), tonumber(state[2])
  if tokens == nil then tokens, ts = cap, now end
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate) - delta
  tokens = math.min(cap, tokens)
  redis.call('HSET', KEYS[i], 't', tokens, 'ts', now)
  redis.call('PEXPIRE', KEYS[i], math.ceil((cap - tokens) / rate) + 1000)
  if tokens < 0 and i <= own_nb and result[1] == 0 then result = {1, i} end
end
for k = 1, nk do
  local key = KEYS[nb + k]
  local add, max, ttl = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local spent = redis.call('INCRBY', key, add)
  if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ttl) end
  if spent > max and k <= own_nk and result[1] == 0 then result = {3, k} end
end
for j = 1, ns do
  redis.call('ZREM', KEYS[nb + nk + j], member)
end
return result
