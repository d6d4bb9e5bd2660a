-- prelude.lua: helpers that scripts.go puts at the top of every script (after
-- its flags line). Redis does not roll a script back when a command fails
-- halfway, so every script checks the keys it will write, and the numbers
-- it will use, before its first write: a damaged key answers with an error
-- that names it, and moves nothing.

-- now_ms is Redis's clock, Unix ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- bad returns the error reply for key, which holds another type than want.
-- Given the error e of the write that failed, it returns e itself when the
-- key is of the right type after all (a server that refuses the write for
-- want of memory, say).
local function bad(key, want, e)
  local t = redis.call('TYPE', key).ok
  if e and (t == want or t == 'none') then
    return e
  end
  return redis.error_reply('rqgo: key ' .. key .. ' holds a ' .. t .. ', not a ' ..
    want .. '; nothing was changed: repair or delete the key')
end

-- failed says whether a redis.pcall reply is an error.
local function failed(r)
  return type(r) == 'table' and r.err ~= nil
end

-- check takes key, type pairs and returns an error reply naming the first key
-- that exists with another type, or nil when every key is absent or right.
local function check(...)
  local a = {...}
  for i = 1, #a, 2 do
    local t = redis.call('TYPE', a[i]).ok
    if t ~= 'none' and t ~= a[i + 1] then
      return bad(a[i], a[i + 1])
    end
  end
  return nil
end

-- wake makes work of the queue known to idle workers, as one token at most
-- in the wake list (for workers blocked on it) and a message on the channel
-- of the same name (for workers subscribed to it).
local function wake(key)
  if redis.call('EXISTS', key) == 0 then
    redis.call('LPUSH', key, '1')
    redis.call('PUBLISH', key, '1')
  end
end
