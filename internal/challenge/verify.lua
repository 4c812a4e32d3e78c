-- Verify a code: check lock, supersession and expiry, compare, count, and
-- consume on success. Atomic, so of many concurrent guesses exactly the
-- allowed number are counted and at most one succeeds. Each outcome that
-- changes state appends its authentication event to the user's outbox in
-- the same step.
--
-- KEYS: 1 challenge hash, 2 login hash, 3 lock, 4 consecutive failures,
--       5 outbox stream
-- ARGV: 1 now ms, 2 challenge id, 3 code hmac, 4 max failures,
--       5 lock duration ms, 6 login window ms, 7 max lock duration ms,
--       8 max consecutive failures, 9 the lock value that means "until an
--       admin unlocks", 10 event uid (the request's id), 11 event header
--       (JSON)
--
-- Reply: {status, attempts remaining, locked until, events appended, channel}
--
-- A call retried with the same uid (go-redis resends a command whose reply
-- was lost, after Redis ran it) gets the first call's reply: one wrong
-- code counts once, and a right code stays APPROVED. The reply is kept in
-- the challenge's hash (field rp:<uid>), which lives as long as the code.
-- Replies that changed nothing are not kept: running them again gives the
-- same answer.
local keptField = 'rp:' .. ARGV[10]
local ch = redis.call('HMGET', KEYS[1], 'st', 'h', 'exp', 'ch', 'tn', keptField)
if ch[6] then return cjson.decode(ch[6]) end
-- keep stores the reply, and sets the challenge's status st to newStatus
-- (if given) in the same command; a new status also drops the code's hmac.
local function keep(reply, newStatus)
  for i, v in ipairs(reply) do
    if type(v) == 'number' then reply[i] = string.format('%d', v) end
  end
  if newStatus then
    redis.call('HSET', KEYS[1], 'st', newStatus, keptField, cjson.encode(reply))
    redis.call('HDEL', KEYS[1], 'h')
  else
    redis.call('HSET', KEYS[1], keptField, cjson.encode(reply))
  end
  return reply
end

local now, id, given = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local maxFailures, lockFor, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local maxLockFor, maxConsec, forever = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]

local status, stored, expires = ch[1], ch[2], tonumber(ch[3] or '0')
local channel, targetName = ch[4] or '', ch[5] or ''
if not status then return {'NOT_FOUND', 0, 0, 0, ''} end

-- The lock and the failure count in one command (the same slot).
local counters = redis.call('MGET', KEYS[3], KEYS[4])
local lockedUntil = tonumber(counters[1] or '0')
if lockedUntil > now then return {'LOCKED', 0, lockedUntil, 0, channel} end
if status == 'APPROVED' then return {'ALREADY_USED', 0, 0, 0, channel} end

local failures = tonumber(counters[2] or '0')
-- The tries left before the next lock.
local function remaining()
  return math.max(math.min(maxFailures - failures % maxFailures, maxConsec - failures), 0)
end
local function event(uid, action, ...)
  redis.call('XADD', KEYS[5], '*', 'v', '1', 'uid', uid, 'at', ARGV[1], 'action', action,
    'hdr', ARGV[11], 'tn', targetName, 's:challengeId', id, 's:channel', channel, ...)
end

-- A challenge that locked, once the lock is over, is just a rejected code.
if status == 'LOCKED' then status = 'REJECTED' end
if status ~= 'PENDING' then return {status, remaining(), 0, 0, channel} end

-- A newer code voids this one, and so does the end of its login.
local login = redis.call('HMGET', KEYS[2], 'cur', 'start')
if login[1] ~= id then
  event(ARGV[10], 'CODE_EXPIRED', 's:reason', 'superseded')
  return keep({'EXPIRED', remaining(), 0, 1, channel}, 'EXPIRED')
end
if now - tonumber(login[2] or '0') >= window then
  event(ARGV[10], 'CODE_EXPIRED', 's:reason', 'expired')
  return keep({'EXPIRED', remaining(), 0, 1, channel}, 'EXPIRED')
end
if now >= expires then
  -- Expiry is unsuccessful (email becomes available) but not a wrong code.
  redis.call('HSET', KEYS[2], 'email', 1, 'last', 0)
  event(ARGV[10], 'CODE_EXPIRED', 's:reason', 'expired')
  return keep({'EXPIRED', remaining(), 0, 1, channel}, 'EXPIRED')
end

-- Compare the two HMACs' digests (one C call each), so the time taken
-- tells nothing of how much of the HMACs match; a Lua loop over their 64
-- bytes cost as much as the rest of the script.
local matches = redis.sha1hex(given) == redis.sha1hex(stored)

if matches then
  local left = remaining()
  redis.call('DEL', KEYS[2], KEYS[4])
  event(ARGV[10], 'CODE_VERIFIED')
  return keep({'APPROVED', left, 0, 1, channel}, 'APPROVED')
end

failures = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[2], 'email', 1, 'last', 0)
event(ARGV[10], 'CODE_REJECTED', 'i:attempt', (failures - 1) % maxFailures + 1,
  'i:maxAttempts', maxFailures, 'i:consecutiveFailures', failures)

local indefinite = failures >= maxConsec
if not indefinite and failures % maxFailures ~= 0 then
  return keep({'REJECTED', remaining(), 0, 1, channel})
end
-- The n-th lock lasts lockFor * 2^(n-1), at most maxLockFor; after
-- maxConsec wrong codes only an admin unlocks.
local untilMs = ''
if indefinite then
  redis.call('SET', KEYS[3], forever)
  lockedUntil = tonumber(forever)
else
  local d = lockFor
  for _ = 2, failures / maxFailures do
    d = d * 2
    if d >= maxLockFor then break end
  end
  d = math.min(d, maxLockFor)
  lockedUntil = now + d
  redis.call('SET', KEYS[3], lockedUntil, 'PX', d)
  untilMs = lockedUntil
end
redis.call('DEL', KEYS[2])
local flag = '0'
if indefinite then flag = '1' end
event(ARGV[10] .. '.lock', 'FAILED_ATTEMPTS_LIMIT_REACHED', 'i:failedAttempts', failures,
  't:lockedUntil', untilMs, 'b:lockedIndefinitely', flag)
return keep({'LOCKED', 0, lockedUntil, 2, channel}, 'LOCKED')
