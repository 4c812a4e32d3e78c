-- Void a user's pending codes: they went to an address the user no
-- longer has. The codes answer EXPIRED from then on, and the logins may
-- ask for a new code at once.
--
-- KEYS: 1..n login hashes, n+1.. challenge hashes
-- ARGV: 1 n
local n = tonumber(ARGV[1])
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HDEL', KEYS[i], 'cur', 'curexp')
    redis.call('HSET', KEYS[i], 'last', 0)
  end
end
local voided = 0
for i = n + 1, #KEYS do
  if redis.call('HGET', KEYS[i], 'st') == 'PENDING' then
    redis.call('HSET', KEYS[i], 'st', 'EXPIRED')
    redis.call('HDEL', KEYS[i], 'h')
    voided = voided + 1
  end
end
return voided
