"""The app as docs/asyncapi.yaml describes it, with the default stream names.

Regenerate the document after changing a stream, a subscriber or a schema:

    faststream docs gen --yaml --factory tagger.asyncapi:app -o docs/asyncapi.yaml
"""

from faststream import FastStream

from tagger.settings import Settings
from tagger.worker import Worker


def app() -> FastStream:
    # Defaults, not this machine's TAGGER_* environment; a fixed consumer name so the
    # document is the same wherever it is generated.
    settings = Settings.model_construct(consumer="<hostname>-<pid>")
    return Worker(settings, "redis://localhost:6379", sinks=False).app
