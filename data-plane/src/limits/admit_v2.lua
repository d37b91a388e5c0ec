-- warden_ratelimit_v2: one atomic admission decision for every limit that applies to a
-- request. Time comes from the Redis server, so nodes with skewed clocks agree. Before
-- deciding it applies the settlements waiting on the calling node (tokens and spend of
-- requests that ended since its last call), so the node's own admissions see them.
--
-- KEYS: nb bucket keys, then ns slot-set keys, then nk budget keys; then sb bucket keys and
-- sk budget keys of the waiting settlements.
-- ARGV[1..7]: nb, ns, nk, request id (slot member), slot lease (ms), sb, sk
-- then per bucket: capacity, refill per ms, cost
-- then per slot set: max in flight
-- then per budget: max spend (micro-USD)
-- then per settlement bucket: capacity, refill per ms, delta (negative refunds)
-- then per settlement budget: add (micro-USD), ttl (ms, for a new period key)
-- Returns {1, now_ms, remaining_1, reset_ms_1, …} when admitted (remaining and reset for
-- each bucket, after the deduction), or {0, kind, index, retry_after_ms} when denied
-- (kind: 1 bucket, 2 parallel slots, 3 budget); nothing of the request is recorded when
-- denied (the settlements are applied either way).
local nb, ns, nk = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local member, lease = ARGV[4], tonumber(ARGV[5])
local sb, sk = tonumber(ARGV[6]), tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = 8 + nb * 3 + ns + nk
for i = 1, sb do
  local key = KEYS[nb + ns + nk + i]
  local cap, rate, delta = tonumber(ARGV[s]), tonumber(ARGV[s + 1]), tonumber(ARGV[s + 2])
  s = s + 3
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens, ts = tonumber(state[1]), tonumber(state[2])
  if tokens == nil then tokens, ts = cap, now end
  tokens = math.min(cap, math.min(cap, tokens + math.max(0, now - ts) * rate) - delta)
  redis.call('HSET', key, 't', tokens, 'ts', now)
  redis.call('PEXPIRE', key, math.ceil((cap - tokens) / rate) + 1000)
end
for k = 1, sk do
  local key = KEYS[nb + ns + nk + sb + k]
  local add, ttl = tonumber(ARGV[s]), tonumber(ARGV[s + 1])
  s = s + 2
  redis.call('INCRBY', key, add)
  if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ttl) end
end
local a = 8
local levels = {}
for i = 1, nb do
  local cap, rate, cost = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local state = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens, ts = tonumber(state[1]), tonumber(state[2])
  if tokens == nil then tokens, ts = cap, now end
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
  if tokens < cost then
    return {0, 1, i, math.ceil((cost - tokens) / rate)}
  end
  levels[i] = {tokens - cost, cap, rate}
end
for j = 1, ns do
  local key, max = KEYS[nb + j], tonumber(ARGV[a])
  a = a + 1
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= max then
    return {0, 2, j, 1000}
  end
end
for k = 1, nk do
  local key, max = KEYS[nb + ns + k], tonumber(ARGV[a])
  a = a + 1
  local spent = tonumber(redis.call('GET', key) or '0')
  if spent >= max then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then ttl = 60000 end
    return {0, 3, k, ttl}
  end
end
local out = {1, now}
for i = 1, nb do
  local left, cap, rate = levels[i][1], levels[i][2], levels[i][3]
  redis.call('HSET', KEYS[i], 't', left, 'ts', now)
  local full_ms = math.ceil((cap - left) / rate)
  redis.call('PEXPIRE', KEYS[i], full_ms + 1000)
  table.insert(out, math.floor(left))
  table.insert(out, full_ms)
end
for j = 1, ns do
  redis.call('ZADD', KEYS[nb + j], now + lease, member)
  redis.call('PEXPIRE', KEYS[nb + j], lease)
end
return out
