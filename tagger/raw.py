"""Raw stream entries through FastStream: no JSON decoding on its side (the tagger
validates each entry itself), and handlers that still document their wire model."""

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from faststream.message import StreamMessage


def documented_as(
    handler: Callable[[Any], Awaitable[None]], payload: type, name: str
) -> Callable[[Any], Awaitable[None]]:
    """`handler`, described to FastStream's AsyncAPI generator as taking `payload`.

    The handlers take raw stream entries (validation is the tagger's own, per entry, so
    one bad entry cannot fail a batch). With apply_types=False FastStream reads the
    signature for the document only and never casts the entries to it."""

    async def call(message: Any) -> None:
        await handler(message)

    param = inspect.Parameter("message", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    call.__signature__ = inspect.Signature([param.replace(annotation=payload)])  # type: ignore[attr-defined]
    call.__name__ = name
    return call


async def raw_parser(msg: Any, _original: Callable[..., Awaitable[Any]]) -> StreamMessage[Any]:
    """The entries as redis-py returned them, wrapped but not parsed."""
    return StreamMessage(raw_message=msg, body=b"", headers={}, path={}, message_id="")


async def raw_decoder(msg: StreamMessage[Any], _original: Callable[..., Awaitable[Any]]) -> Any:
    """Hand the handler those raw entries (message_ids and data lists for a batch)."""
    return msg.raw_message
