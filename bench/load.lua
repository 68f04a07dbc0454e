-- wrk script for the HTTP benchmarks (bench/http.py writes the files it reads).
-- args: <template> <tokens file> <threads> <mode: same|cycle> [cycle: each thread's start index, "i0,i1,..."]
-- The template is an HTTP request: "METHOD /path", header lines, a blank line, the body. "@TOKEN@" in a header
-- value or the body is replaced by a token. "same": every request carries the first token of the file (one
-- prebuilt request, so wrk does no per-request work). "cycle": thread k takes every k-th token of the file and
-- cycles through its share, so two threads never send the same token at the same time; `wraps` counts how many
-- times a thread came back to its first token (0 = every request carried a token not seen before in this run).
-- Each thread starts where it stopped in the previous run (its own index: threads send different numbers of
-- requests, so one shared position would make the faster thread send its last tokens again).
-- done() prints one line "BENCH_JSON {...}" with the figures bench/http.py parses (latencies in microseconds),
-- each thread's next index ("ends") and the requests each thread generated ("sent", in flight ones included).

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function split(text)
  local pre, post = text:match("^(.-)@TOKEN@(.*)$")
  if pre then return { pre, post } end
  return { text }
end

local method, path, header_parts, body_parts, fixed
local tokens, count = {}, 0
pos = 0    -- this thread's next token, an index into its share (globals: done() reads them with thread:get)
sent = 0
wraps = 0
n = 0

local function build(token)
  local headers = {}
  for name, parts in pairs(header_parts) do
    headers[name] = parts[2] and (parts[1] .. token .. parts[2]) or parts[1]
  end
  local body = body_parts[2] and (body_parts[1] .. token .. body_parts[2]) or body_parts[1]
  if body == "" then body = nil end
  return wrk.format(method, path, headers, body)
end

function init(args)
  local template = read_file(args[1])
  local head, body = template:match("^(.-)\n\n(.*)$")
  if not head then head, body = template, "" end
  body = body:gsub("\n$", "")
  header_parts = {}
  local first = true
  for line in head:gmatch("[^\n]+") do
    if first then
      method, path = line:match("^(%S+)%s+(%S+)$")
      first = false
    else
      local name, value = line:match("^([^:]+):%s*(.*)$")
      header_parts[name] = split(value)
    end
  end
  body_parts = split(body)
  local mode = args[4]
  if mode == "same" then
    for line in io.lines(args[2]) do
      fixed = build(line)
      break
    end
    return
  end
  local nthreads, k = tonumber(args[3]), 0
  for line in io.lines(args[2]) do
    if k % nthreads == id then tokens[#tokens + 1] = line end
    k = k + 1
  end
  count = #tokens
  n = count
  local starts = {}
  for value in string.gmatch(args[5] or "", "[^,]+") do starts[#starts + 1] = tonumber(value) end
  pos = (starts[id + 1] or 0) % count
end

function request()
  if fixed then return fixed end
  sent = sent + 1
  pos = pos + 1
  if pos > count then
    pos = 1
    wraps = wraps + 1
  end
  return build(tokens[pos])
end

function done(summary, latency, requests)
  local w, t, sent_by, ends = 0, 0, {}, {}
  for _, thread in ipairs(threads) do
    w = w + (thread:get("wraps") or 0)
    t = t + (thread:get("n") or 0)
    sent_by[#sent_by + 1] = tostring(thread:get("sent") or 0)
    ends[#ends + 1] = tostring(thread:get("pos") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, ' ..
    '"max_us": %.0f, "mean_us": %.1f, "non2xx": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "wraps": %d, "tokens": %d, "sent": [%s], "ends": [%s]}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.status, e.connect, e.read, e.write, e.timeout, w, t,
    table.concat(sent_by, ", "), table.concat(ends, ", ")))
end
