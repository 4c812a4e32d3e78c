-- Verify a code: check lock, supersession and expiry, compare, count, and
-- consume on success. Atomic, so of many concurrent guesses exactly the
-- allowed number are counted and at most one succeeds.
--
-- KEYS: 1 challenge hash, 2 login hash, 3 lock
-- ARGV: 1 now ms, 2 challenge id, 3 code hmac, 4 max failures,
--       5 lock duration ms, 6 login window ms
local now, id, given = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local maxFailures, lockFor, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])

local ch = redis.call('HMGET', KEYS[1], 'st', 'h', 'exp', 'ch')
local status, stored, expires, channel = ch[1], ch[2], tonumber(ch[3] or '0'), ch[4]
if not status then return {'NOT_FOUND'} end

local lockedUntil = tonumber(redis.call('GET', KEYS[3]) or '0')
if lockedUntil > now then return {'LOCKED', 0, lockedUntil, 0} end
if status == 'APPROVED' then return {'ALREADY_USED'} end

local login = redis.call('HMGET', KEYS[2], 'cur', 'failures', 'start')
local failures = tonumber(login[2] or '0')
-- A challenge that locked, once the lock is over, is just a rejected code.
if status == 'LOCKED' then status = 'REJECTED' end
if status ~= 'PENDING' then return {status, maxFailures - failures} end

-- A newer code voids this one, and so does the end of its login.
if login[1] ~= id or now - tonumber(login[3] or '0') >= window then
  redis.call('HSET', KEYS[1], 'st', 'EXPIRED')
  redis.call('HDEL', KEYS[1], 'h')
  return {'EXPIRED', maxFailures - failures}
end
if now >= expires then
  -- Expiry is unsuccessful (email becomes available) but not a wrong code.
  redis.call('HSET', KEYS[1], 'st', 'EXPIRED')
  redis.call('HDEL', KEYS[1], 'h')
  redis.call('HSET', KEYS[2], 'email', 1, 'last', 0)
  return {'EXPIRED', maxFailures - failures}
end

-- Compare every byte: no early exit on the first difference.
local diff = 0
if #given ~= #stored then diff = 1 end
for i = 1, #stored do
  if string.byte(given, i) ~= string.byte(stored, i) then diff = diff + 1 end
end

if diff == 0 then
  redis.call('HSET', KEYS[1], 'st', 'APPROVED')
  redis.call('HDEL', KEYS[1], 'h')
  redis.call('DEL', KEYS[2])
  return {'APPROVED', maxFailures - failures, channel}
end

failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
redis.call('HSET', KEYS[2], 'email', 1, 'last', 0)
if failures >= maxFailures then
  lockedUntil = now + lockFor
  redis.call('SET', KEYS[3], lockedUntil, 'PX', lockFor)
  redis.call('HSET', KEYS[1], 'st', 'LOCKED')
  redis.call('HDEL', KEYS[1], 'h')
  redis.call('DEL', KEYS[2])
  return {'LOCKED', 0, lockedUntil, 1}
end
return {'REJECTED', maxFailures - failures}
