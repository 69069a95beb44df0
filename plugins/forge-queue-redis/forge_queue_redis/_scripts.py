"""The Lua scripts that make every queue transition one atomic step inside Redis.

Keys live under a prefix ``P``: ``P i:<id>`` (item hash), ``P keys`` (idempotency key -> id),
``P q:<n>`` (deliverable items of one kind and tag set, score = priority*1e13 + run_at ms;
``P qid``/``P qkind``/``P qtags`` map (kind, tags) <-> n), ``P delayed`` and ``P reserved``
(score = due / expiry time), ``P st:<state>`` and ``P all`` (score = created), ``P prio``
(pending per priority), ``P age`` (deliverable by run_at), ``P rl:<kind>`` (token bucket),
``P token`` (fencing counter), ``P wake`` and ``P wake:<kind>`` (short lists of wake-up
tokens that idle consumers BLPOP), ``P w:<id>``/``P f:<id>`` (a waiter's registration and its
wake-up). Time is Redis's own clock (``TIME``).
"""

from __future__ import annotations

NAMES = ("PUT", "RESERVE", "ACK", "NACK", "EXTEND", "CHECKPOINT", "CANCEL", "REQUEUE", "LIST",
         "STATS", "RATE_LIMIT", "WAITREG", "SETTLE", "WAITB")

COMMON = r"""
local P = KEYS[1]
local function now() local t = redis.call('TIME'); return tonumber(t[1]) + tonumber(t[2]) / 1e6 end
local function f(x) return string.format('%.6f', x) end
local function score(prio, run_at)
  return string.format('%d', prio * 1e13 + math.floor(run_at * 1000))
end
local function qid(kind, tags)
  local n = redis.call('HGET', P..'qid', tags..kind)
  if not n then
    n = redis.call('INCR', P..'qseq')
    redis.call('HSET', P..'qid', tags..kind, n)
    redis.call('HSET', P..'qkind', n, kind)
    redis.call('HSET', P..'qtags', n, tags)
  end
  return n
end
local woke = {}
local function make_ready(id, kind, prio, run_at, t, tags)
  if run_at > t then
    redis.call('ZADD', P..'delayed', f(run_at), id)
  else
    redis.call('ZADD', P..'q:'..qid(kind, tags), score(prio, run_at), id)
    redis.call('ZADD', P..'age', f(run_at), id)
    woke[kind] = (woke[kind] or 0) + 1
  end
end
local function push_tokens(key, n)
  -- at most 32 tokens, and no write once a list is full; a new list gets an expiry (an
  -- expired list only held tokens nobody was blocked on)
  local have = redis.call('LLEN', key)
  if have >= 32 then return end
  local ones = {}
  for i = 1, math.min(n, 32 - have) do ones[i] = '1' end
  redis.call('LPUSH', key, unpack(ones))
  if have == 0 then redis.call('EXPIRE', key, 300) end
end
local function wake()
  local total = 0
  for kind, n in pairs(woke) do
    push_tokens(P..'wake:'..kind, n)
    total = total + n
  end
  if total > 0 then push_tokens(P..'wake', total) end
end
local function notify(id)
  if redis.call('DEL', P..'w:'..id) == 1 then
    redis.call('RPUSH', P..'f:'..id, '1')
    redis.call('EXPIRE', P..'f:'..id, 60)
  end
end
local function set_state(id, from, to)
  local created = redis.call('HGET', P..'i:'..id, 'created_at')
  redis.call('ZREM', P..'st:'..from, id)
  redis.call('ZADD', P..'st:'..to, created, id)
  redis.call('HSET', P..'i:'..id, 'state', to)
end
local function to_pending(id, run_at, t)
  local h = redis.call('HMGET', P..'i:'..id, 'kind', 'priority', 'tags')
  redis.call('HSET', P..'i:'..id, 'run_at', f(run_at), 'consumer', '', 'lease_expires_at', '')
  redis.call('HINCRBY', P..'prio', h[2], 1)
  make_ready(id, h[1], tonumber(h[2]), run_at, t, h[3])
end
local function to_dead(id, from, t)
  set_state(id, from, 'dead')
  redis.call('HSET', P..'i:'..id, 'finished_at', f(t), 'consumer', '', 'lease_expires_at', '')
  notify(id)
end
local function held(id, token)
  local h = redis.call('HMGET', P..'i:'..id, 'state', 'token')
  if not h[1] then return 'NOTFOUND no queue item '..id end
  if h[1] ~= 'reserved' or h[2] ~= token then
    return 'LEASELOST the lease with token '..token..' was lost (item is '..h[1]..
      ', token '..h[2]..')'
  end
  return nil
end
"""

