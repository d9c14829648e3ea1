"""Settings objects that own their defaults, and the command-line flags derived from them.

A verb's settings are a frozen dataclass whose fields are declared with :func:`setting`
(default, help, and how the command line spells it); :func:`add_flags` turns the fields into
``argparse`` flags and :func:`flag_values` reads them back, so a default is written once.
The same names serve the Python API (``finetune(..., epochs=3)``), study files and the flags
(``--epochs 3``).

>>> import argparse
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Demo:
...     steps: int = setting(5, "steps to take")
...     fast: bool = setting(True, "skip the slow part", flag="--slow")
>>> parser = argparse.ArgumentParser()
>>> add_flags(parser, Demo)
>>> flag_values(parser.parse_args(["--steps", "7", "--slow"]), Demo)
{'steps': 7, 'fast': False}
>>> build(Demo, None, {"stpes": 3}, "demo()")
Traceback (most recent call last):
...
mammodissect.errors.MammodissectError: unknown setting 'stpes' in demo(); did you mean 'steps'?
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from mammodissect.errors import MammodissectError

__all__ = [
    "Check",
    "add_flags",
    "add_signature_flags",
    "build",
    "check_settings",
    "field_names",
    "flag_values",
    "numbers",
    "setting",
    "texts",
    "unknown_key",
    "whole",
    "within",
]

T = TypeVar("T")

#: What a setting's value must be: its description for messages, and the test.
Check = tuple[str, Callable[[Any], bool]]


def whole(least: int) -> Check:
    """A whole number >= ``least`` (not a bool)."""
    return f"a whole number >= {least}", lambda v: isinstance(v, int) and v >= least


def within(low: float, high: float | None = None, *, open_ends: bool = False) -> Check:
    """A number in [low, high] (``(low, high)`` with ``open_ends``; no upper bound without
    ``high``).

    >>> within(0, 1, open_ends=True)[0], within(0)[0]
    ('a number in (0, 1)', 'a number >= 0')
    """
    if high is None:
        what = f"a number {'>' if open_ends else '>='} {low:g}"
    else:
        what = (
            f"a number in {'(' if open_ends else '['}{low:g}, {high:g}{')' if open_ends else ']'}"
        )

    def ok(v: Any) -> bool:
        if not isinstance(v, int | float):
            return False
        above = v > low if open_ends else v >= low
        return above and (high is None or (v < high if open_ends else v <= high))

    return what, ok


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    parse: Callable[[str, str], Any] | None = None,
    choices: Sequence[str] | None = None,
    metavar: str | None = None,
    check: Check | None = None,
) -> Any:
    """A dataclass field with what its command-line flag needs.

    Parameters
    ----------
    default:
        The one default of the setting (a tuple for a sequence: fields stay immutable).
    help:
        What it does, for ``--help`` (the default is appended).
    flag:
        The flag's spelling when it is not ``--NAME`` (``--no-NAME`` for a true boolean).
    parse:
        ``parse(text, flag)`` turning the flag's text into the value (default: the type of
        ``default``, text when the default is None).
    choices:
        The values the flag accepts.
    metavar:
        The value's name in ``--help``.
    check:
        What the value must be (:func:`whole`, :func:`within`), tested by
        :func:`check_settings` (which also holds the value to ``choices``); a None value passes
        when the default is None.
    """
    meta = {
        "help": help, "flag": flag, "parse": parse, "choices": choices, "metavar": metavar,
        "check": check,
    }  # fmt: skip
    return dataclasses.field(default=default, metadata=meta)


def check_settings(settings: Any, verb: str) -> None:
    """Test every field of the settings dataclass instance against its :func:`setting` check
    and choices; the error names the verb, the setting, what it must be and the value given."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value is None and field.default is None:
            continue
        choices = field.metadata.get("choices")
        if choices is not None and value not in choices:
            raise MammodissectError(
                f"{verb} {field.name} {value!r} is unknown; use one of {', '.join(choices)}"
            )
        check = field.metadata.get("check")
        if check is None:
            continue
        what, ok = check
        if isinstance(value, bool) or not ok(value):
            raise MammodissectError(f"{verb} {field.name} must be {what}, got {value!r}")


