"""What a value may be, said in words: the vocabulary of cnnlab's value checks.

The config check (``cnnlab.config``) and the model families' option tables (``cnnlab.models.families``) describe
each key's valid values with these, so both run before torch is imported and both word their messages the same
way: the key, what it is, what is allowed and the value given, in one paragraph. Imports nothing but cnnlab's
errors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

from cnnlab.errors import ConfigError


def shown(value: Any) -> str:
    """A value as a user would write it on the command line: strings quoted, the rest as they print."""
    if isinstance(value, str):
        return f"'{value}'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Allowed(ABC):
    """A set of valid values. ``words`` completes "must be ..."; ``accepts`` says whether a value is in the set."""

    words: str

    @abstractmethod
    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is one of the valid values."""


@dataclass(frozen=True)
class Number(Allowed):
    """A finite number (a whole one with ``whole``) between ``low`` and ``high``; ``*_open`` leaves the bound out."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False
    optional: bool = False  # null is valid too

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if not _is_number(value) or (self.whole and not isinstance(value, int)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    @property
    def words(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        if self.low is not None and self.high is not None:
            if self.whole:
                bounds = f"from {self.low} to {self.high}"
            else:
                bounds = f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            bounds = f"greater than {self.low}" if self.low_open else f"of at least {self.low}"
        elif self.high is not None:
            bounds = f"less than {self.high}" if self.high_open else f"of at most {self.high}"
        else:
            bounds = ""
        text = f"{kind} {bounds}".strip()
        return f"{text}, or null" if self.optional else text


def Whole(low: int | None = 0, high: int | None = None, optional: bool = False) -> Number:  # noqa: N802
    """A whole number (an int, not 2.0 nor true) of at least ``low``."""
    return Number(low=low, high=high, whole=True, optional=optional)


@dataclass(frozen=True)
class OneOf(Allowed):
    values: tuple

    def accepts(self, value: Any) -> bool:
        # true == 1 in Python; a flag is not a depth
        return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values)

    @property
    def words(self) -> str:
        return "one of " + ", ".join(shown(v) for v in self.values)


@dataclass(frozen=True)
class Flag(Allowed):
    words: str = "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Text(Allowed):
    optional: bool = False

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) or (self.optional and value is None)

    @property
    def words(self) -> str:
        return "a string, or null" if self.optional else "a string"


@dataclass(frozen=True)
class Names(Allowed):
    words: str = "a list of names, e.g. [features]"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


@dataclass(frozen=True)
class Satisfies(Allowed):
    """Any other rule: ``test`` (which must not raise on a value of the wrong type) and its description."""

    test: Callable[[Any], bool]
    words: str

    def accepts(self, value: Any) -> bool:
        return self.test(value)


@dataclass(frozen=True)
class Rule:
    """What ``key`` may be, and how to say so.

    The message is "<key> [is <meaning> and] must be <allowed>, got <value>. <hint>" unless ``message`` gives the
    whole text, with ``{value}`` where the given value goes.
    """

    allowed: Allowed
    meaning: str = ""
    hint: str = ""
    message: str = ""

    def problem(self, key: str, value: Any) -> str | None:
        """The message for ``value`` at ``key``, or None when it is valid."""
        if self.allowed.accepts(value):
            return None
        if self.message:
            return self.message.format(value=shown(value))
        text = f"{key} is {self.meaning} and must be" if self.meaning else f"{key} must be"
        text += f" {self.allowed.words}, got {shown(value)}."
        return f"{text} {self.hint}" if self.hint else text

    def check(self, key: str, value: Any) -> None:
        problem = self.problem(key, value)
        if problem:
            raise ConfigError(problem)


def check_section(prefix: str, values: dict[str, Any], rules: dict[str, Rule]) -> None:
    """Check each key of ``values`` that ``rules`` describes (keys without a rule are left alone)."""
    for key, value in values.items():
        if key in rules:
            rules[key].check(f"{prefix}.{key}" if prefix else key, value)
