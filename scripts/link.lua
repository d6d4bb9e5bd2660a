#!lua
-- link.lua: record jobs of any queue as dependents of parents in this
-- queue, or answer how a parent has already ended. Linking twice is
-- linking once.
--
-- KEYS[1] job key prefix  <prefix>:{<queue>}:job:  (the queue's other keys
--         are this without `job:`, plus their names)
--
-- ARGV[1..] pairs of the dependent `<queue>:<id>` and the parent's id
--
-- Returns one word per pair: open (linked: the parent's end will be
-- delivered), finished, failed or canceled (it has ended; the dependent is
-- recorded for display only), or gone (no such job, and nothing owed).
lazy() -- the helpers defined on demand (prelude.lua)
local base = string.sub(KEYS[1], 1, -5)
local out = {}
for i = 1, #ARGV, 2 do
  local cref, pid = ARGV[i], ARGV[i + 1]
  local k = KEYS[1] .. pid
  local st = redis.pcall('HGET', k, 'status')
  local dk = base .. 'dependents:' .. pid
  if failed(st) or not st then
    -- An end not delivered yet is still owed, even when the hash is gone.
    st = redis.pcall('HGET', base .. 'owed:' .. pid, cref)
    if failed(st) or not st then
      st = 'gone'
    end
  else
    local r = redis.pcall('SADD', dk, cref)
    if failed(r) then
      return bad(dk, 'set')
    end
    if st == 'finished' or st == 'failed' or st == 'canceled' then
      local ttl = redis.call('PTTL', k)
      if ttl > 0 then
        redis.call('PEXPIRE', dk, ttl)
      end
    else
      flag(k, 'd')
      st = 'open'
    end
  end
  out[#out + 1] = st
end
return out
