"""File sinks of the tagged stream (JSONL audit log, Parquet). Built in the export issue."""

__all__: list[str] = []
