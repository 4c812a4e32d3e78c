-- Delete moved entries from an outbox, and the outbox once it is empty
-- (XDEL leaves an empty stream behind). One script, so an entry appended
-- meanwhile is never deleted with the key.
--
-- KEYS: 1 outbox stream
-- ARGV: entry ids
redis.call('XDEL', KEYS[1], unpack(ARGV))
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
end
return 1
