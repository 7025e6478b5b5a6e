-- Ubidots-dialect ingest for wrk, the same request `tessera bench` sends: one dot with its own timestamp to one
-- of N devices, all under one organization token (devices are created by their first reading).
--
--   wrk -t2 -c64 -d10s -s bench/wrk/ingest.lua http://127.0.0.1:8080 -- <token> [devices]
--
-- Run it against the bare baseline too (`tessera bench-baseline --http-addr 127.0.0.1:8090`): the same script,
-- the same payloads.

local token
local devices
local sent = 0
local first_timestamp

function init(args)
  token = args[1] or os.getenv("TESSERA_TOKEN")
  if token == nil or token == "" then
    error("give the organization token: wrk ... -s ingest.lua URL -- <token> [devices]")
  end
  devices = tonumber(args[2] or "1000")
  -- Each wrk thread has its own Lua state: spread the threads' timestamps apart so no two dots collide.
  first_timestamp = 1700000000000 + math.random(0, 1000000) * 1000000
end

function request()
  sent = sent + 1
  local body = string.format('{"temperature": {"value": %d, "timestamp": %d}}', sent % 1000, first_timestamp + sent)
  local headers = { ["x-auth-token"] = token, ["content-type"] = "application/json" }
  return wrk.format("POST", "/api/v1.6/devices/bench-" .. (sent % devices), headers, body)
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p99 %.2f ms, p999 %.2f ms, non-2xx or errors: %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout))
end
