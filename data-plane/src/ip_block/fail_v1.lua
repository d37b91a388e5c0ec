-- Counts failed logins of one client address and blocks it at the threshold, atomically
-- across every node. Runs only on the failure path (never per request).
-- KEYS[1] failure counter, KEYS[2] block key, KEYS[3] sorted set of blocks by expiry
-- ARGV: failures to add, window ms, threshold, block duration ms, channel, address
-- Returns {count, newly_blocked (0/1), expiry ms (0: not blocked)}; count -1: the address
-- was already blocked (nothing counted).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then
  return {-1, 0, now + ttl}
end
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if count < tonumber(ARGV[3]) then
  return {count, 0, 0}
end
local duration = tonumber(ARGV[4])
local expiry = now + duration
redis.call('SET', KEYS[2], count, 'PX', duration)
redis.call('DEL', KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZADD', KEYS[3], expiry, ARGV[6])
if redis.call('PTTL', KEYS[3]) < duration then
  redis.call('PEXPIRE', KEYS[3], duration)
end
redis.call('PUBLISH', ARGV[5], 'b ' .. ARGV[6] .. ' ' .. expiry)
return {count, 1, expiry}
