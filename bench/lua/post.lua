-- wrk script: POST the body in $BODY_FILE (with $EXTRA_HEADER "Name: value" if set) and count
-- response statuses per thread; done() prints them as "status N" lines.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
  wrk.body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
  local extra = os.getenv("EXTRA_HEADER")
  if extra and extra ~= "" then
    local name, value = extra:match("^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
  end
  counts = {}
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for status, n in pairs(c) do
      total[status] = (total[status] or 0) + n
    end
  end
  for status, n in pairs(total) do
    io.write(string.format("status %d %d\n", status, n))
  end
  io.write(string.format("latency_p50_us %d\n", latency:percentile(50)))
  io.write(string.format("latency_p99_us %d\n", latency:percentile(99)))
  io.write(string.format("requests %d\n", summary.requests))
  io.write(string.format("duration_us %d\n", summary.duration))
end
