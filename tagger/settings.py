"""All configuration of the tagger: one class, read from TAGGER_* environment variables."""

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster(url: str) -> bool:
    """Does `url` name a Redis Cluster (rather than one server)?"""
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


class Settings(BaseSettings):
    """Every field maps to `TAGGER_<NAME>`; an unknown TAGGER_* name is rejected."""

    model_config = SettingsConfigDict(env_prefix="TAGGER_", extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_env(cls, data: Any) -> Any:
        # pydantic-settings ignores unknown prefixed environment variables; a misspelt
        # TAGGER_SESSION_TIMEOUT would silently keep the default, so refuse it.
        known = {f"TAGGER_{name.upper()}" for name in cls.model_fields}
        unknown = sorted(k for k in os.environ if k.startswith("TAGGER_") and k not in known)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)}; known settings are "
                f"{', '.join(sorted(known))}. Fix or unset the variable."
            )
        return data

    redis_url: str | None = Field(
        None,
        description="redis:// or rediss:// URL of the server, redis+cluster:// or "
        "rediss+cluster:// for any node of a Redis Cluster; unset starts the embedded "
        "Valkey server under DATA_DIR/valkey.",
    )
    partitions: int = Field(
        1,
        ge=1,
        le=1024,
        description="Input partitions: user U goes to partition crc32(U) mod PARTITIONS, "
        "each with its own streams and state under one hash tag (see README, Scaling).",
    )
    data_dir: Path = Field(Path("./tagger-data"), description="Root of every file we write.")
    input_stream: str = Field("a3cp:messages", description="Stream upstream modules XADD to.")
    output_stream: str = Field("a3cp:messages:tagged", description="Stream of tagged events.")
    dead_letter_stream: str = Field(
        "a3cp:messages:dead", description="Stream of rejected entries with a reason."
    )
    control_stream: str = Field(
        "a3cp:sessions:control",
        description="Stream of explicit session start/end requests; replies go to "
        "<control stream>:replies.",
    )
    group: str = Field(
        "session-tagger", description="Consumer group on the input and control streams."
    )
    consumer: str | None = Field(
        None, description="Consumer name inside the group; unset = <hostname>-<pid>."
    )
    state_prefix: str = Field(
        "a3cp:tagger", description="Prefix of the session registry, state and dedup keys."
    )
    session_timeout_s: int = Field(
        300, gt=0, description="Inactivity (event time) after which a new session opens."
    )
    max_session_s: int = Field(14400, gt=0, description="Longest a session may last.")
    max_clock_skew_s: int = Field(
        300,
        ge=1,
        description="An event stamped more than this far ahead of the server's clock at its "
        "arrival is dead-lettered as clock_ahead and its user's sessions are left untouched: "
        "fix the clock of the device that published it. Past timestamps are always accepted.",
    )
    batch_size: int = Field(500, ge=1, le=5000, description="Entries read per batch.")
    block_ms: int = Field(
        100, ge=1, description="How long one read waits for new entries when idle."
    )
    claim_idle_ms: int = Field(
        10_000,
        ge=0,
        description="Entries pending this long (their consumer died) are claimed and tagged.",
    )
    max_deliveries: int = Field(
        5,
        ge=1,
        description="An entry that fails this many deliveries is dead-lettered as poison.",
    )
    sink_lease_ms: int = Field(
        5000,
        ge=100,
        description="One worker at a time writes each file sink; if it dies, another "
        "takes over after this long.",
    )
    sink_linger_ms: int = Field(
        25,
        ge=0,
        description="After a read of less than a batch, each file sink waits this long "
        "before the next, so that it reads (and acks) in batches at a trickle too.",
    )
    sinks_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Niceness of the file sinks' process beside the tagging (`tagger run`): "
        "on a busy machine the tagging goes first, the files trail.",
    )
    sweep_interval_ms: int = Field(
        1000, ge=10, description="How often idle sessions are looked for and closed."
    )
    dedup_window_s: int = Field(
        86_400, gt=0, description="How long a tagged record_id is remembered for dedup."
    )
    appendfsync: Literal["always", "everysec"] = Field(
        "always",
        description="AOF fsync policy of the embedded server: always loses nothing on a "
        "crash; everysec is faster and may lose the last second.",
    )
    retention_s: int = Field(
        7 * 86_400,
        ge=0,
        description="Output, dead-letter and reply streams keep entries this long (the "
        "output never below what the file sinks still need); input entries go once every "
        "consumer group has acked them.",
    )
    trim_interval_s: float = Field(10.0, gt=0, description="How often streams are trimmed.")
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address of the /metrics, /health and /ready endpoint; 0.0.0.0 "
        "exposes it beyond this host.",
    )
    metrics_port: int = Field(
        9108, ge=0, le=65535, description="Port of that endpoint; 0 lets the system pick one."
    )
    ready_max_sink_lag: int = Field(
        50_000,
        ge=0,
        description="/ready fails while a file sink is more tagged entries than this behind.",
    )
    ready_max_input_lag: int = Field(
        50_000,
        ge=0,
        description="/ready fails while more input entries than this wait to be tagged.",
    )
    http_host: str = Field(
        "127.0.0.1",
        description="Address `tagger serve` listens on; beyond loopback it needs a token "
        "(HTTP_TOKEN or HTTP_TOKENS_FILE).",
    )
    http_port: int = Field(8080, ge=0, le=65535, description="Port of `tagger serve`.")
    http_token: SecretStr | None = Field(
        None, description="One bearer token with every role (admin) for `tagger serve`."
    )
    http_tokens_file: Path | None = Field(
        None,
        description="File of `<role> <token> [name]` lines (roles: viewer, caregiver, "
        "service, admin) for `tagger serve`; keep it 0600.",
    )
    http_upstream_open_on_loopback: bool = Field(
        False,
        description="Let loopback callers use the three /session_manager routes without a "
        "token (upstream's own UI sends none); any local process may then start and end "
        "sessions.",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text for people, json for one JSON object per line."
    )

    @property
    def cluster(self) -> bool:
        """Does the URL name a Redis Cluster?"""
        return is_cluster(self.redis_url or "")

    @property
    def hash_tagged(self) -> bool:
        """Key names carry a partition hash tag: with several partitions, or on a cluster
        (where one script call may only touch keys of one slot)."""
        return self.partitions > 1 or self.cluster