PUT = COMMON + r"""
local t = now()
local n = tonumber(ARGV[1])
local out = {}
for i = 0, n - 1 do
  local b = 1 + i * 9
  local id, kind, payload, prio = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4])
  local maxd, delay, run_at = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  local key, tags = ARGV[b + 8], ARGV[b + 9]
  local existing = false
  if key ~= '' then existing = redis.call('HGET', P..'keys', key) end
  -- a put retried after a lost reply carries the same id: it is already stored
  if not existing and redis.call('EXISTS', P..'i:'..id) == 1 then existing = id end
  if existing then
    out[#out + 1] = existing
  else
    local ra = t + tonumber(delay)
    if run_at ~= '' then ra = tonumber(run_at) end
    if key ~= '' then redis.call('HSET', P..'keys', key, id) end
    redis.call('HSET', P..'i:'..id, 'id', id, 'kind', kind, 'payload', payload, 'priority', prio,
      'state', 'pending', 'deliveries', 0, 'max_deliveries', maxd, 'created_at', f(t),
      'run_at', f(ra), 'key', key, 'tags', tags, 'token', 0)
    redis.call('ZADD', P..'st:pending', f(t), id)
    redis.call('ZADD', P..'all', f(t), id)
    redis.call('HINCRBY', P..'prio', prio, 1)
    make_ready(id, kind, prio, ra, t, tags)
    out[#out + 1] = id
  end
end
wake()
return out
"""

TAKE = r"""
local function take(t, consumer, lease, only_json, tags_json, skip_json)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P..'delayed', '-inf', f(t), 'LIMIT', 0, 1000)) do
    redis.call('ZREM', P..'delayed', id)
    local h = redis.call('HMGET', P..'i:'..id, 'kind', 'priority', 'run_at', 'tags')
    make_ready(id, h[1], tonumber(h[2]), tonumber(h[3]), t, h[4])
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', P..'reserved', '-inf', f(t), 'LIMIT', 0, 1000)) do
    redis.call('ZREM', P..'reserved', id)
    local h = redis.call('HMGET', P..'i:'..id, 'deliveries', 'max_deliveries', 'consumer')
    redis.call('HSET', P..'i:'..id, 'last_error', 'lease of '..h[3]..' expired')
    if tonumber(h[1]) >= tonumber(h[2]) then
      to_dead(id, 'reserved', t)
    else
      set_state(id, 'reserved', 'pending')
      to_pending(id, t, t)
    end
  end
  wake()
  local only = nil
  if only_json ~= '' then
    only = {}
    for _, k in ipairs(cjson.decode(only_json)) do only[k] = true end
  end
  local skip = {}
  for _, k in ipairs(cjson.decode(skip_json)) do skip[k] = true end
  local mine = {}
  for _, tag in ipairs(cjson.decode(tags_json)) do mine[tag] = true end
  local function bucket(kind)
    local r = redis.call('HMGET', P..'rl:'..kind, 'rate', 'burst', 'tokens', 'updated')
    if not r[1] then return nil end
    return math.min(tonumber(r[2]), tonumber(r[3]) + (t - tonumber(r[4])) * tonumber(r[1]))
  end
  local function tags_ok(tags)
    if tags == '[]' then return true end
    if next(mine) == nil then return false end
    for _, tag in ipairs(cjson.decode(tags)) do if not mine[tag] then return false end end
    return true
  end
  -- one ready set per (kind, tag set): the head of each set the consumer may take is a
  -- candidate, so a tag filter never has to scan past items meant for other consumers
  local limited = {}
  local best, best_score, best_kind, best_q
  local sets = redis.call('HGETALL', P..'qkind')
  for j = 1, #sets, 2 do
    local n, kind = sets[j], sets[j + 1]
    if (only == nil or only[kind]) and not skip[kind] then
      if limited[kind] == nil then
        local tokens = bucket(kind)
        limited[kind] = tokens ~= nil and tokens < 1
      end
      local tags = redis.call('HGET', P..'qtags', n)
      if not limited[kind] and tags_ok(tags) then
        local head = redis.call('ZRANGE', P..'q:'..n, 0, 0, 'WITHSCORES')
        if #head == 0 then
          redis.call('HDEL', P..'qkind', n)
          redis.call('HDEL', P..'qtags', n)
          redis.call('HDEL', P..'qid', tags..kind)
        else
          local id, sc = head[1], tonumber(head[2])
          if not best or sc < best_score or (sc == best_score and id < best) then
            best, best_score, best_kind, best_q = id, sc, kind, n
          end
        end
      end
    end
  end
  if not best then return false end
  local key = P..'i:'..best
  local prio = redis.call('HGET', key, 'priority')
  redis.call('ZREM', P..'q:'..best_q, best)
  redis.call('ZREM', P..'age', best)
  redis.call('HINCRBY', P..'prio', prio, -1)
  local tokens = bucket(best_kind)
  if tokens ~= nil then
    redis.call('HSET', P..'rl:'..best_kind, 'tokens', f(tokens - 1), 'updated', f(t))
  end
  local token = redis.call('INCR', P..'token')
  local expires = t + lease
  set_state(best, 'pending', 'reserved')
  redis.call('HINCRBY', key, 'deliveries', 1)
  redis.call('HSET', key, 'consumer', consumer, 'lease_expires_at', f(expires), 'token', token)
  redis.call('ZADD', P..'reserved', f(expires), best)
  return redis.call('HGETALL', key)
end
"""

