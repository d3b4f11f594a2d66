"""The ``ehrprog`` command line: ``evaluate``, ``fit``, ``report``, ``inspect``, ``convert
omop-to-meds``, ``simulate``, ``plugins``, ``pretrain``, ``build`` and ``verify-checkpoint``.

The parser and :func:`main` are :mod:`ehrprog.cli.parser`, what each command does
:mod:`ehrprog.cli.commands`, the option types :mod:`ehrprog.cli.options`. The command line is a
program on top of every stage (``docs/architecture.md``)."""

from ehrprog.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
