-- warden_key_health_load_v1: the key health in force, read by a node when it (re)subscribes
-- to the key-health channel and periodically after.
--
-- KEYS[1]: the index of key health (sorted set scored by expiry in ms; +inf for disabled).
-- Returns a flat list: name, remaining ms (-1 for disabled), name, remaining ms, …
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entries = redis.call('ZRANGEBYSCORE', KEYS[1], now + 1, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #entries, 2 do
  table.insert(out, entries[i])
  if entries[i + 1] == 'inf' then
    table.insert(out, -1)
  else
    table.insert(out, math.floor(tonumber(entries[i + 1]) - now))
  end
end
return out
