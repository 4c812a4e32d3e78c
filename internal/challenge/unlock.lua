-- An admin unlocks a user's app: lift the lock, forget the consecutive
-- wrong codes and end the login, and append USER_TWO_FACTOR_UNLOCKED to
-- the user's outbox, in one step. What was read is what is removed (a
-- lock set meanwhile cannot be lifted unrecorded), and the event cannot
-- be lost once the answer is given. A user with neither a lock nor a
-- wrong code to forget is left alone, and nothing is recorded.
--
-- KEYS: 1 lock, 2 login hash, 3 consecutive failures, 4 outbox stream,
--       5 the user's kept replies (hash)
-- ARGV: 1 now ms, 2 event uid (the request's id), 3 event header (JSON),
--       4 the user's display name, 5 the lock value that means "until an
--       admin unlocks", 6 kept reply ttl ms
--
-- Reply: {'UNLOCKED', lock value removed (0: none), wrong codes forgotten}
-- or {'NONE'}. A call retried with the same uid gets the first reply, and
-- cannot lift a lock set between the two unrecorded.
local kept = redis.call('HGET', KEYS[5], ARGV[2])
if kept then return cjson.decode(kept) end

local now = tonumber(ARGV[1])
local lockMs = tonumber(redis.call('GET', KEYS[1]) or '0')
local failures = tonumber(redis.call('GET', KEYS[3]) or '0')
local locked = lockMs > now
if not locked and failures == 0 then return {'NONE'} end

redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
-- details: the before and after of what changed (d.before.x, d.after.x).
local details = {}
local function change(kind, name, before, after)
  table.insert(details, kind .. ':before.' .. name)
  table.insert(details, before)
  table.insert(details, kind .. ':after.' .. name)
  table.insert(details, after)
end
if not locked then
  lockMs = 0
elseif lockMs >= tonumber(ARGV[5]) then
  change('b', 'lockedIndefinitely', '1', '0') -- lockedUntil was null and stays null
else
  change('t', 'lockedUntil', string.format('%d', lockMs), '')
end
if failures > 0 then
  change('i', 'consecutiveFailures', string.format('%d', failures), '0')
end
redis.call('XADD', KEYS[4], '*', 'v', '1', 'uid', ARGV[2], 'at', ARGV[1], 'action', 'USER_TWO_FACTOR_UNLOCKED',
  'hdr', ARGV[3], 'tn', ARGV[4], unpack(details))
local reply = {'UNLOCKED', string.format('%d', lockMs), string.format('%d', failures)}
redis.call('HSET', KEYS[5], ARGV[2], cjson.encode(reply))
redis.call('PEXPIRE', KEYS[5], ARGV[6])
return reply
