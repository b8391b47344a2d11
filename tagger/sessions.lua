-- Session manager, run inside the server so each call's effects are atomic:
-- ARGV[1] picks the operation: 'tag' (a batch of input entries), 'sweep' (close idle
-- sessions), 'control' (an explicit start or end request).
--
-- KEYS: 1 input stream, 2 output stream, 3 dead-letter stream, 4 active sessions
--       (hash user_id -> state, see pack()), 5 dedup zset (record_id
--       by tag time), 6 session index (zset sid by start_ms), 7 deadlines (zset sid by
--       wall-clock ms), 8 control stream, 9 control replies stream, 10 counter names
--       (hash: the numbers of registry counters in the states, see K_NAMES below)
-- ARGV: 1 op, 2 group, 3 timeout_ms, 4 max_session_ms, 5 dedup_window_ms,
--       6 session key prefix, 7 user key prefix, then the op's own arguments.

local K_INPUT, K_OUTPUT, K_DEAD, K_ACTIVE, K_DEDUP = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_INDEX, K_DEADLINES, K_CONTROL, K_REPLIES = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local K_NAMES = KEYS[10]
local op, group = ARGV[1], ARGV[2]
local timeout_ms, max_session_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local dedup_window_ms = tonumber(ARGV[5])
local session_prefix, user_prefix = ARGV[6], ARGV[7]
local LATE_CANDIDATES = 8

local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
-- Lua 5.1 turns a number argument of redis.call into a string with sprintf('%.17g'); a
-- value sent once per event is formatted once per call instead.
local now_str = string.format('%d', now_ms)

-- UTC "YYYY-MM-DDTHH:MM:SS.mmmZ" from epoch ms (days-to-civil, proleptic Gregorian).
local function iso(ms)
  local days = math.floor(ms / 86400000)
  local rem = ms - days * 86400000
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(rem / 3600000), math.floor(rem / 60000) % 60, math.floor(rem / 1000) % 60,
    rem % 1000)
end

-- A UUIDv4-shaped id derived from a name, so a replay reproduces boundary record_ids.
local function uuid_for(name)
  local h = redis.sha1hex(name)
  local variant = string.format('%x', 8 + tonumber(string.sub(h, 17, 17), 16) % 4)
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-4' .. string.sub(h, 14, 16)
    .. '-' .. variant .. string.sub(h, 18, 20) .. '-' .. string.sub(h, 21, 32)
end

local function json_or_null(v)
  if v == nil or v == false or v == '' then return 'null' end
  return cjson.encode(v)
end

