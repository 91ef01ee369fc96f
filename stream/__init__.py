"""The Faust stream worker (see its issue). Never imports torch."""

from stream.exceptions import StreamError

__all__ = ["StreamError"]
