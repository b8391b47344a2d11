"""The streams and group the benchmarks read and write: the tagger's defaults."""

INPUT = "a3cp:messages"
OUTPUT = "a3cp:messages:tagged"
DEAD = "a3cp:messages:dead"
GROUP = "session-tagger"
