-- Tags one batch atomically: acks input entries, drops duplicates, assigns sessions,
-- writes tagged events and dead letters. Either all of a batch's effects happen or none.
--
-- KEYS: 1 input stream, 2 output stream, 3 dead-letter stream,
--       4 session state hash (user_id -> "session_id start_ms last_ms"), 5 dedup zset
-- ARGV: 1 group, 2 timeout_ms, 3 max_session_ms, 4 dedup_window_ms, 5 first entry id
--       of the batch, 6 event count,
--       then per event: entry_id, user_id, record_id, ts_ms, head, upstream_session_id,
--       then per dead letter: entry_id, field count, field, value, ...
-- Returns {tagged, duplicates, dead, opened, already_acked}, or {-1, older_entry_id} when
-- an older entry is still pending: entries are tagged in stream order, so the batch waits.

local input, output, dead, state, dedup = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group = ARGV[1]
local timeout_ms = tonumber(ARGV[2])
local max_session_ms = tonumber(ARGV[3])
local dedup_window_ms = tonumber(ARGV[4])
local n_events = tonumber(ARGV[6])

-- Session boundaries depend on order: a batch never overtakes an older entry that a
-- crashed or slower consumer still holds.
local older = redis.call('XPENDING', input, group, '-', '(' .. ARGV[5], 1)
if #older > 0 then
  return {-1, older[1][1]}
end

local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', dedup, '-inf', now_ms - dedup_window_ms)

local tagged, duplicates, dead_count, opened, already_acked = 0, 0, 0, 0, 0
local sessions = {}  -- user_id -> {sid, start_ms, last_ms}, or false when the user has none
local changed = {}

local function load_session(user)
  local s = sessions[user]
  if s == nil then
    local packed = redis.call('HGET', state, user)
    if packed then
      local sid, start_ms, last_ms = string.match(packed, '^(%S+) (-?%d+) (-?%d+)$')
      s = {sid, tonumber(start_ms), tonumber(last_ms)}
    else
      s = false
    end
    sessions[user] = s
  end
  return s
end

local i = 7
for _ = 1, n_events do
  local entry_id, user, record_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local ts, head, upstream = tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5]
  i = i + 6
  -- XACK answers 0 when another consumer already finished this entry: skip it.
  if redis.call('XACK', input, group, entry_id) == 0 then
    already_acked = already_acked + 1
  elseif redis.call('ZADD', dedup, 'NX', now_ms, record_id) == 0 then
    duplicates = duplicates + 1
  else
    local s = load_session(user)
    if (not s) or ts - s[3] > timeout_ms or ts - s[2] >= max_session_ms then
      -- Derived from the opening event, so a replay of the same input gives the same ids.
      s = {'sess_' .. string.sub(redis.sha1hex(user .. '\0' .. record_id), 1, 16), ts, ts}
      sessions[user] = s
      opened = opened + 1
    elseif ts > s[3] then
      s[3] = ts
    end
    changed[user] = s
    local data = head .. ',"session_id":"' .. s[1] .. '"'
    if upstream ~= '' and upstream ~= s[1] then
      data = data .. ',"upstream_session_id":' .. cjson.encode(upstream)
    end
    redis.call('XADD', output, '*', 'data', data .. '}', 'user_id', user, 'session_id', s[1])
    tagged = tagged + 1
  end
end

while i <= #ARGV do
  local entry_id, n_fields = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('XACK', input, group, entry_id) == 0 then
    already_acked = already_acked + 1
  else
    redis.call('XADD', dead, '*', unpack(ARGV, i + 2, i + 1 + n_fields))
    dead_count = dead_count + 1
  end
  i = i + 2 + n_fields
end

for user, s in pairs(changed) do
  redis.call('HSET', state, user, s[1] .. ' ' .. s[2] .. ' ' .. s[3])
end

return {tagged, duplicates, dead_count, opened, already_acked}
