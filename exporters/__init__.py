"""File sinks of the tagged stream: the JSONL audit log (and Parquet, bundles, datasets)."""

from exporters.jsonl import JsonlSink
from exporters.parquet import ParquetSink
from exporters.runner import Sink
from tagger.settings import Settings

__all__ = ["SINK_NAMES", "JsonlSink", "ParquetSink", "Sink", "file_sinks"]
SINK_NAMES = (JsonlSink.name, ParquetSink.name)


def file_sinks(settings: Settings) -> list[Sink]:
    """The sinks `tagger run` runs by default."""
    return [JsonlSink(settings.data_dir), ParquetSink(settings.data_dir)]
