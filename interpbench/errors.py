"""Exception types: every user-facing failure is an InterpbenchError with one clear line."""

from __future__ import annotations


class InterpbenchError(Exception):
    """Base class for errors the CLI reports as one line with exit code 2."""


class BadInputError(InterpbenchError):
    """A name, option, file or program given by the user cannot be used."""


class UnknownNameError(BadInputError):
    """A registry lookup failed; the message carries a "did you mean" suggestion."""


class CompileError(InterpbenchError):
    """tracr refused to compile a case's RASP program."""


class VerificationError(InterpbenchError):
    """A compiled model disagrees with its RASP program or with tracr's own forward."""
