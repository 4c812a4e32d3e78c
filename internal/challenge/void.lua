-- Void a user's pending codes: they went to an address the user no
-- longer has. The codes answer EXPIRED from then on, and the logins may
-- ask for a new code at once.
--
-- KEYS: 1 the user's kept replies (hash), 2..n+1 login hashes,
--       n+2.. challenge hashes
-- ARGV: 1 n, 2 request id, 3 kept reply ttl ms
--
-- A call retried with the same request id gets the first call's reply,
-- and cannot void a code issued between the two.
local kept = redis.call('HGET', KEYS[1], ARGV[2])
if kept then return tonumber(kept) end

local n = tonumber(ARGV[1])
for i = 2, n + 1 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HDEL', KEYS[i], 'cur', 'curexp')
    redis.call('HSET', KEYS[i], 'last', 0)
  end
end
local voided = 0
for i = n + 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'st') == 'PENDING' then
    redis.call('HSET', KEYS[i], 'st', 'EXPIRED')
    redis.call('HDEL', KEYS[i], 'h')
    voided = voided + 1
  end
end
redis.call('HSET', KEYS[1], ARGV[2], voided)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return voided
