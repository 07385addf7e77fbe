#!lua name=hermod
-- Hermod's Redis function library (loaded with FUNCTION LOAD REPLACE by the broker's Redis engine).
--
-- A channel (a user's inbox or a room) is a set of keys under one hash tag T ("{u:alice}", "{r:lobby}"):
--   T:s            the stream: one entry per message, fields f (from), d (data, JSON text), t (ts, unix ms)
--   T:m            hash: ep (the channel's epoch), fl (stream id of the last entry trimmed away)
--   T:cur          hash (inboxes): device -> stream id of the last entry it acked
--   T:dd:<n>:<from>:<cid>   dedupe: the id stored first for (from, cid), expires with the window
-- Ids given to clients are "<ep>.<stream id>". The epoch is drawn when a channel's meta is created and
-- bumped when a failover rolled the stream back (hermod_check), so older positions are not trusted.
-- Every function returns plain arrays and integers; "unknown id" is an answer, not an error.

-- Stream ids "ms-seq" as two decimal strings without leading zeros; compared exactly (no floats).
local function split(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  return ms, seq
end

local function num_cmp(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end

local function cmp(a, b)
  local ams, aseq = split(a)
  local bms, bseq = split(b)
  local c = num_cmp(ams, bms)
  if c ~= 0 then
    return c
  end
  return num_cmp(aseq, bseq)
end

-- The channel's epoch, created (from the server clock, in microseconds) when the channel is new:
-- distinct per channel creation, so positions of a channel that expired and came back never match.
local function epoch(meta, ttl)
  local ep = redis.call('HGET', meta, 'ep')
  if not ep then
    local t = redis.call('TIME')
    ep = t[1] .. string.format('%06d', tonumber(t[2]))
    redis.call('HSET', meta, 'ep', ep)
    redis.call('PEXPIRE', meta, ttl)
  end
  return ep
end

-- The newest stream id the channel holds or held: its last entry, else the trim floor, else 0-0.
local function tip(stream, meta)
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if last[1] then
    return last[1][1]
  end
  return redis.call('HGET', meta, 'fl') or '0-0'
end

-- KEYS: stream, meta, dedupe.  ARGV: ms, from, data, maxlen, ttl_ms, window_ms, pubsub channel.
-- -> {0, id} when stored now; {1, id, entry or nothing} when (from, cid) was stored inside the
-- window already. The entry comes back so that the broker can deliver it live: the first attempt
-- may have been applied without its answer (a timeout, a lost connection, a failed WAIT), and
-- then nobody delivered it. Its fields are {f, from, d, data, t, ts}.
local function append(keys, args)
  local stream, meta, dd = keys[1], keys[2], keys[3]
  local ms, from, data, maxlen, ttl, window, chan =
    args[1], args[2], args[3], tonumber(args[4]), args[5], args[6], args[7]
  local prev = redis.call('GET', dd)
  if prev then
    local sid = string.match(prev, '^%d+%.(%d+%-%d+)$')
    local entry = sid and redis.call('XRANGE', stream, sid, sid) or {}
    if entry[1] and redis.call('HGET', meta, 'ep') .. '.' .. sid == prev then
      return {1, prev, entry[1][2]}
    end
    return {1, prev}
  end
  local ep = epoch(meta, ttl)
  local len = redis.call('XLEN', stream)
  if len >= maxlen then
    local gone = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - maxlen + 1)
    redis.call('HSET', meta, 'fl', gone[#gone][1])
  end
  -- The broker's clock orders ids (and ages them for trimming); when it is behind the stream's
  -- top (another broker's clock, a fake clock in tests), Redis picks the next id itself.
  local sid = redis.pcall('XADD', stream, 'MAXLEN', maxlen, ms .. '-*', 'f', from, 'd', data, 't', ms)
  if type(sid) == 'table' then
    sid = redis.call('XADD', stream, 'MAXLEN', maxlen, '*', 'f', from, 'd', data, 't', ms)
  end
  local id = ep .. '.' .. sid
  redis.call('SET', dd, id, 'PX', window)
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PUBLISH', chan, id .. '\n' .. from .. '\n' .. ms .. '\n' .. data)
  return {0, id}
end

-- KEYS: stream, meta, cursors.  ARGV: device, epoch ('' to start at the device's cursor), stream id, count.
-- -> {1, epoch, entries} or {0} when the epoch is not the channel's.
local function read_inbox(keys, args)
  local stream, meta, cur = keys[1], keys[2], keys[3]
  local device, ep, sid, count = args[1], args[2], args[3], args[4]
  local current = redis.call('HGET', meta, 'ep')
  local start
  if ep ~= '' then
    if ep ~= current then
      return {0}
    end
    start = sid
  else
    start = redis.call('HGET', cur, device) or '0-0'
  end
  if not current then
    return {1, '', {}}
  end
  return {1, current, redis.call('XRANGE', stream, '(' .. start, '+', 'COUNT', count)}
end

-- The device with the lowest cursor (evicted when an inbox has too many).
local function lowest(cur)
  local all = redis.call('HGETALL', cur)
  local victim, at
  for i = 1, #all, 2 do
    if not at or cmp(all[i + 1], at) < 0 then
      victim, at = all[i], all[i + 1]
    end
  end
  return victim
end

-- KEYS: stream, meta, cursors.  ARGV: device, epoch, stream id, ttl_ms, max cursors.
-- Moves the device's cursor forward to the id, clamped to the newest entry. -> 1, or 0 for a foreign epoch.
local function ack(keys, args)
  local stream, meta, cur = keys[1], keys[2], keys[3]
  local device, ep, sid, ttl, max = args[1], args[2], args[3], args[4], tonumber(args[5])
  local current = redis.call('HGET', meta, 'ep')
  if not current then
    return 1 -- no inbox: nothing to hold back
  end
  if ep ~= current then
    return 0
  end
  local top = tip(stream, meta)
  if cmp(sid, top) > 0 then
    sid = top
  end
  local at = redis.call('HGET', cur, device)
  if at and cmp(sid, at) <= 0 then
    return 1
  end
  if not at and redis.call('HLEN', cur) >= max then
    redis.call('HDEL', cur, lowest(cur))
  end
  redis.call('HSET', cur, device, sid)
  redis.call('PEXPIRE', cur, ttl)
  return 1
end

-- KEYS: stream, meta.  ARGV: epoch ('' when none), stream id, count.
-- -> {covered, epoch, entries}: after the id when the history covers it, else from the oldest entry.
local function read_room(keys, args)
  local stream, meta = keys[1], keys[2]
  local ep, sid, count = args[1], args[2], args[3]
  local current = redis.call('HGET', meta, 'ep')
  if not current then
    return {0, '', {}}
  end
  local covered = 0
  if ep == current then
    local floor = redis.call('HGET', meta, 'fl') or '0-0'
    if cmp(floor, sid) <= 0 and cmp(sid, tip(stream, meta)) <= 0 then
      covered = 1
    end
  end
  local start = covered == 1 and ('(' .. sid) or '-'
  return {covered, current, redis.call('XRANGE', stream, start, '+', 'COUNT', count)}
end

-- KEYS: stream, meta.  ARGV: cutoff ms. Drops the entries stored at or before the cutoff, and
-- remembers the last one dropped as the floor. -> number of entries dropped.
local function trim(keys, args)
  local stream, meta = keys[1], keys[2]
  local minid = string.format('%d-0', tonumber(args[1]) + 1)
  local last = redis.call('XREVRANGE', stream, '(' .. minid, '-', 'COUNT', 1)
  if not last[1] then
    return 0
  end
  redis.call('HSET', meta, 'fl', last[1][1])
  return redis.call('XTRIM', stream, 'MINID', minid)
end

-- KEYS: stream, meta.  ARGV: the highest stream id this broker was given for the channel.
-- After a failover: if the stream is now behind it, writes were rolled back; a new epoch makes
-- positions from before come back recovered:false. -> 1 when bumped.
local function check(keys, args)
  local stream, meta = keys[1], keys[2]
  if redis.call('EXISTS', meta) == 0 then
    return 0 -- the next append draws a fresh epoch anyway
  end
  local generated = '0-0'
  if redis.call('EXISTS', stream) == 1 then
    local info = redis.call('XINFO', 'STREAM', stream)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        generated = info[i + 1]
      end
    end
  end
  if cmp(generated, args[1]) < 0 then
    redis.call('HINCRBY', meta, 'ep', 1)
    return 1
  end
  return 0
end

redis.register_function('hermod_append', append)
redis.register_function('hermod_ack', ack)
redis.register_function('hermod_trim', trim)
redis.register_function('hermod_check', check)
redis.register_function{function_name = 'hermod_read_inbox', callback = read_inbox, flags = {'no-writes'}}
redis.register_function{function_name = 'hermod_read_room', callback = read_room, flags = {'no-writes'}}
