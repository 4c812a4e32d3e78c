-- Issue a code: check the lock, the login window, the resend cooldown and
-- the per-user rate, pick the channel, store the code's hash, and append
-- CODE_SENT (a code was issued and handed to delivery) to the user's
-- outbox. Atomic, so concurrent issues cannot slip past any limit, and a
-- code never exists without its event.
--
-- KEYS: 1 login hash, 2 lock, 3 issued zset, 4 challenge hash,
--       5 consecutive failures, 6 outbox stream
-- ARGV: 1 now ms, 2 challenge id, 3 code hmac, 4 mode (E|S|SE),
--       5 requested channel ("" | SMS | EMAIL), 6 code ttl ms,
--       7 cooldown ms, 8 max codes per window, 9 login window ms,
--       10 max failures, 11 sms destination, 12 email destination,
--       13 max consecutive failures, 14 the user's display name (kept
--       for the events of this code), 15 event uid (the request's id),
--       16 event header (JSON)
--
-- A call retried with the same uid (go-redis resends a command whose
-- reply was lost) gets the first call's reply, kept in the new challenge's
-- hash (field rp:<uid>). A refusal needs no keeping: the writes before it
-- give the same state when run again.
local keptField = 'rp:' .. ARGV[15]
local kept = redis.call('HGET', KEYS[4], keptField)
if kept then return cjson.decode(kept) end

local now = tonumber(ARGV[1])
local mode, requested = ARGV[4], ARGV[5]
local ttl, cooldown = tonumber(ARGV[6]), tonumber(ARGV[7])
local maxCodes, window = tonumber(ARGV[8]), tonumber(ARGV[9])
local maxFailures, maxConsec = tonumber(ARGV[10]), tonumber(ARGV[13])

local lockedUntil = tonumber(redis.call('GET', KEYS[2]) or '0')
if lockedUntil > now then
  return {'LOCKED', lockedUntil}
end

local start = tonumber(redis.call('HGET', KEYS[1], 'start') or '0')
if start == 0 or now - start >= window then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'start', now, 'email', 0, 'last', 0)
  start = now
end
local login = redis.call('HMGET', KEYS[1], 'last', 'email', 'cur', 'curexp')
local last, emailOK = tonumber(login[1]), login[2] == '1'
-- A code that expired unused is an unsuccessful attempt too (the SMS may
-- never have arrived): it opens email, like a verify that finds it expired.
if not emailOK and login[3] and now >= tonumber(login[4] or '0') then
  emailOK = true
  redis.call('HSET', KEYS[1], 'email', 1)
end

if last > 0 and now - last < cooldown then
  return {'RESEND_TOO_SOON', last + cooldown - now}
end

-- The issued set keeps every challenge whose hash may still exist (a hash
-- lives window + ttl), so that forgetting a user can name all its keys;
-- the rate counts only the codes of the last window.
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('(%d', now - window - ttl))
local since = string.format('(%d', now - window)
if redis.call('ZCOUNT', KEYS[3], since, '+inf') >= maxCodes then
  local oldest = redis.call('ZRANGEBYSCORE', KEYS[3], since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return {'RATE_LIMITED', tonumber(oldest[2]) + window - now}
end

-- E: email only. S: SMS, no email to fall back to. SE: SMS first, email
-- once an attempt in this login has failed.
local channel
if mode == 'E' then
  if requested == 'SMS' then return {'CHANNEL_NOT_AVAILABLE'} end
  channel = 'EMAIL'
elseif requested == 'EMAIL' then
  if mode ~= 'SE' or not emailOK then return {'CHANNEL_NOT_AVAILABLE'} end
  channel = 'EMAIL'
else
  channel = 'SMS'
end
local dest = ARGV[11]
if channel == 'EMAIL' then dest = ARGV[12] end

local expires = now + ttl
redis.call('HSET', KEYS[4], 'st', 'PENDING', 'h', ARGV[3], 'ch', channel,
  'dest', dest, 'mode', mode, 'exp', expires, 'iss', now, 'tn', ARGV[14])
redis.call('PEXPIRE', KEYS[4], window + ttl)
redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'curexp', expires, 'last', now)
redis.call('PEXPIRE', KEYS[1], start + window - now + ttl)
redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('PEXPIRE', KEYS[3], window + ttl)
redis.call('XADD', KEYS[6], '*', 'v', '1', 'uid', ARGV[15], 'at', ARGV[1], 'action', 'CODE_SENT',
  'hdr', ARGV[16], 'tn', ARGV[14], 's:challengeId', ARGV[2], 's:channel', channel, 's:destination', dest)

-- Wrong codes count across logins and locks until a right one: the tries
-- left are those before the next lock.
local failures = tonumber(redis.call('GET', KEYS[5]) or '0')
local remaining = math.min(maxFailures - failures % maxFailures, maxConsec - failures)
local email = '0'
if emailOK then email = '1' end
local reply = {'OK', channel, string.format('%d', expires), string.format('%d', now + cooldown),
  string.format('%d', math.max(remaining, 0)), email}
redis.call('HSET', KEYS[4], keptField, cjson.encode(reply))
return reply