RESERVE = COMMON + TAKE + r"""
return take(now(), ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5])
"""

ACK_FN = r"""
local function ack(id, token, result)
  local h = redis.call('HMGET', P..'i:'..id, 'state', 'token')
  if h[1] == 'done' and h[2] == token then return nil end
  local err = held(id, token)
  if err then return err end
  set_state(id, 'reserved', 'done')
  redis.call('ZREM', P..'reserved', id)
  redis.call('HSET', P..'i:'..id, 'result', result, 'finished_at', f(now()),
    'lease_expires_at', '')
  notify(id)
  return nil
end
"""

ACK = COMMON + ACK_FN + r"""
local err = ack(ARGV[1], ARGV[2], ARGV[3])
if err then return redis.error_reply(err) end
return 1
"""

SETTLE = COMMON + ACK_FN + TAKE + r"""
local n = tonumber(ARGV[1])
local lost = {}
for i = 0, n - 1 do
  local b = 1 + i * 3
  if ack(ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]) then lost[#lost + 1] = ARGV[b + 1] end
end
local o = 1 + n * 3
local taken = {}
for i = 1, tonumber(ARGV[o + 6]) do
  local got = take(now(), ARGV[o + 1], tonumber(ARGV[o + 2]), ARGV[o + 3], ARGV[o + 4],
    ARGV[o + 5])
  if not got then break end
  taken[#taken + 1] = got
end
return {lost, taken}
"""

NACK = COMMON + r"""
local id, token = ARGV[1], ARGV[2]
local err = held(id, token)
if err then return redis.error_reply(err) end
local t = now()
local key = P..'i:'..id
redis.call('ZREM', P..'reserved', id)
redis.call('HSET', key, 'last_error', ARGV[3])
local h = redis.call('HMGET', key, 'deliveries', 'max_deliveries')
if ARGV[5] == '1' or tonumber(h[1]) >= tonumber(h[2]) then
  to_dead(id, 'reserved', t)
else
  local retry_at = t
  if ARGV[4] ~= '' then retry_at = tonumber(ARGV[4]) end
  set_state(id, 'reserved', 'pending')
  to_pending(id, retry_at, t)
  wake()
end
return 1
"""

EXTEND = COMMON + r"""
local id, token = ARGV[1], ARGV[2]
local err = held(id, token)
if err then return redis.error_reply(err) end
local expires = now() + tonumber(ARGV[3])
redis.call('ZADD', P..'reserved', f(expires), id)
redis.call('HSET', P..'i:'..id, 'lease_expires_at', f(expires))
return f(expires)
"""

CHECKPOINT = COMMON + r"""
local err = held(ARGV[1], ARGV[2])
if err then return redis.error_reply(err) end
redis.call('HSET', P..'i:'..ARGV[1], 'checkpoint', ARGV[3])
return 1
"""

