-- wrk script of `npm run bench` (bench/run.ts). Configured by the environment:
--   BENCH_MODE      rest | graphql | batch (unique messages per request) or static (a fixed request)
--   BENCH_PREFIX    channel name prefix; BENCH_CHANNELS channels, round-robin (see bench/telemetry.ts)
--   BENCH_BATCH     envelopes per request in batch mode
--   BENCH_METHOD, BENCH_PATH, BENCH_BODY   the request in static mode
--   BENCH_OUT       file the JSON summary is written to
-- Message n is the same function of n as `payloadOf`/`timeOf` in bench/telemetry.ts: keep them in step.

local mode = os.getenv("BENCH_MODE") or "rest"
local prefix = os.getenv("BENCH_PREFIX") or "m"
local channels = tonumber(os.getenv("BENCH_CHANNELS") or "10000")
local batch = tonumber(os.getenv("BENCH_BATCH") or "1000")
local out = os.getenv("BENCH_OUT")
local BASE = 1643830745

-- Per-thread state, global so that done() can read it with thread:get().
sent = 0
index = 0
counts = {}
acked = {}
-- Per channel, every number up to upTo[channel] was acknowledged; ahead["channel#n"] is true for a
-- number n acknowledged past it (flat tables: wrk's thread:get cannot copy nested ones).
upTo = {}
ahead = {}

local function payload(n)
  if n == 1 then
    return "RocketLaunched", "ROCKET_LAUNCHED", "rocketLaunched", '{"type":"Falcon-9","launchSpeed":500,"mission":"ARTEMIS"}'
  end
  local r = n % 4
  if r == 0 then
    return "RocketMissionChanged", "ROCKET_MISSION_CHANGED", "rocketMissionChanged", '{"newMission":"MISSION-' .. (n % 13) .. '"}'
  elseif r == 1 then
    return "RocketSpeedIncreased", "ROCKET_SPEED_INCREASED", "rocketSpeedIncreased", '{"by":3}'
  elseif r == 2 then
    return "RocketSpeedIncreased", "ROCKET_SPEED_INCREASED", "rocketSpeedIncreased", '{"by":' .. (n % 97 + 1) .. '}'
  end
  return "RocketSpeedDecreased", "ROCKET_SPEED_DECREASED", "rocketSpeedDecreased", '{"by":' .. (n % 89) .. '}'
end

local function time(n)
  return os.date("!%Y-%m-%dT%H:%M:%S", BASE + n + 3600) .. ".86337+01:00"
end

local function nextMessage()
  sent = sent + 1
  local k = sent - 1
  return prefix .. "-" .. (k % channels), math.floor(k / channels) + 1
end

local function restEnvelope(channel, n)
  local t, _, _, p = payload(n)
  return '{"metadata":{"channel":"' .. channel .. '","messageNumber":' .. n .. ',"messageTime":"' .. time(n)
    .. '","messageType":"' .. t .. '"},"message":' .. p .. '}'
end

local function graphqlEnvelope(channel, n)
  local _, e, f, p = payload(n)
  return '{"metadata":{"channel":"' .. channel .. '","messageNumber":' .. n .. ',"messageTime":"' .. time(n)
    .. '","messageType":"' .. e .. '"},"message":{"' .. f .. '":' .. p .. '}}'
end

local SUBMIT = "mutation Submit($metadata: MessageMetadataInput!, $message: MessagePayloadInput!) "
  .. "{ submitMessage(metadata: $metadata, message: $message) { status channel messageNumber } }"
local SUBMIT_MANY = "mutation SubmitMany($messages: [MessageEnvelopeInput!]!) { submitMessages(messages: $messages) "
  .. "{ ... on SubmitMessagePayload { status channel messageNumber } ... on SubmitMessageError { code message } } }"
local JSON = { ["Content-Type"] = "application/json" }

local function count(name)
  counts[name] = (counts[name] or 0) + 1
end

local function ack(status, channel, n)
  count(status:lower())
  local prev = acked[channel]
  if prev == nil or n > prev then acked[channel] = n end
  local low = upTo[channel] or 0
  if n ~= low + 1 then
    ahead[channel .. "#" .. n] = true
    return
  end
  low = n
  while ahead[channel .. "#" .. (low + 1)] do
    ahead[channel .. "#" .. (low + 1)] = nil
    low = low + 1
  end
  upTo[channel] = low
end

if mode == "static" then
  wrk.method = os.getenv("BENCH_METHOD") or "GET"
  wrk.path = os.getenv("BENCH_PATH") or "/"
  local body = os.getenv("BENCH_BODY")
  if body ~= nil and body ~= "" then
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
  end
else
  local function build()
    if mode == "rest" then
      local channel, n = nextMessage()
      return wrk.format("POST", "/messages", JSON, restEnvelope(channel, n))
    elseif mode == "graphql" then
      local channel, n = nextMessage()
      return wrk.format("POST", "/graphql", JSON,
        '{"query":"' .. SUBMIT .. '","variables":' .. graphqlEnvelope(channel, n) .. '}')
    end
    local parts = {}
    for i = 1, batch do
      local channel, n = nextMessage()
      parts[i] = graphqlEnvelope(channel, n)
    end
    return wrk.format("POST", "/graphql", JSON,
      '{"query":"' .. SUBMIT_MANY .. '","variables":{"messages":[' .. table.concat(parts, ",") .. ']}}')
  end

  -- wrk calls request() once on its first thread to count pipelined requests, and sends nothing: that
  -- call must not use up a message, or its channel would wait forever for the number it skipped.
  local verified = false
  function request()
    if not verified then
      verified = true
      if index == 1 then
        local before = sent
        local r = build()
        sent = before
        return r
      end
    end
    return build()
  end

  function response(status, headers, body)
    if status < 200 or status > 299 then
      count("http" .. status)
      return
    end
    if mode == "batch" then
      for s, channel, n in body:gmatch('"status":"(%a+)","channel":"([^"]*)","messageNumber":(%d+)') do
        ack(s, channel, tonumber(n))
      end
      for code in body:gmatch('"code":"([%u_]+)"') do count("error:" .. code) end
      return
    end
    local s = body:match('"status":"(%a+)"')
    local channel = body:match('"channel":"([^"]*)"')
    local n = body:match('"messageNumber":(%d+)')
    if s ~= nil and channel ~= nil and n ~= nil then
      ack(s, channel, tonumber(n))
    elseif mode == "rest" then
      -- A 2xx of POST /messages acknowledges the message, whatever its body: one we cannot read is not
      -- a refusal but an acknowledgement the oracle cannot account for (bench/oracle.ts fails on it).
      count("unparsed2xx")
    else
      count("error:" .. (body:match('"code":"([%u_]+)"') or "unparsed"))
    end
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("index", #threads)
end

local function object(t)
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = '"' .. k .. '":' .. string.format("%d", v) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Per channel, the numbers below its highest acknowledged that no thread saw acknowledged, as JSON.
local function unacked(ackedAll, seenAll)
  local parts = {}
  for channel, max in pairs(ackedAll) do
    local holes = {}
    for n = 1, max - 1 do
      if not seenAll[channel .. "#" .. n] then holes[#holes + 1] = string.format("%d", n) end
    end
    if #holes > 0 then parts[#parts + 1] = '"' .. channel .. '":[' .. table.concat(holes, ",") .. "]" end
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  if out == nil then return end
  local total, merged, ackedAll, seenAll = 0, {}, {}, {}
  for _, t in ipairs(threads) do
    total = total + t:get("sent")
    for k, v in pairs(t:get("counts")) do merged[k] = (merged[k] or 0) + v end
    for k, v in pairs(t:get("acked")) do
      if ackedAll[k] == nil or v > ackedAll[k] then ackedAll[k] = v end
    end
    for k, low in pairs(t:get("upTo")) do
      for n = 1, low do seenAll[k .. "#" .. n] = true end
    end
    for k in pairs(t:get("ahead")) do seenAll[k] = true end
  end
  local e = summary.errors
  local f = assert(io.open(out, "w"))
  f:write(string.format(
    '{"requests":%d,"durationUs":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latencyUs":{"p50":%d,"p99":%d,"mean":%.1f,"max":%d},"sent":%d,"counts":%s,"acked":%s,"unacked":%s}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max, total, object(merged), object(ackedAll),
    unacked(ackedAll, seenAll)))
  f:close()
end
