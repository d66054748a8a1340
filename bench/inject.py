"""Deliberate faults for the fault suite and the compare tests: `CONVBENCH_INJECT="key=value,..."`.

The variable reaches the worker through its environment; every fault is applied INSIDE the worker,
so the real runner and CLI paths see it as they would see the real thing. Every injected run says
so in its record (`injected`, filled by the runner for records of workers that died too), so an
injected figure can never pass for a real one. Keys (N: a step number, counted from 1 over all
epochs; the fault fires when step N starts):

    step_sleep_ms=N      sleep N ms inside every timed train step (a made slowdown)
    kill_at_step=N       the worker SIGKILLs itself (a native crash, the OOM killer)
    hang_at_step=N       the worker sleeps forever (a deadlock; the runner's --timeout ends it)
    alloc_mb_at_step=N:MB  the worker allocates and touches MB MiB (use with --memory-limit-mb:
                         without a limit this really takes the memory)
    garbage_at_step=N    the worker writes non-protocol bytes on its protocol channel, then goes on
    import_error=1       importing the framework fails (ImportError), as a broken install does

Scope: `BACKEND:key=value` applies a fault to that backend's worker only, so one run can hold a
faulty and a healthy backend: `CONVBENCH_INJECT="numpy:kill_at_step=3"` with
`convbench run --backend numpy,torch`. An unscoped key applies to every backend. A malformed value,
an unknown key, a scope that names no backend or a key given twice for one backend is an
InjectError (the parent checks it before any worker starts).

3.6-compatible: CNTK's worker reads it too.
"""
import os
import signal
import sys
import time

ENV_VAR = "CONVBENCH_INJECT"

STEP_KEYS = ("kill_at_step", "hang_at_step", "garbage_at_step")
#: what garbage_at_step writes: a crash message, a NUL, invalid UTF-8 and a cut-off JSON line
GARBAGE = b"\x00\xff Segmentation fault (core dumped) {\"type\": \"progr\n"


class InjectError(ValueError):
    """CONVBENCH_INJECT is malformed (one line naming the item and the fix)."""


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _alloc(text):
    step, sep, mb = text.partition(":")
    if not sep:
        raise ValueError("must be STEP:MB")
    return "%d:%d" % (_positive_int(step), _positive_int(mb))


def _flag(text):
    if text != "1":
        raise ValueError("must be 1")
    return text


def _non_negative_number(text):
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a number >= 0")
    return text


#: key -> check of its value (raises ValueError), returning the value as recorded
PARSERS = {
    "step_sleep_ms": _non_negative_number,
    "kill_at_step": lambda t: str(_positive_int(t)),
    "hang_at_step": lambda t: str(_positive_int(t)),
    "garbage_at_step": lambda t: str(_positive_int(t)),
    "alloc_mb_at_step": _alloc,
    "import_error": _flag,
}


def parse(text, known=None):
    """[(scope or None, key, value)] from the variable's text; InjectError when malformed.

    known(scope): raises (KeyError) for a scope that is no backend; the parent passes the
    registry's lookup, so a misspelt or mis-cased scope fails before any worker instead of never
    firing."""
    items, seen = [], set()
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        scope, colon, bare = key.strip().partition(":")
        scope, key = (scope.strip(), bare.strip()) if colon else (None, scope.strip())
        if not sep or key not in PARSERS or scope == "":
            raise InjectError("%s item %r is not [BACKEND:]key=value with a known key (%s); fix: "
                              "see bench/inject.py" % (ENV_VAR, item, ", ".join(sorted(PARSERS))))
        try:
            value = PARSERS[key](value.strip())
        except ValueError as exc:
            raise InjectError("%s item %r: %s; fix: see bench/inject.py" % (ENV_VAR, item, exc))
        if scope is not None and known is not None:
            try:
                known(scope)
            except KeyError:
                raise InjectError("%s item %r: scope %r is not a backend (names are lower-case, "
                                  "as `convbench list` shows them); fix: use one of them"
                                  % (ENV_VAR, item, scope))
        if (scope, key) in seen:
            raise InjectError("%s gives %r twice; fix: give it once" % (ENV_VAR, key))
        seen.add((scope, key))
        items.append((scope, key, value))
    return items


def active(backend=None, environ=None):
    """The faults for `backend`'s worker as a dict str -> str ({} when none): the unscoped ones
    plus those scoped to `backend` (a scoped one wins over an unscoped one of the same key)."""
    environ = os.environ if environ is None else environ
    faults = {}
    for scope, key, value in sorted(parse(environ.get(ENV_VAR, "")), key=lambda i: i[0] is not None):
        if scope is None or scope == backend:
            faults[key] = value
    return faults


class _BlockImports(object):
    """A meta-path finder that makes importing the named top-level modules fail."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.names or fullname.split(".")[0] in self.names:
            raise ImportError("No module named %r (injected by %s import_error=1)"
                              % (fullname, ENV_VAR), name=fullname)
        return None


def block_imports(backend, faults):
    """import_error: the framework cannot be imported. Where the worker already holds it (numpy),
    the adapter's own module is blocked instead, so the import still fails where it is first used."""
    if "import_error" not in faults:
        return
    names = [m for m in backend.requires if m not in sys.modules]
    if len(names) < len(backend.requires):
        names.append(backend.target.split(":")[0])
    _say("import_error=1: blocking %s" % ", ".join(names))
    sys.meta_path.insert(0, _BlockImports(names))


def _say(text):
    sys.stderr.write("convbench inject: %s\n" % text)
    sys.stderr.flush()


def wrap_adapter(adapter, faults, raw_write=None):
    """Apply the step-level faults to an adapter instance (its class is left alone).

    raw_write(bytes) writes straight to the protocol channel (for garbage_at_step)."""
    at = dict((key, int(faults[key])) for key in STEP_KEYS if key in faults)
    if "garbage_at_step" in at and raw_write is None:
        raise InjectError("garbage_at_step needs the protocol channel (only the worker has it)")
    if "alloc_mb_at_step" in faults:
        step, mb = faults["alloc_mb_at_step"].split(":")
        at["alloc_mb_at_step"] = int(step)
        alloc_mb = int(mb)
    delay_s = float(faults.get("step_sleep_ms", 0)) / 1000.0
    if not at and not delay_s:
        return adapter
    real_step = adapter.train_step
    state = {"step": 0, "held": []}

    def faulty_step(x, y):
        state["step"] += 1
        n = state["step"]
        for key in sorted(k for k, step in at.items() if step == n):
            _say("%s=%s at step %d" % (key, faults[key], n))  # lands in the record's stderr_tail
        if at.get("kill_at_step") == n:
            os.kill(os.getpid(), signal.SIGKILL)
        if at.get("hang_at_step") == n:
            while True:
                time.sleep(3600)
        if at.get("garbage_at_step") == n:
            raw_write(GARBAGE)
        if at.get("alloc_mb_at_step") == n:
            import numpy as np
            # ones, not zeros: the pages are touched, as a real allocation would
            state["held"].append(np.ones(alloc_mb * 2 ** 20, dtype=np.uint8))
        loss = real_step(x, y)
        if delay_s:
            time.sleep(delay_s)
        return loss

    adapter.train_step = faulty_step
    return adapter