CANCEL = COMMON + r"""
local id = ARGV[1]
local h = redis.call('HMGET', P..'i:'..id, 'state', 'kind', 'priority', 'tags')
if not h[1] then return redis.error_reply('NOTFOUND no queue item '..id) end
if h[1] == 'pending' then
  redis.call('ZREM', P..'q:'..qid(h[2], h[4]), id)
  redis.call('ZREM', P..'delayed', id)
  redis.call('ZREM', P..'age', id)
  redis.call('HINCRBY', P..'prio', h[3], -1)
elseif h[1] == 'reserved' then
  redis.call('ZREM', P..'reserved', id)
else
  return 0
end
set_state(id, h[1], 'cancelled')
redis.call('HSET', P..'i:'..id, 'finished_at', f(now()), 'consumer', '', 'lease_expires_at', '')
notify(id)
return 1
"""

REQUEUE = COMMON + r"""
local id = ARGV[1]
local state = redis.call('HGET', P..'i:'..id, 'state')
if not state then return redis.error_reply('NOTFOUND no queue item '..id) end
if state ~= 'dead' and state ~= 'cancelled' then
  return redis.error_reply('BADSTATE item '..id..' is '..state..
    '; only dead or cancelled items requeue')
end
local t = now()
set_state(id, state, 'pending')
redis.call('HSET', P..'i:'..id, 'deliveries', 0, 'finished_at', '')
to_pending(id, t, t)
wake()
return 1
"""

LIST = COMMON + r"""
local src = P..'all'
if ARGV[1] ~= '' then src = P..'st:'..ARGV[1] end
local kind, limit = ARGV[2], tonumber(ARGV[3])
local out, start = {}, 0
while #out < limit do
  local ids = redis.call('ZREVRANGE', src, start, start + 499)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    if kind == '' or redis.call('HGET', P..'i:'..id, 'kind') == kind then
      out[#out + 1] = redis.call('HGETALL', P..'i:'..id)
      if #out >= limit then break end
    end
  end
  start = start + 500
end
return out
"""

STATS = COMMON + r"""
local t = now()
local states = {}
for _, s in ipairs({'pending', 'reserved', 'done', 'dead', 'cancelled'}) do
  states[#states + 1] = s
  states[#states + 1] = redis.call('ZCARD', P..'st:'..s)
end
local oldest = ''
local a = redis.call('ZRANGE', P..'age', 0, 0, 'WITHSCORES')
if #a > 0 then oldest = a[2] end
local d = redis.call('ZRANGEBYSCORE', P..'delayed', '-inf', f(t), 'WITHSCORES', 'LIMIT', 0, 1)
if #d > 0 and (oldest == '' or tonumber(d[2]) < tonumber(oldest)) then oldest = d[2] end
return {states, redis.call('HGETALL', P..'prio'), oldest, f(t)}
"""

WAITREG = COMMON + r"""
local state = redis.call('HGET', P..'i:'..ARGV[1], 'state')
if not state then return redis.error_reply('NOTFOUND no queue item '..ARGV[1]) end
if state ~= 'done' and state ~= 'dead' and state ~= 'cancelled' then
  redis.call('SET', P..'w:'..ARGV[1], '1', 'EX', ARGV[2])
end
return state
"""

RATE_LIMIT = COMMON + r"""
local key = P..'rl:'..ARGV[1]
if ARGV[2] == '' then redis.call('DEL', key); return 1 end
redis.call('HSET', key, 'rate', ARGV[2], 'burst', ARGV[3], 'tokens', ARGV[3], 'updated', f(now()))
return 1
"""

WAITB = r"""
-- a waiter's registration, sent in one write with its BLPOP on P f:<id> and HGETALL: an item
-- already finished (or unknown) pushes its own wake-up so the BLPOP returns at once
local P, id = KEYS[1], ARGV[1]
local state = redis.call('HGET', P..'i:'..id, 'state')
if not state or state == 'done' or state == 'dead' or state == 'cancelled' then
  redis.call('RPUSH', P..'f:'..id, '1')
  redis.call('EXPIRE', P..'f:'..id, 60)
else
  redis.call('SET', P..'w:'..id, '1', 'EX', ARGV[2])
end
return 1
"""
