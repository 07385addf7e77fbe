-- wrk script of benches/api.sh: every request is `POST /api/publish` to one room, with the
-- server API's key, on keep-alive connections; `done` prints one machine-readable line.
--
--   HERMOD_API_KEY=... [HERMOD_API_ROOM=bench] [HERMOD_API_DELAY_MS=0] wrk -t1 -c16 -d10s -s benches/api-publish.lua http://127.0.0.1:PORT
--
-- The body is the same for every request (no idempotency_key: every call stores a new message).
-- Nothing is done per response (no `response` hook), so wrk stays as cheap as it can; its own
-- count of HTTP statuses >= 400 is reported as `status_errors` (the API answers no 1xx/3xx),
-- and benches/api.sh checks it against the proxy's hermod_api_refused_total and
-- hermod_api_unauthorized_total.

local key = os.getenv("HERMOD_API_KEY") or error("HERMOD_API_KEY is not set")
local room = os.getenv("HERMOD_API_ROOM") or "bench"
-- HERMOD_API_DELAY_MS: each connection waits this long before each request (paces the load:
-- at most connections x 1000 / delay calls per second).
local delay_ms = tonumber(os.getenv("HERMOD_API_DELAY_MS") or "0")

wrk.method = "POST"
wrk.path = "/api/publish"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"room":"' .. room .. '","data":{"kind":"bench","text":"hello from the server API"}}'

if delay_ms > 0 then
   function delay()
      return delay_ms
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "API_RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d " ..
      "max_us=%d status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
