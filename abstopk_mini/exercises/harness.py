"""What every check shares: calling the reader's function, the reference mark, the pass line.

A chapter's solution cell marks the book's own answer with :func:`reference`::

    @am.exercises.reference
    def my_abs_topk(u, k): ...

so that its check prints that it ran on the book's solution, never a bare "✓" a reader did not earn.
The exercise version of the chapter (``abstopk_mini.chapters.exercise_versions``) drops the mark
and replaces the body with ``raise NotImplementedError("hint: ...")``; :func:`call` turns that
into one short :class:`NotWrittenYet` naming the function and the hint.
"""

from __future__ import annotations

import torch

__all__ = ["NotWrittenYet", "PackageDisagrees", "reference", "is_reference", "reader_name", "call", "call_tensor",
           "passed", "REFERENCE_NOTE"]

#: the attribute :func:`reference` sets on the book's solution
_MARK = "abstopk_book_reference"
#: what a check adds to its pass line when it ran on the book's solution
REFERENCE_NOTE = "ran on the book's reference solution; in the exercise version it checks yours"


class NotWrittenYet(NotImplementedError):
    """The reader's function is still the exercise stub: it raised NotImplementedError itself."""


class PackageDisagrees(RuntimeError):
    """The package and a check's independent reference differ: a bug in abstopk_mini, not in your code."""


def reference(fn):
    """Mark ``fn`` as the book's reference solution (usable as a decorator); returns ``fn``."""
    if not callable(fn):
        raise TypeError(f"reference(fn) marks a function; got {type(fn).__name__}")
    setattr(fn, _MARK, True)
    return fn


def is_reference(fn) -> bool:
    """Whether ``fn`` carries the mark of :func:`reference`."""
    return bool(getattr(fn, _MARK, False))


def reader_name(fn) -> str:
    """The name the reader gave the function (``my_abs_topk``), or a description of it."""
    return getattr(fn, "__name__", None) or type(fn).__name__


def _raised_in(fn, err: BaseException) -> bool:
    """Whether the innermost frame of ``err``'s traceback is ``fn``'s own code (the stub's raise)."""
    code = getattr(fn, "__code__", None)
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return code is not None and tb is not None and tb.tb_frame.f_code is code


def call(fn, *args, what: str):
    """``fn(*args)``; a NotImplementedError raised by ``fn`` itself (the exercise stub) becomes
    :class:`NotWrittenYet` saying so, with the stub's hint and no traceback from inside the check
    (IPython and pytest skip frames that set ``__tracebackhide__``)."""
    __tracebackhide__ = True
    if not callable(fn):
        raise TypeError(f"pass your function itself (e.g. check_{what}(my_{what})), not its result "
                        f"({type(fn).__name__})")
    try:
        return fn(*args)
    except NotImplementedError as err:
        if not _raised_in(fn, err):
            raise
        hint = str(err).strip()
        raise NotWrittenYet(f"your {reader_name(fn)} is not written yet" + (f" — {hint}" if hint else "")) from None


def call_tensor(fn, *args, what: str) -> torch.Tensor:
    """:func:`call`, and the result must be a torch.Tensor."""
    __tracebackhide__ = True
    out = call(fn, *args, what=what)
    if not isinstance(out, torch.Tensor):
        raise AssertionError(f"{reader_name(fn)} must return a torch.Tensor; it returned {type(out).__name__}")
    return out


def passed(fn, what: str, detail: str) -> str:
    """Print (and return) the pass line: "✓ your my_x is right: <detail>", or, on the book's
    reference solution, "✓ <what>: <detail> — ran on the book's reference solution; ..."."""
    if is_reference(fn):
        line = f"✓ {what}: {detail} — {REFERENCE_NOTE}"
    else:
        line = f"✓ your {reader_name(fn)} is right: {detail}"
    print(line)
    return line
