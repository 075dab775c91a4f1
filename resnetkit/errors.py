"""The errors a user can fix: bad input, a missing file, an unknown name.

The command line prints them as one line (``resnetkit CMD: error: MESSAGE``, exit status 2) and hides the
traceback (``RESNETKIT_DEBUG=1`` shows it); any other exception is a bug and keeps its traceback. This is the
bottom layer: it imports nothing from resnetkit, so every layer may raise these.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input, a missing file, an unknown name; the message is one line that says what to change."""


class UnknownNameError(UserError, KeyError):
    """A name that is not in a table (a model, weights, a recipe); the message names the close matches.

    Also a ``KeyError``, so ``except KeyError`` around a lookup keeps working; unlike a plain ``KeyError``, its
    ``str()`` is the message itself rather than the message quoted.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownOptionError(UserError, TypeError):
    """A keyword a config does not take (a typo in a recipe's ``model.options``); the message lists the valid ones.

    Also a ``TypeError``, what Python raises for an unexpected keyword argument.
    """