-- redis.call(head..., items[j..j+chunk-1]) for each chunk: one call for many items
-- instead of one per item (each call costs microseconds of its own); chunks keep unpack
-- within Lua's stack limit. Array replies (HMGET, ZMSCORE) come back concatenated, one
-- per item.
local function bulk(head, items, chunk)
  local replies = {}
  for j = 1, #items, chunk do
    local call = {unpack(head)}
    for k = j, math.min(j + chunk - 1, #items) do call[#call + 1] = items[k] end
    local part = redis.call(unpack(call))
    if type(part) == 'table' then
      for k = 1, #part do replies[#replies + 1] = part[k] end
    end
  end
  return replies
end

-- An active session's state, binary: version byte 3, start_ms, last_ms, seq and
-- first_ms as doubles (exact for integers below 2^53), the lengths of the session id and
-- of the counter list, the session id, then per registry counter (late_events,
-- modality:*, source:*) its number in K_NAMES (2 bytes) and its value (a double); then
-- padding to STATE_BYTES.
-- The counters ride here so that a batch writes one value per user rather than a call
-- per counter and session; the registry hash gets the figures when the session closes
-- (tagger/registry.py reads an active session's from here). Binary because every batch
-- packs and unpacks it for each of its users: as text, the number formatting and
-- parsing cost more than the batch's commands. Counters by number rather than by name
-- (as version 2 had them: value, name, "\n"): a state less than half the size,
-- unpacked and packed by one struct call each, 5% fewer server instructions per event
-- (bench/instructions.py). Padded because a hash whose values all fit in
-- hash-max-listpack-value (64 bytes by default) stays a listpack up to 512 fields, and
-- HMGET then searches the list for every user (1.2M instructions instead of ~35k per
-- 470-user batch, counted with callgrind as bench/instructions.py does).
local STATE_BYTES = 72
local STATE_HEAD = '<BddddBH'

-- K_NAMES holds, per counter name, its number (field: the name) and, per number, its
-- name (field: '#' and the number; counter names never start with '#'), and the last
-- number given ('#last'). Only the names a call needs are read, so a producer that sends
-- a new source with every event costs a bigger hash, not a slower batch. Numbers fit in
-- two bytes: past that, new names count together as OVERFLOW.
local MAX_NUMBER = 65535
local OVERFLOW = 'source:(more counter names than a partition numbers)'
local number_of = {}  -- the numbers read or given in this call, by name

-- A counter's number, given to it in K_NAMES the first time the partition sees it.
local function counter_number(name)
  local n = number_of[name]
  if n then return n end
  n = tonumber(redis.call('HGET', K_NAMES, name))
  if not n then
    n = redis.call('HINCRBY', K_NAMES, '#last', 1)
    if n < MAX_NUMBER then
      redis.call('HSET', K_NAMES, name, n, '#' .. n, name)
    else  -- not kept: the hash stops growing here
      n = MAX_NUMBER
      redis.call('HSET', K_NAMES, '#' .. n, OVERFLOW)
    end
  end
  number_of[name] = n
  return n
end

local values_formats = {}
local function values_format(n)
  local format = values_formats[n]
  if not format then
    format = '<' .. string.rep('Hd', n)
    values_formats[n] = format
  end
  return format
end

-- Counters per struct call: Lua's C stack holds a few thousand values at most.
local VALUES_CHUNK = 1000

-- flat: number, value, number, value, ... of n counters.
local function pack_values(flat, n)
  if n <= VALUES_CHUNK then return struct.pack(values_format(n), unpack(flat)) end
  local parts = {}
  for i = 1, n, VALUES_CHUNK do
    local j = math.min(i + VALUES_CHUNK - 1, n)
    parts[#parts + 1] = struct.pack(values_format(j - i + 1), unpack(flat, 2 * i - 1, 2 * j))
  end
  return table.concat(parts)
end

-- The n counters packed at pos into values (number -> value).
local function unpack_values(packed, pos, n, values)
  if n <= VALUES_CHUNK then
    local flat = {struct.unpack(values_format(n), packed, pos)}
    for x = 1, 2 * n, 2 do values[flat[x]] = flat[x + 1] end
    return
  end
  for i = 1, n, VALUES_CHUNK do
    local k = math.min(VALUES_CHUNK, n - i + 1)
    local part = {struct.unpack(values_format(k), packed, pos)}
    for x = 1, 2 * k, 2 do values[part[x]] = part[x + 1] end
    pos = part[2 * k + 1]
  end
end

-- values: counter number -> value; named: nil, or counters by name not yet numbered (a
-- state of an earlier version: numbers are given when the state is next packed, by a
-- call that type-checked K_NAMES).
local function new_state(sid, user, start, last, seq, first, values, named)
  return {sid = sid, user = user, start = start, last = last, seq = seq, first = first,
          values = values, named = named}
end

local function add(s, number, n)
  s.values[number] = (s.values[number] or 0) + n
end

-- Numbers of the modalities and sources counted in this call, by their plain names.
local modality_numbers, source_numbers = {}, {}

-- Counts `name` (if any) under `prefix`; `numbers` keeps its counter number for the rest
-- of the call, so the prefixed name is built once per call rather than per event.
local function count_named(s, numbers, prefix, name)
  if name == '' then return end
  local n = numbers[name]
  if not n then
    n = counter_number(prefix .. name)
    numbers[name] = n
  end
  add(s, n, 1)
end

-- An event counted in its active session (late: it came before the session's start).
local function count_event(s, modality, source, late)
  if late then add(s, counter_number('late_events'), 1) end
  count_named(s, modality_numbers, 'modality:', modality)
  count_named(s, source_numbers, 'source:', source)
end

-- name -> value of every counter of the session.
local function counters(s)
  local numbers, fields = {}, {}
  for number in pairs(s.values) do
    numbers[#numbers + 1] = number
    fields[#fields + 1] = '#' .. number
  end
  local found, names = {}, bulk({'HMGET', K_NAMES}, fields, 1000)
  for k, number in ipairs(numbers) do
    -- (A number K_NAMES lacks: the hash was deleted by hand.)
    found[names[k] or ('unknown_counter:' .. number)] = s.values[number]
  end
  if s.named then
    for name, n in pairs(s.named) do found[name] = (found[name] or 0) + n end
  end
  return found
end

local function pack(s)
  if s.named then
    for name, n in pairs(s.named) do add(s, counter_number(name), n) end
    s.named = nil
  end
  local flat, n_values = {}, 0
  for number, n in pairs(s.values) do
    flat[2 * n_values + 1], flat[2 * n_values + 2] = number, n
    n_values = n_values + 1
  end
  local packed = struct.pack(STATE_HEAD, 3, s.start, s.last, s.seq, s.first, #s.sid,
    n_values) .. s.sid .. pack_values(flat, n_values)
  return packed .. string.rep(' ', STATE_BYTES - #packed)
end

-- Counters as the registry hash holds them (a state packed by a version that wrote them
-- there at every batch).
local function registry_counts(sid)
  local counts, fields = {}, redis.call('HGETALL', session_prefix .. sid)
  for k = 1, #fields, 2 do
    local name = fields[k]
    if name == 'late_events' or string.find(name, '^modality:')
        or string.find(name, '^source:') then
      counts[name] = tonumber(fields[k + 1])
    end
  end
  return counts
end

local function unpack_state(user, packed)
  local version = string.byte(packed, 1)
  if version ~= 2 and version ~= 3 then  -- the text form of the earliest versions
    local sid, start, last, seq, first = string.match(packed,
      '^(%S+) (-?%d+) (-?%d+) (%d+) (-?%d+)$')
    return new_state(sid, user, tonumber(start), tonumber(last), tonumber(seq),
      tonumber(first), {}, registry_counts(sid))
  end
  local _, start, last, seq, first, sid_len, n_values, pos = struct.unpack(STATE_HEAD, packed)
  local s = new_state(string.sub(packed, pos, pos + sid_len - 1), user, start, last, seq,
    first, {})
  pos = pos + sid_len
  if version == 2 then  -- per counter: its value, its name, "\n"
    s.named = {}
    for _ = 1, n_values do
      local n, name_at = struct.unpack('<d', packed, pos)
      local stop = string.find(packed, '\n', name_at, true)
      s.named[string.sub(packed, name_at, stop - 1)] = n
      pos = stop + 1
    end
    return s
  end
  unpack_values(packed, pos, n_values, s.values)
  return s
end

local function publish_boundary(kind, user, sid, json)
  redis.call('XADD', K_OUTPUT, '*', 'data', json, 'user_id', user, 'session_id', sid,
    'kind', kind)
end

-- Opens a session: registry, indexes, deadline and its session.start event.
local function open_session(user, sid, start_ms, performer, meta)
  local key = session_prefix .. sid
  redis.call('HSET', key, 'session_id', sid, 'user_id', user, 'status', 'active',
    'start_ms', start_ms, 'start_time', iso(start_ms), 'opened_by', performer,
    'is_training_data', meta.is_training_data and 'true' or 'false',
    'session_notes', meta.notes or '', 'training_intent_label', meta.label or '',
    'events', 0, 'seq', 0)
  redis.call('ZADD', K_INDEX, start_ms, sid)
  redis.call('ZADD', user_prefix .. user, start_ms, sid)
  redis.call('ZADD', K_DEADLINES, now_ms + timeout_ms, sid)
  publish_boundary('session.start', user, sid, '{"schema_version":"1.0.1","record_id":"'
    .. uuid_for(sid .. ':start') .. '","user_id":' .. cjson.encode(user)
    .. ',"session_id":"' .. sid .. '","timestamp":"' .. iso(now_ms)
    .. '","source":"session_manager","performer_id":' .. cjson.encode(performer)
    .. ',"start_time":"' .. iso(start_ms) .. '","is_training_data":'
    .. (meta.is_training_data and 'true' or 'false') .. ',"session_notes":'
    .. json_or_null(meta.notes) .. ',"training_intent_label":' .. json_or_null(meta.label)
    .. ',"kind":"session.start"}')
  return new_state(sid, user, start_ms, start_ms, 0, -1, {})
end

-- Writes a session's figures (from its state) into its registry hash.
local function flush_counts(s)
  local call = {'HSET', session_prefix .. s.sid, 'seq', s.seq, 'events', s.seq,
    'last_ms', s.last, 'first_event_ms', s.first,
    'last_event_ms', s.seq > 0 and s.last or -1}
  for field, n in pairs(counters(s)) do
    call[#call + 1] = field
    call[#call + 1] = n
  end
  redis.call(unpack(call))
end

-- Closes an active session: registry, indexes and its session.end event.
local function close_session(s, reason, performer, end_ms)
  flush_counts(s)
  local key = session_prefix .. s.sid
  redis.call('HSET', key, 'status', 'closed', 'close_reason', reason, 'end_ms', end_ms,
    'end_time', iso(end_ms), 'closed_by', performer, 'closed_at', iso(now_ms))
  redis.call('HDEL', K_ACTIVE, s.user)
  redis.call('ZREM', K_DEADLINES, s.sid)
  local has_events = s.seq > 0
  -- The end event repeats the start's metadata, so a file reader needs no registry.
  local meta = redis.call('HMGET', key, 'session_notes', 'is_training_data',
    'training_intent_label')
  publish_boundary('session.end', s.user, s.sid, '{"schema_version":"1.0.1","record_id":"'
    .. uuid_for(s.sid .. ':end') .. '","user_id":' .. cjson.encode(s.user)
    .. ',"session_id":"' .. s.sid .. '","timestamp":"' .. iso(now_ms)
    .. '","source":"session_manager","performer_id":' .. cjson.encode(performer)
    .. ',"start_time":"' .. iso(s.start) .. '","is_training_data":'
    .. (meta[2] == 'true' and 'true' or 'false') .. ',"session_notes":'
    .. json_or_null(meta[1]) .. ',"training_intent_label":' .. json_or_null(meta[3])
    .. ',"end_time":"' .. iso(end_ms) .. '","close_reason":"' .. reason
    .. '","event_count":' .. s.seq
    .. ',"first_event_time":' .. (has_events and ('"' .. iso(s.first) .. '"') or 'null')
    .. ',"last_event_time":' .. (has_events and ('"' .. iso(s.last) .. '"') or 'null')
    .. ',"kind":"session.end"}')
end

local function active_session(user)
  local packed = redis.call('HGET', K_ACTIVE, user)
  if packed then return unpack_state(user, packed) end
  return nil
end

local function new_sid(user, seed)
  return 'sess_' .. string.sub(redis.sha1hex(user .. '\0' .. seed), 1, 16)
end

-- The session a late event belongs to: the most recent one whose span, widened by the
-- timeout, holds ts; else the nearest in time. Returns (sid, is_active).
local function session_for_late(user, ts, active)
  local sids = redis.call('ZREVRANGE', user_prefix .. user, 0, LATE_CANDIDATES - 1)
  local best, best_distance
  for _, sid in ipairs(sids) do
    local start, first, last
    if active and sid == active.sid then
      start, first, last = active.start, active.first, active.last
    else
      local r = redis.call('HMGET', session_prefix .. sid, 'start_ms', 'first_event_ms',
        'last_event_ms')
      start, first, last = tonumber(r[1]), tonumber(r[2] or -1), tonumber(r[3] or -1)
    end
    local lo = (first >= 0 and first < start) and first or start
    local hi = last > start and last or start
    if ts >= lo - timeout_ms and ts <= hi + timeout_ms then
      return sid
    end
    local distance = ts < lo and lo - ts or ts - hi
    if best == nil or distance < best_distance then
      best, best_distance = sid, distance
    end
  end
  return best
end

-- A late event tagged into a closed session updates that session's registry directly.
local function seq_in_closed(sid, ts, modality, source)
  local key = session_prefix .. sid
  local seq = redis.call('HINCRBY', key, 'seq', 1)
  redis.call('HINCRBY', key, 'events', 1)
  redis.call('HINCRBY', key, 'late_events', 1)
  if modality ~= '' then redis.call('HINCRBY', key, 'modality:' .. modality, 1) end
  if source ~= '' then redis.call('HINCRBY', key, 'source:' .. source, 1) end
  local r = redis.call('HMGET', key, 'first_event_ms', 'last_event_ms')
  local first, last = tonumber(r[1] or -1), tonumber(r[2] or -1)
  if first < 0 or ts < first then redis.call('HSET', key, 'first_event_ms', ts) end
  if ts > last then redis.call('HSET', key, 'last_event_ms', ts) end
  return seq
end

-- A script that fails half-way keeps the writes it made (Redis has no rollback), so the
-- keys an operation will touch, where they can be named up front, are type-checked
-- before the first write: `expected` maps key -> type, and `users` adds each user's index
-- of sessions. Returns the first key holding a foreign type, or nil.
local function preflight(expected, users)
  for _, user in ipairs(users) do
    expected[user_prefix .. user] = 'zset'
  end
  for key, kind in pairs(expected) do
    local actual = redis.call('TYPE', key)['ok']
    if actual ~= kind and actual ~= 'none' then
      return key
    end
  end
  return nil
end

-- Entry ids in [first_id, last_id] still pending in the group. Another consumer (one
-- that took over while this one stalled) may have finished some of the batch already.
local function still_pending(first_id, last_id)
  local pending, start = {}, first_id
  while true do
    local page = redis.call('XPENDING', K_INPUT, group, start, last_id, 1000)
    for _, p in ipairs(page) do pending[p[1]] = true end
    if #page < 1000 then return pending end
    start = '(' .. page[#page][1]
  end
end

-- The active session of each user (false when none), read in one call.
local function active_sessions(users)
  local sessions, packed = {}, bulk({'HMGET', K_ACTIVE}, users, 1000)
  for k, user in ipairs(users) do
    sessions[user] = packed[k] and unpack_state(user, packed[k])
  end
  return sessions
end

-- The users whose index of sessions a batch may touch (to find the latest session, to
-- open one, or to place a late event): those without an active session, and those with
-- an event before their session's start or far enough after its last event (by the
-- state before the batch, so never fewer than the batch will touch) to close it. Events
-- of the others only extend the session they have.
local function touching_index(meta, n_events, sessions)
  local touching, users = {}, {}
  for e = 1, n_events do
    local user, ts = meta[e * 7 - 5], meta[e * 7 - 3]
    local s = sessions[user]
    if not touching[user] and (not s or ts < s.start or ts - s.last > timeout_ms
        or ts - s.start >= max_session_ms) then
      touching[user] = true
      users[#users + 1] = user
    end
  end
  return users
end

-- Which record_ids were tagged before (inside the dedup window), read in one call.
local function already_tagged(record_ids)
  local known, scores = {}, bulk({'ZMSCORE', K_DEDUP}, record_ids, 1000)
  for k, record_id in ipairs(record_ids) do
    if scores[k] then known[record_id] = true end
  end
  return known
end

local function tag(args)
  -- args: first and last entry id of the batch, event count, a JSON array with per event
  -- entry_id, user_id, record_id, ts_ms, upstream_session_id, modality, source (seven
  -- values each, one after the other), then each event's head; then per dead letter:
  -- entry_id, field count, field, value, ...
  -- (One JSON argument instead of seven per event: the client spent more time packing
  -- thousands of small arguments than this script spends decoding them. One flat array
  -- rather than an array per event: decoding 500 small tables cost ~3% of a batch.)
  -- Session boundaries depend on order: a batch never overtakes an older entry that a
  -- crashed or slower consumer still holds.
  local older = redis.call('XPENDING', K_INPUT, group, '-', '(' .. args[1], 1)
  if #older > 0 then
    return {-1, older[1][1]}
  end
  local n_events = tonumber(args[3])
  local meta = cjson.decode(args[4])
  local users, distinct, record_ids = {}, {}, {}
  for e = 1, n_events do
    local user = meta[e * 7 - 5]
    if users[user] == nil then
      users[user] = true
      distinct[#distinct + 1] = user
    end
    record_ids[e] = meta[e * 7 - 4]
  end
  -- Checked in two steps, so that only the users who need it cost a TYPE call each.
  local bad_key = preflight({[K_ACTIVE] = 'hash', [K_DEDUP] = 'zset',
                             [K_OUTPUT] = 'stream', [K_DEADLINES] = 'zset',
                             [K_NAMES] = 'hash'}, {})
  if bad_key then
    return {-2, bad_key}
  end
  local sessions = #distinct > 0 and active_sessions(distinct) or {}
  local touching = touching_index(meta, n_events, sessions)
  local more = {}
  if #touching > 0 then more[K_INDEX] = 'zset' end
  if #args > 4 + n_events then more[K_DEAD] = 'stream' end
  bad_key = preflight(more, touching)
  if bad_key then
    return {-2, bad_key}
  end
  redis.call('ZREMRANGEBYSCORE', K_DEDUP, '-inf', now_ms - dedup_window_ms)
  local pending = still_pending(args[1], args[2])
  local known = n_events > 0 and already_tagged(record_ids) or {}
  local acked, fresh = {}, {}  -- entry ids to ack; score/record_id pairs for dedup
  local tagged, duplicates, dead_count, opened, already_acked = 0, 0, 0, 0, 0
  local closed, closed_max_duration, late, upstream_mismatch = 0, 0, 0, 0
  for e = 1, n_events do
    local at = e * 7 - 7
    local entry_id, user, record_id = meta[at + 1], meta[at + 2], meta[at + 3]
    local ts, head, upstream = meta[at + 4], args[4 + e], meta[at + 5]
    local modality, source = meta[at + 6], meta[at + 7]
    if not pending[entry_id] then
      already_acked = already_acked + 1  -- another consumer finished it: skip it
    elseif known[record_id] then
      acked[#acked + 1] = entry_id
      duplicates = duplicates + 1
    else
      acked[#acked + 1] = entry_id
      known[record_id] = true
      fresh[#fresh + 1] = now_str
      fresh[#fresh + 1] = record_id
      local s = sessions[user]
      local latest_start = s and s.start or nil
      if not s then
        local newest = redis.call('ZREVRANGE', user_prefix .. user, 0, 0, 'WITHSCORES')
        if #newest > 0 then latest_start = tonumber(newest[2]) end
      end
      local sid, seq, is_late
      if latest_start ~= nil and ts < latest_start then
        -- Older than the user's latest session: no session opens retroactively.
        is_late = true
        late = late + 1
        sid = session_for_late(user, ts, s)
        if s and sid == s.sid then
          s.seq = s.seq + 1
          seq = s.seq
          if s.first < 0 or ts < s.first then s.first = ts end
          count_event(s, modality, source, true)
        else
          seq = seq_in_closed(sid, ts, modality, source)
        end
      else
        if s and (ts - s.last > timeout_ms or ts - s.start >= max_session_ms) then
          local reason = ts - s.last > timeout_ms and 'timeout' or 'max_duration'
          close_session(s, reason, 'system', s.seq > 0 and s.last or s.start)
          closed = closed + 1
          if reason == 'max_duration' then closed_max_duration = closed_max_duration + 1 end
          s = false
        end
        if not s then
          s = open_session(user, new_sid(user, record_id), ts, 'system', {})
          opened = opened + 1
        end
        if ts > s.last then s.last = ts end
        if s.first < 0 or ts < s.first then s.first = ts end
        s.seq = s.seq + 1
        seq = s.seq
        sid = s.sid
        count_event(s, modality, source, false)
      end
      sessions[user] = s
      local tail = '}'
      if upstream ~= '' and upstream ~= sid then
        tail = ',"upstream_session_id":' .. cjson.encode(upstream) .. tail
        upstream_mismatch = upstream_mismatch + 1
      end
      if is_late then tail = ',"late":true' .. tail end
      -- One concatenation: each partial string would be copied and hashed in full.
      local data = head .. ',"session_id":"' .. sid .. '","session_seq":' .. seq .. tail
      redis.call('XADD', K_OUTPUT, '*', 'data', data, 'user_id', user, 'session_id', sid,
        'kind', 'message')
      tagged = tagged + 1
    end
  end

  local i = 5 + n_events
  while i <= #args do
    local entry_id, n_fields = args[i], tonumber(args[i + 1])
    if not pending[entry_id] then
      already_acked = already_acked + 1
    else
      acked[#acked + 1] = entry_id
      redis.call('XADD', K_DEAD, '*', unpack(args, i + 2, i + 1 + n_fields))
      dead_count = dead_count + 1
    end
    i = i + 2 + n_fields
  end

  bulk({'XACK', K_INPUT, group}, acked, 1000)
  bulk({'ZADD', K_DEDUP}, fresh, 2000)
  local states, deadlines, deadline = {}, {}, string.format('%d', now_ms + timeout_ms)
  for _, user in ipairs(distinct) do
    local s = sessions[user]
    if s then
      states[#states + 1] = user
      states[#states + 1] = pack(s)
      deadlines[#deadlines + 1] = deadline
      deadlines[#deadlines + 1] = s.sid
    end
  end
  bulk({'HSET', K_ACTIVE}, states, 2000)
  bulk({'ZADD', K_DEADLINES}, deadlines, 2000)
  return {tagged, duplicates, dead_count, opened, already_acked, closed, late,
          upstream_mismatch, closed_max_duration}
end

-- Closes sessions whose wall-clock deadline has passed. args: 1 max sessions to close.
local function sweep(args)
  local due = redis.call('ZRANGEBYSCORE', K_DEADLINES, '-inf', now_ms, 'LIMIT', 0, args[1])
  local closed = 0
  for _, sid in ipairs(due) do
    local user = redis.call('HGET', session_prefix .. sid, 'user_id')
    local s = user and active_session(user)
    if s and s.sid == sid then
      close_session(s, 'timeout', 'system', s.seq > 0 and s.last or s.start)
      closed = closed + 1
    else
      redis.call('ZREM', K_DEADLINES, sid)  -- stale: already closed some other way
    end
  end
  return {closed, #due}
end

local function reply(request_id, status, sid, reason)
  redis.call('XADD', K_REPLIES, '*', 'request_id', request_id, 'status', status,
    'session_id', sid or '', 'reason', reason or '')
  return {status, sid or '', reason or ''}
end

-- An explicit start or end. args: entry_id, action, request_id, user_id, performer_id,
-- ts_ms, session_id, notes, is_training_data ('1'/'0'), training_intent_label, supersede.
local function control(args)
  local entry_id, action, request_id, user = args[1], args[2], args[3], args[4]
  local performer, ts, sid = args[5], tonumber(args[6]), args[7]
  local bad_key = preflight({[K_OUTPUT] = 'stream', [K_ACTIVE] = 'hash', [K_INDEX] = 'zset',
    [K_DEADLINES] = 'zset', [K_REPLIES] = 'stream', [K_NAMES] = 'hash'}, {user})
  if bad_key then
    return redis.error_reply('key ' .. bad_key .. ' holds a foreign type; inspect it')
  end
  if redis.call('XACK', K_CONTROL, group, entry_id) == 0 then
    return {'skipped', '', 'already handled'}
  end
  local active = active_session(user)
  if action == 'start' then
    if active and args[11] ~= '1' then
      return reply(request_id, 'ok', active.sid, 'already_active')
    end
    if active then
      close_session(active, 'superseded', performer, math.max(active.last, ts))
    end
    local meta = {notes = args[8], is_training_data = args[9] == '1', label = args[10]}
    local s = open_session(user, new_sid(user, request_id), ts, performer, meta)
    redis.call('HSET', K_ACTIVE, user, pack(s))
    return reply(request_id, 'ok', s.sid, active and 'superseded' or 'started')
  end
  local owner_status = redis.call('HMGET', session_prefix .. sid, 'user_id', 'status')
  if not owner_status[1] then
    return reply(request_id, 'error', sid, 'not_found')
  elseif owner_status[1] ~= user then
    return reply(request_id, 'error', sid, 'forbidden')
  elseif owner_status[2] ~= 'active' or not active or active.sid ~= sid then
    return reply(request_id, 'error', sid, 'already_closed')
  end
  close_session(active, 'explicit', performer, math.max(active.last, ts))
  return reply(request_id, 'ok', sid, 'ended')
end

local rest = {}
for n = 8, #ARGV do rest[#rest + 1] = ARGV[n] end
if op == 'tag' then return tag(rest) end
if op == 'sweep' then return sweep(rest) end
if op == 'control' then return control(rest) end
return redis.error_reply('unknown operation ' .. tostring(op))
