#!lua name=hermod
-- Hermod's Redis function library (loaded with FUNCTION LOAD REPLACE by the broker's Redis engine).
--
-- A channel (a user's inbox or a room) is a set of keys under one hash tag T ("{u:alice}", "{r:lobby}"):
--   T:s            the stream: one entry per message, fields f (from), d (data, JSON text), t (ts, unix ms);
--                  up to maxlen + slack entries, of which readers see the newest maxlen (see `cut`)
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
local function new_epoch(meta)
  local t = redis.call('TIME')
  local ep = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('HSET', meta, 'ep', ep)
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

-- Retention by length is exact for readers but amortized for writers: an append lets the stream
-- grow to maxlen + slack entries, then cuts it back to maxlen in one go, recording the last entry
-- cut as the floor. Readers see only the newest maxlen entries: the excess (at most slack) is
-- skipped, and the last skipped entry is their floor.
--
-- The visible floor of a stream of `len` entries: the last entry beyond the newest maxlen, or the
-- recorded floor when there is no excess. -> floor id, or nil when nothing was ever cut.
local function visible_floor(stream, meta, maxlen)
  local excess = redis.call('XLEN', stream) - maxlen
  if excess > 0 then
    local cut = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)
    return cut[#cut][1]
  end
  return redis.call('HGET', meta, 'fl')
end

-- Cuts the stream back to its newest maxlen entries, recording the last one cut as the floor.
local function cut(stream, meta, len, maxlen)
  local gone = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - maxlen)
  redis.call('HSET', meta, 'fl', gone[#gone][1])
  redis.call('XTRIM', stream, 'MAXLEN', maxlen)
end

-- A channel's stream and meta expire together, ttl after its last append at the earliest and
-- ttl + ttl/32 at the latest: their expiry is pushed out only when less than ttl remains, so a
-- busy channel pays for it once in ttl/32, not at every append.
local function refresh(stream, meta, ttl)
  local left = redis.call('PTTL', meta)
  if left < ttl then
    local until_ms = string.format('%d', ttl + math.floor(ttl / 32))
    redis.call('PEXPIRE', stream, until_ms)
    redis.call('PEXPIRE', meta, until_ms)
  end
end

-- (from, cid) was stored inside the window already, as `prev`: {1, prev, entry or nothing}.
local function duplicate(stream, ep, prev)
  local sid = string.match(prev, '^%d+%.(%d+%-%d+)$')
  local entry = sid and redis.call('XRANGE', stream, sid, sid) or {}
  if entry[1] and ep .. '.' .. sid == prev then
    return {1, prev, entry[1][2]}
  end
  return {1, prev}
end

-- A Redis error reply caught with pcall, as a message's result: {2, error text}.
local function failed(reply)
  return {2, tostring(reply.err)}
end

-- One message of a batch: XADD, then the dedupe key reserved with the id (SET NX GET: one
-- command); a duplicate's entry is deleted again and the first id answered. An error (a key of
-- the wrong type) fails this message only.
local function append_one(stream, dd, ep, ms, from, data, window, chan)
  -- The broker's clock orders ids (and ages them for trimming); when it is behind the stream's
  -- top (another broker's clock, a fake clock in tests), Redis picks the next id itself.
  local sid = redis.pcall('XADD', stream, ms .. '-*', 'f', from, 'd', data, 't', ms)
  if type(sid) == 'table' then
    sid = redis.pcall('XADD', stream, '*', 'f', from, 'd', data, 't', ms)
    if type(sid) == 'table' then
      return failed(sid)
    end
  end
  local id = ep .. '.' .. sid
  local prev = redis.pcall('SET', dd, id, 'NX', 'GET', 'PX', window)
  if prev then
    redis.call('XDEL', stream, sid)
    if type(prev) == 'table' then
      return failed(prev)
    end
    return duplicate(stream, ep, prev)
  end
  -- Cross-broker live fan-out (issue 4): only when the engine asks for it, i.e. when other
  -- brokers may be subscribed. A lone broker delivers live itself and publishes nothing.
  if chan then
    redis.call('PUBLISH', chan, id .. '\n' .. from .. '\n' .. ms .. '\n' .. data)
  end
  return {0, id}
end

-- After a batch, once per channel it wrote: the cut when the stream outgrew its slack, and the
-- expiry refresh.
local function settle(stream, c)
  local len = redis.pcall('XLEN', stream)
  if type(len) ~= 'number' then
    return
  end
  if len > c.maxlen + c.slack then
    cut(stream, c.meta, len, c.maxlen)
  end
  refresh(stream, c.meta, c.ttl)
end

-- Appends a batch of messages, to one channel or several, each channel's in order.
-- KEYS: per message: stream, meta, dedupe key.
-- ARGV: window_ms, publish ('1' to PUBLISH each message on "{T}:pub" for other brokers, '0'),
-- then per message: ms, from, data, maxlen, ttl_ms, slack.
-- -> one result per message: {0, id} when stored now; {1, id, entry or nothing} when (from, cid)
-- was stored inside the window already; {2, error} when this message failed. A duplicate's
-- entry comes back so that the broker can deliver it live: the first attempt may have been
-- applied without its answer (a timeout, a lost connection, a failed WAIT), and then nobody
-- delivered it. Its fields are {f, from, d, data, t, ts}.
--
-- Per message: XADD and SET NX GET. Per channel of the batch: HGET (epoch), XLEN, PTTL. The cut
-- runs once per slack appends, the expiry refresh once per ttl/32. Keys of several channels
-- share a batch on a single Redis; on Redis Cluster a batch would hold one hash slot's keys.
local function append(keys, args)
  local window, publish = args[1], args[2] == '1'
  local channels, order, out = {}, {}, {}
  for m = 1, #keys / 3 do
    local stream, meta, dd = keys[3 * m - 2], keys[3 * m - 1], keys[3 * m]
    local at = 6 * m - 3
    local c = channels[stream]
    if not c then
      local ep = redis.pcall('HGET', meta, 'ep')
      if type(ep) ~= 'table' then
        ep = ep or new_epoch(meta)
      end
      c = {meta = meta, ep = ep, maxlen = tonumber(args[at + 3]), ttl = tonumber(args[at + 4]),
           slack = tonumber(args[at + 5])}
      channels[stream] = c
      order[#order + 1] = stream
    end
    if type(c.ep) == 'table' then
      out[m] = failed(c.ep)
    else
      local chan = publish and (string.sub(stream, 1, -2) .. 'pub') or nil
      out[m] = append_one(stream, dd, c.ep, args[at], args[at + 1], args[at + 2], window, chan)
    end
  end
  for _, stream in ipairs(order) do
    if type(channels[stream].ep) ~= 'table' then
      settle(stream, channels[stream])
    end
  end
  return out
end

-- KEYS: stream, meta, cursors.  ARGV: device, epoch ('' to start at the device's cursor), stream id,
-- count, maxlen. -> {1, epoch, entries} or {0} when the epoch is not the channel's.
local function read_inbox(keys, args)
  local stream, meta, cur = keys[1], keys[2], keys[3]
  local device, ep, sid, count, maxlen = args[1], args[2], args[3], args[4], tonumber(args[5])
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
  local floor = visible_floor(stream, meta, maxlen)
  if floor and cmp(start, floor) < 0 then
    start = floor
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

-- KEYS: stream, meta.  ARGV: epoch ('' when none), stream id, count, maxlen.
-- -> {covered, epoch, entries}: after the id when the history covers it, else from the oldest entry.
local function read_room(keys, args)
  local stream, meta = keys[1], keys[2]
  local ep, sid, count, maxlen = args[1], args[2], args[3], tonumber(args[4])
  local current = redis.call('HGET', meta, 'ep')
  if not current then
    return {0, '', {}}
  end
  local floor = visible_floor(stream, meta, maxlen)
  local covered = 0
  if ep == current and cmp(floor or '0-0', sid) <= 0 and cmp(sid, tip(stream, meta)) <= 0 then
    covered = 1
  end
  local start = '-'
  if covered == 1 then
    start = '(' .. sid
  elseif floor then
    start = '(' .. floor
  end
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

-- KEYS: stream, meta. -> {epoch, stream id of the newest entry (or the trim floor, or 0-0)}, or {}
-- when the channel does not exist. A subscriber's starting mark (cross-broker fan-out).
local function tip_of(keys, args)
  local current = redis.call('HGET', keys[2], 'ep')
  if not current then
    return {}
  end
  return {current, tip(keys[1], keys[2])}
end

redis.register_function('hermod_append', append)
redis.register_function('hermod_ack', ack)
redis.register_function('hermod_trim', trim)
redis.register_function('hermod_check', check)
redis.register_function{function_name = 'hermod_read_inbox', callback = read_inbox, flags = {'no-writes'}}
redis.register_function{function_name = 'hermod_read_room', callback = read_room, flags = {'no-writes'}}
redis.register_function{function_name = 'hermod_tip', callback = tip_of, flags = {'no-writes'}}
