-- wrk script of the benchmark suite (bench/run): POSTs the body in BENCH_BODY_FILE with
-- `Authorization: Bearer BENCH_AUTH` (when set). With BENCH_PORTS (comma-separated), thread
-- i connects to 127.0.0.1:PORTS[i mod n] (several nodes from one wrk, one latency record).
-- done() prints one JSON line, prefixed BENCH_JSON, with the counts and the latency
-- percentiles in microseconds (p99.9 included, which wrk's own summary leaves out).
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

local ports = {}
for p in string.gmatch(os.getenv("BENCH_PORTS") or "", "[^,]+") do
  table.insert(ports, p)
end
local next_thread = 0
function setup(thread)
  if #ports > 0 then
    local port = ports[(next_thread % #ports) + 1]
    thread.addr = wrk.lookup("127.0.0.1", port)[1]
  end
  next_thread = next_thread + 1
end

function done(summary, latency, requests)
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean)
  io.write("BENCH_JSON " .. out .. "\n")
end
