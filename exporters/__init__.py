"""File sinks of the tagged stream: the JSONL audit log (and Parquet, bundles, datasets)."""

from exporters.jsonl import JsonlSink
from exporters.parquet import ParquetSink
from exporters.runner import Sink
from tagger.settings import Settings

__all__ = ["SINK_NAMES", "JsonlSink", "ParquetSink", "Sink", "file_sinks"]
SINK_NAMES = (JsonlSink.name, ParquetSink.name)


def file_sinks(settings: Settings, partition: int = 0) -> list[Sink]:
    """The sinks `tagger run` runs by default, for the output stream of one partition."""
    label = f"p{partition}" if settings.hash_tagged else ""
    return [JsonlSink(settings.data_dir), ParquetSink(settings.data_dir, label=label)]
