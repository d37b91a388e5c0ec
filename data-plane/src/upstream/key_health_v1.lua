-- warden_key_health_v1: records that a provider rejected (disabled) or rate limited
-- (cooldown) one upstream key, for every node: the key's own record (read by nodes of
-- earlier versions), its entry in the index of key health (a sorted set scored by expiry
-- in ms; +inf for disabled), and one message on the key-health channel, which every node
-- applies to its local copy. Expired index entries are pruned here.
--
-- KEYS[1]: the key's health record; KEYS[2]: the index.
-- ARGV: channel, name (the index member and the node-local name), kind ('d' or 'c'),
--       cooldown ms (for 'c').
-- Returns the cooldown ms applied (a longer one already in force is kept), or -1 when the
-- key is disabled.
local channel, name, kind = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local current = redis.call('ZSCORE', KEYS[2], name)
if kind == 'd' or current == 'inf' then
  redis.call('SET', KEYS[1], 'disabled')
  redis.call('ZADD', KEYS[2], 'inf', name)
  redis.call('PUBLISH', channel, 'd ' .. name)
  return -1
end
local ms = tonumber(ARGV[4])
if current and tonumber(current) > now + ms then
  ms = tonumber(current) - now
end
redis.call('SET', KEYS[1], 'cooldown', 'PX', ms)
redis.call('ZADD', KEYS[2], now + ms, name)
redis.call('PUBLISH', channel, 'c ' .. math.floor(ms) .. ' ' .. name)
return ms
