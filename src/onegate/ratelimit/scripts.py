"""The Lua scripts the Redis store runs: ``algorithms.py``, line for line, in one round trip.

Each script reads a bucket, decides and writes it back inside Redis, which runs scripts one
at a time, so N gateway instances hitting the same key can't interleave (no read-modify-write
race, the bug behind Kong #5311). ARGV is ``limit, window, now``; an empty ``now`` means the
Redis server's own clock (``TIME``), which is what the gateway uses: one clock for every
instance, so windows and refills agree even when the hosts' clocks don't. Redis 5 and later
replicate a script's effects rather than the script, so reading ``TIME`` before writing is
allowed. Floats go back as strings: Redis would truncate a Lua number to an integer.
"""

from __future__ import annotations

_CLOCK = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

SLIDING_WINDOW = (
    _CLOCK
    + """
local index = math.floor(now / window)
local state = redis.call('HMGET', KEYS[1], 'i', 'c', 'p')
local stored = tonumber(state[1])
local current = tonumber(state[2]) or 0
local previous = tonumber(state[3]) or 0
if stored ~= index then
  if stored == index - 1 then previous = current else previous = 0 end
  current = 0
end
local elapsed = math.min(math.max(now - index * window, 0), window)
local estimate = previous * (1 - elapsed / window) + current
local function retry_after(current)
  local room = limit - 1
  if current <= room then
    return (1 - (room - current) / previous) * window - elapsed
  end
  return (window - elapsed) + window * (1 - room / current)
end
if estimate + 1 > limit + 1e-9 then
  local retry = string.format('%.17g', retry_after(current))
  return {0, 0, retry, retry}
end
redis.call('HSET', KEYS[1], 'i', string.format('%.17g', index), 'c', current + 1, 'p', previous)
redis.call('PEXPIRE', KEYS[1], math.ceil(((index + 2) * window - now) * 1000))
local remaining = math.floor(limit - estimate - 1 + 1e-9)
local reset = window - elapsed
if remaining <= 0 then reset = retry_after(current + 1) end
return {1, remaining, string.format('%.17g', reset), '0'}
"""
)

TOKEN_BUCKET = (
    _CLOCK
    + """
local rate = limit / window
local state = redis.call('HMGET', KEYS[1], 't', 's')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = limit
  stamp = now
end
if now > stamp then
  tokens = math.min(limit, tokens + (now - stamp) * rate)
  stamp = now
end
if tokens < 1 - 1e-9 then
  local retry = string.format('%.17g', (1 - tokens) / rate)
  return {0, 0, retry, retry}
end
tokens = math.max(tokens - 1, 0)
local full = (limit - tokens) / rate
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 's', string.format('%.17g', stamp))
redis.call('PEXPIRE', KEYS[1], math.ceil(full * 1000))
local remaining = math.floor(tokens + 1e-9)
local reset = full
if remaining <= 0 then reset = (1 - tokens) / rate end
return {1, remaining, string.format('%.17g', reset), '0'}
"""
)
