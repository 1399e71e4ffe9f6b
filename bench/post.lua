-- Copyright (C) kroute authors
--
-- wrk script for the kroute bench: POSTs one chat-completion body file
-- (first script argument) to the URL, adds "X-Bench-Stream: 1" when the
-- second argument is "stream" so the mock answers with an SSE stream, and
-- prints one machine-readable summary line that bench/run parses.

function init(args)
    local f, body

    f = assert(io.open(args[1], "rb"))
    body = f:read("*a")
    f:close()

    wrk.method = "POST"
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer client-key"

    if args[2] == "stream" then
        wrk.headers["X-Bench-Stream"] = "1"
    end
end

function done(summary, latency, requests)
    local e = summary.errors

    io.write(string.format(
        "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d "
        .. "non2xx=%d errors=%d\n",
        summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout))
end
