-- A code could not be delivered: the challenge is dead, and the login may
-- fall back to email and ask again at once.
--
-- KEYS: 1 challenge hash, 2 login hash
-- ARGV: 1 challenge id
redis.call('HSET', KEYS[1], 'st', 'REJECTED')
redis.call('HDEL', KEYS[1], 'h')
if redis.call('HGET', KEYS[2], 'cur') == ARGV[1] then
  redis.call('HSET', KEYS[2], 'email', 1, 'last', 0)
  redis.call('HDEL', KEYS[2], 'cur')
end
return 1
