-- wrk script: POST the chat body from BENCH_BODY with BENCH_AUTH; print one JSON summary line.
-- "top" lists the latency (us) at every 0.01 percentile from p90 to p99.99, then the maximum:
-- slices of one measurement merge on that grid (benchmarks/measure.py), wrk's histograms cannot.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. auth
end

-- BENCH_VARY=1: every request's body differs (a counter in the first "content"), so a response
-- cache in the target misses every time and its lookup and store are both paid.
if os.getenv("BENCH_VARY") == "1" then
  local counter = 0
  local run = os.time()  -- slices and rounds are seconds apart: no body repeats across runs
  local head, tail = string.match(wrk.body, '^(.-"content":")(.*)$')
  request = function()
    counter = counter + 1
    return wrk.format(nil, nil, nil, head .. run .. "-" .. counter .. " " .. tail)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local top = {}
  for i = 0, 999 do
    top[#top + 1] = string.format("%d", latency:percentile(90 + i / 100))
  end
  top[#top + 1] = string.format("%d", latency.max)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"mean_us":%.1f,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"top":[%s]}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.mean, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(top, ",")))
end
