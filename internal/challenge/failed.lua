-- A code could not be delivered: the challenge is dead, and the login may
-- fall back to email and ask again at once. The CODE_DELIVERY_FAILED
-- event goes to the user's outbox in the same step.
--
-- KEYS: 1 challenge hash, 2 login hash, 3 outbox stream
-- ARGV: 1 challenge id, 2 event uid (the request's id), 3 now ms,
--       4 event header (JSON), 5 the user's display name, 6 channel,
--       7 reason
--
-- A call retried with the same uid gets the first call's reply (kept in
-- the challenge's hash) and changes nothing more.
local keptField = 'rp:' .. ARGV[2]
local kept = redis.call('HGET', KEYS[1], keptField)
if kept then return cjson.decode(kept) end

redis.call('HSET', KEYS[1], 'st', 'REJECTED')
redis.call('HDEL', KEYS[1], 'h')
if redis.call('HGET', KEYS[2], 'cur') == ARGV[1] then
  redis.call('HSET', KEYS[2], 'email', 1, 'last', 0)
  redis.call('HDEL', KEYS[2], 'cur')
end
redis.call('XADD', KEYS[3], '*', 'v', '1', 'uid', ARGV[2], 'at', ARGV[3], 'action', 'CODE_DELIVERY_FAILED',
  'hdr', ARGV[4], 'tn', ARGV[5], 's:challengeId', ARGV[1], 's:channel', ARGV[6], 's:reason', ARGV[7])
local reply = {'FAILED'}
redis.call('HSET', KEYS[1], keptField, cjson.encode(reply))
return reply