def field_names(cls: type) -> list[str]:
    """The field names of a settings dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def unknown_key(key: str, known: Iterable[str], where: str, what: str = "key") -> MammodissectError:
    """The error for a key that is not one of ``known``, naming the closest one."""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return MammodissectError(f"unknown {what} {key!r} in {where}{hint}")


def build(cls: type[T], base: T | None, options: Mapping[str, Any], where: str) -> T:
    """``base`` (default: ``cls()``) with ``options`` replacing its fields; an unknown name
    is an error naming the closest field."""
    names = field_names(cls)
    for key in options:
        if key not in names:
            raise unknown_key(key, names, where, "setting")
    if base is not None and not isinstance(base, cls):
        raise MammodissectError(
            f"{where} takes a config of type {cls.__name__}, got {type(base).__name__}"
        )
    start = base if base is not None else cls()
    return dataclasses.replace(start, **options) if options else start  # type: ignore[type-var]


def _flag(field: dataclasses.Field) -> str:
    if field.metadata.get("flag"):
        return str(field.metadata["flag"])
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def _parser(parse: Callable[[str, str], Any], flag: str) -> Callable[[str], Any]:
    """``parse`` with its flag's name bound, as argparse's ``type``."""

    def parsed(text: str) -> Any:
        return parse(text, flag)

    return parsed


def add_signature_flags(
    parser: argparse.ArgumentParser, function: Callable[..., Any], flags: Sequence[tuple[str, str]]
) -> None:
    """One ``--FLAG`` per (flag, help) with the type and default of ``function``'s keyword of
    that name, for verbs whose settings are a function's keywords rather than a dataclass: the
    signature stays the one owner of the defaults. A keyword whose default is a bool gets a
    switch that turns it over: ``--FLAG`` when it is off, ``--no-FLAG`` when it is on."""
    defaults = {k: v.default for k, v in inspect.signature(function).parameters.items()}
    for flag, what in flags:
        dest = flag.replace("-", "_")
        default = defaults[dest]
        if isinstance(default, bool):
            parser.add_argument(
                f"--no-{flag}" if default else f"--{flag}", dest=dest, default=default,
                action="store_false" if default else "store_true",
                help=f"{what} (turns off the default)" if default else what,
            )  # fmt: skip
            continue
        parser.add_argument(
            f"--{flag}", type=type(default), default=default, help=f"{what} ({default})"
        )


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per field of the settings dataclass ``cls`` declared with :func:`setting` (a
    field without one, such as an API-only switch, gets none)."""
    for field in dataclasses.fields(cls):
        if "help" not in field.metadata:
            continue
        meta, flag, default = field.metadata, _flag(field), field.default
        what = str(meta["help"]).replace("%", "%%")  # argparse formats help with %
        if isinstance(default, bool):  # a switch: the flag turns the default over
            parser.add_argument(
                flag, dest=field.name, action="store_false" if default else "store_true",
                default=default, help=what,
            )  # fmt: skip
            continue
        parse = meta["parse"]
        kind: Callable[[str], Any]
        if parse is not None:
            kind = _parser(parse, flag)
        else:
            kind = str if default is None else type(default)
        shown = "" if default is None else f" ({_shown(default)})"
        parser.add_argument(
            flag, dest=field.name, type=kind, default=default, choices=meta["choices"],
            metavar=meta["metavar"], help=what + shown,
        )  # fmt: skip


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The values of ``cls``'s fields that the parsed ``args`` hold."""
    names = vars(args)
    return {f.name: names[f.name] for f in dataclasses.fields(cls) if f.name in names}


def numbers(text: str, flag: str, cast: type = float) -> tuple[Any, ...]:
    """The comma-separated numbers of a flag (``int`` or ``float``); ``none`` or nothing: ().

    >>> numbers("0.01,0.02", "--noise")
    (0.01, 0.02)
    >>> numbers("20,x", "--top-k", int)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mammodissect.errors.MammodissectError: --top-k must be comma-separated integers ...
    """
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(cast(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        kind = "integers (e.g. 20,100)" if cast is int else "numbers (e.g. 0.01,0.02)"
        raise MammodissectError(f"{flag} must be comma-separated {kind}, got {text!r}") from err


def texts(text: str, flag: str) -> tuple[str, ...]:
    """The comma-separated words of a flag, stripped (``flag`` is unused: the parse signature).

    >>> texts("A, B,C", "--head-classes")
    ('A', 'B', 'C')
    """
    del flag
    return tuple(v.strip() for v in text.split(",") if v.strip())
