-- wrk script: counts responses per status and per body (the version that
-- answered), and prints machine-readable totals when wrk finishes:
--   wrk -t2 -c8 -d60s -s scripts/bench/count.lua http://127.0.0.5/version [-- PAUSE_MS]
-- PAUSE_MS (default 0) is a pause before each request on a connection, to
-- cap the load (each connection then sends at most 1000/PAUSE_MS req/s).
-- Lines printed (besides wrk's own report):
--   requests N / errors connect=N read=N write=N status=N timeout=N /
--   status CODE N (one per code) / body TEXT N (one per distinct 2xx body)
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
   bodies = {}
   pause = tonumber(args[1] or "0") or 0
end

function delay()
   return pause
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status >= 200 and status < 300 then
      local b = string.gsub(body or "", "%s+$", "")
      if #b > 40 then b = string.sub(b, 1, 40) end
      bodies[b] = (bodies[b] or 0) + 1
   end
end

function done(summary, latency, requests)
   local s, b = {}, {}
   for _, t in ipairs(threads) do
      for k, v in pairs(t:get("statuses")) do s[k] = (s[k] or 0) + v end
      for k, v in pairs(t:get("bodies")) do b[k] = (b[k] or 0) + v end
   end
   local e = summary.errors
   io.write(string.format("requests %d\n", summary.requests))
   io.write(string.format("errors connect=%d read=%d write=%d status=%d timeout=%d\n",
      e.connect, e.read, e.write, e.status, e.timeout))
   for k, v in pairs(s) do io.write(string.format("status %d %d\n", k, v)) end
   for k, v in pairs(b) do io.write(string.format("body %s %d\n", k, v)) end
   io.write(string.format("latency p50=%.1fms p99=%.1fms max=%.1fms\n",
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
