-- wrk script: POST /v1/decide (or the path in WRK_PATH) with a rotating set of request bodies,
-- optional API key, and a one-line JSON summary (requests/s, p50/p99 latency in µs, errors) on stdout.
-- Bodies: one JSON document per line in the file named by WRK_BODIES.
local bodies = {}
local requests_list = {}
local counter = 0

function init(args)
  local path = os.getenv("WRK_BODIES")
  for line in io.lines(path) do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  local headers = {["Content-Type"] = "application/json"}
  local key = os.getenv("WRK_API_KEY")
  if key and #key > 0 then headers["Authorization"] = "Bearer " .. key end
  local path = os.getenv("WRK_PATH")
  if not path or #path == 0 then path = "/v1/decide" end
  for i, body in ipairs(bodies) do
    requests_list[i] = wrk.format("POST", path, headers, body)
  end
end

function request()
  counter = counter + 1
  return requests_list[(counter % #requests_list) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "rps": %.1f, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, ' ..
    '"errors_connect": %d, "errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
