"""Plumbing every stage shares: the package's errors (:mod:`~ehrprog.core.errors`), secrets kept
out of messages (:mod:`~ehrprog.core.redaction`), files checked against their recorded size and
hash (:mod:`~ehrprog.core.files`), the one rule for writing output folders
(:mod:`~ehrprog.core.output`) and the version (:mod:`~ehrprog.core.version`).

Imports no other part of ehrprog (see ``docs/architecture.md``)."""
