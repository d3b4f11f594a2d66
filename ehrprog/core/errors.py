"""Errors raised on bad input: each names the file, the column and the rule broken."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class InputError(ValueError):
    """Input data breaks a rule of the schema.

    Attributes:
        file: the file or table the problem was found in (``None`` if not tied to one).
        column: the offending column (``None`` if the problem is the whole file).
        rule: a short statement of the rule that was broken.
    """

    def __init__(self, rule: str, *, file: str | None = None, column: str | None = None) -> None:
        from ehrprog.core.redaction import redact  # a connection string's password never reaches a message

        file = redact(file) if file is not None else None
        rule = redact(rule)
        self.file = file
        self.column = column
        self.rule = rule
        where = ", ".join(
            part for part in (f"file {file!r}" if file else "", f"column {column!r}" if column else "") if part
        )
        super().__init__(f"{where}: {rule}" if where else rule)


class EmptyCohortError(InputError):
    """A task produced no prediction points from the data it was given."""


class SavedModelError(ValueError):
    """A saved model folder breaks a rule: names the file, the field and the rule.

    Attributes:
        file: the file the problem was found in.
        field: the offending field (a dotted path into ``config.json``, or a weight's name).
        rule: a short statement of the rule that was broken.
    """

    def __init__(self, rule: str, *, file: str, field: str | None = None) -> None:
        self.file = file
        self.field = field
        self.rule = rule
        where = f"{file}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {rule}")


class BuildError(RuntimeError):
    """Shards of a cohort build failed after their retries.

    Attributes:
        failures: shard name -> the last error, for every shard that failed.
    """

    def __init__(self, failures: dict[str, str], attempts: int, total: int) -> None:
        from ehrprog.core.redaction import redact

        self.failures = {name: redact(error) for name, error in failures.items()}
        lines = [f"{name}: {error}" for name, error in self.failures.items()]
        super().__init__(
            f"{len(failures)} of {total} shards failed after {attempts} attempt(s) each (the others are written; "
            "a re-run builds only what is missing): " + "; ".join(lines)
        )


class UnitWarning(UserWarning):
    """A cohort records a code's values in another unit than a fitted model was trained on, and
    no conversion relates the two (:mod:`ehrprog.io.units`)."""


class NumericalWarning(UserWarning):
    """A numerical fit (a Cox or logistic start, a baseline) met trouble and was handled."""


@contextmanager
def one_warning(
    what: str, outcome: Callable[[BaseException | None], str] | None = None
) -> Iterator[list[warnings.WarningMessage]]:
    """Collect every warning raised inside (scikit-survival's overflows and ill-conditioned
    matrices come by the dozen) and issue at most one :class:`NumericalWarning` afterwards, in words:
    ``"{what}: {n} numerical warning(s) (kinds...); {outcome(error)}"``. ``outcome`` says what was
    done about it; it is called after the block, with the exception the block raised (which then
    propagates) or ``None``."""
    caught: list[warnings.WarningMessage] = []
    failure: BaseException | None = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    except Exception as error:
        failure = error
        raise
    finally:
        if caught:
            kinds = sorted({f"{w.category.__name__}: {str(w.message).splitlines()[0][:80]}" for w in caught})
            shown = "; ".join(kinds[:3]) + (f"; and {len(kinds) - 3} more kinds" if len(kinds) > 3 else "")
            message = f"{what}: {len(caught)} numerical warning(s) ({shown})"
            if outcome is not None:
                message += f"; {outcome(failure)}"
            warnings.warn(message, NumericalWarning, stacklevel=3)
