"""A partition's streams as FastStream sees them: the input and control subscribers (which
read only while this worker owns the partition) and the output streams, declared for
docs/asyncapi.yaml."""

from collections.abc import Awaitable, Callable
from typing import Any

from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub

from schemas.control import ControlReply, SessionControlRequest
from schemas.message import A3CPMessage
from schemas.wire import DeadLetter, TaggedOutput
from tagger.keys import Keys
from tagger.raw import documented_as, raw_decoder, raw_parser
from tagger.settings import Settings

Handler = Callable[[dict[str, Any]], Awaitable[None]]
# A subscriber and its real start: the broker's own start of it does nothing, the worker
# calls the real one once it owns the partition (and `subscriber.stop()` when it lets go).
Subscriber = tuple[Any, Callable[[], Awaitable[None]]]


def declare_partition(
    broker: RedisBroker, settings: Settings, consumer: str, k: Keys, handle: Handler,
    handle_control: Handler,
) -> list[Subscriber]:  # fmt: skip
    """The partition's input and control subscribers, and its output publishers."""
    subscribers = [
        _raw_subscriber(
            broker,
            settings,
            consumer,
            k.input_stream,
            documented_as(handle, A3CPMessage, "handle"),
            batch=True,
            max_records=settings.batch_size,
            title=k.input_stream,
            description="A3CPMessage JSON in entry field `data` (or FastStream's `__data__`), "
            "read by the tagger's consumer group in batches.",
        ),
        _raw_subscriber(
            broker,
            settings,
            consumer,
            k.control_stream,
            documented_as(handle_control, SessionControlRequest, "handle_control"),
            title=k.control_stream,
            description="Explicit session start, end and note requests, JSON in field `data`; "
            f"each is answered on {k.control_replies}.",
        ),
    ]
    # The owner's commit writes these streams itself (atomically with the session state);
    # the publishers only declare them, for docs/asyncapi.yaml.
    outputs = [
        (k.output_stream, TaggedOutput, "Tagged messages, session.start/end and note records, "
         "JSON in field `data`; fields user_id, session_id, kind beside it."),
        (k.dead_letter_stream, DeadLetter, "Refused input entries (these are the entry's "
         "fields, not JSON), each with a reason and what to fix."),
        (k.control_replies, ControlReply, "One reply per control request (entry fields)."),
    ]  # fmt: skip
    for stream, schema, description in outputs:
        broker.publisher(stream=stream, schema=schema, title=stream, description=description)
    return subscribers


def _raw_subscriber(
    broker: RedisBroker, settings: Settings, consumer: str, stream_name: str,
    handler: Callable[..., Awaitable[None]], title: str, description: str, **options: Any,
) -> Subscriber:  # fmt: skip
    stream = StreamSub(
        stream_name,
        group=settings.group,
        consumer=consumer,
        polling_interval=settings.block_ms,
        last_id=">",
        **options,
    )
    # The commit acks each entry itself, atomically with its effects: MANUAL keeps
    # FastStream from acking, and the raw parser skips its JSON re-encoding.
    subscriber = broker.subscriber(
        stream=stream, parser=raw_parser, decoder=raw_decoder, ack_policy=AckPolicy.MANUAL,
        title=title, description=description,
    )  # fmt: skip
    subscriber(handler)
    real_start = subscriber.start

    async def not_yet() -> None:  # started by the worker once the partition is owned
        return None

    subscriber.start = not_yet  # type: ignore[method-assign]
    return subscriber, real_start
