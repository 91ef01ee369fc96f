-- Append a batch of event records to users' windows, idempotent by event id, in one call.
--
-- KEYS[i]      the window key of item i (one key may repeat: items run in order)
-- ARGV[1]      N, the most records a window keeps
-- ARGV[2]      the record size in bytes
-- ARGV[3]      the TTL in seconds, set on every window this call changes
-- ARGV[4]      where the event id hash starts inside a record (0-based)
-- ARGV[5]      the length of the event id hash
-- ARGV[6]      the allowed lateness in ms (0: none): how much older than the user's newest
--              record an event may be and still be placed in the window
-- ARGV[6 + i]  the record of item i
--
-- Returns {stored_1, flag_1, stored_2, flag_2, ...}: the window after each item (oldest record
-- first, in time order: a late item within the bound is placed among the records by its time)
-- and a flag: 0 appended; 1 nothing changed as the item's event id was already stored, or the
-- window is full and the item is older than its oldest record (a redelivered event that was
-- evicted since, or one too late to belong in the window); 2 nothing changed as the item is
-- older than the newest record by more than the allowed lateness.
-- Records start with the time: epoch seconds (u32 LE), then ms in the low 10 bits of a u16 LE.
-- A window is a plain string of records: the smallest thing Redis can hold them in.

local max_events = tonumber(ARGV[1])
local size = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local eid_start = tonumber(ARGV[4])
local eid_len = tonumber(ARGV[5])
local lateness = tonumber(ARGV[6])
local keep = max_events * size

-- Each key is read once and written once, however often it appears in the batch.
local windows = {}
local changed = {}
local order = {}

local function has_event_id(stored, eid)
    -- A plain find, then the match must sit at a record's event id offset.
    local from = 1
    while true do
        local at = string.find(stored, eid, from, true)
        if not at then
            return false
        end
        if (at - 1 - eid_start) % size == 0 then
            return true
        end
        from = at + 1
    end
end

local function time_ms(s, at)
    local b1, b2, b3, b4, b5, b6 = string.byte(s, at, at + 5)
    return (b1 + b2 * 256 + b3 * 65536 + b4 * 16777216) * 1000 + (b5 + b6 * 256) % 1024
end

local out = {}
for i, key in ipairs(KEYS) do
    local record = ARGV[6 + i]
    local stored = windows[key]
    if stored == nil then
        stored = redis.call('GET', key) or ''
        windows[key] = stored
    end
    local eid = string.sub(record, eid_start + 1, eid_start + eid_len)
    local t = time_ms(record, 1)
    if has_event_id(stored, eid) or (#stored >= keep and t < time_ms(stored, 1)) then
        out[#out + 1] = stored
        out[#out + 1] = 1
    elseif lateness > 0 and #stored > 0 and t < time_ms(stored, #stored - size + 1) - lateness then
        out[#out + 1] = stored
        out[#out + 1] = 2
    else
        -- after every record not newer than it: arrival order for events in time order
        local at = #stored
        while at > 0 and time_ms(stored, at - size + 1) > t do
            at = at - size
        end
        stored = string.sub(stored, 1, at) .. record .. string.sub(stored, at + 1)
        if #stored > keep then
            stored = string.sub(stored, #stored - keep + 1)
        end
        windows[key] = stored
        if not changed[key] then
            changed[key] = true
            order[#order + 1] = key
        end
        out[#out + 1] = stored
        out[#out + 1] = 0
    end
end

for _, key in ipairs(order) do
    redis.call('SET', key, windows[key], 'EX', ttl)
end
return out
