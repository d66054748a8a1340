"""Deliberate faults for the fault suite and the compare tests: `CONVBENCH_INJECT="key=value,..."`.

The variable reaches the worker through its environment. Every injected run says so in its record
(`injected`), so an injected figure can never pass for a real one. Keys:

    step_sleep_ms=N   sleep N ms inside every timed train step (a made slowdown)

3.6-compatible: CNTK's worker reads it too.
"""
import os
import time

ENV_VAR = "CONVBENCH_INJECT"


def active():
    """The injected faults as a dict of str -> str ({} when none)."""
    text = os.environ.get(ENV_VAR, "").strip()
    faults = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError("%s item %r is not key=value" % (ENV_VAR, item))
        faults[key.strip()] = value.strip()
    return faults


def wrap_adapter(adapter, faults):
    """Apply the step-level faults to an adapter instance (its class is left alone)."""
    if "step_sleep_ms" in faults:
        delay_s = float(faults["step_sleep_ms"]) / 1000.0
        real_step = adapter.train_step

        def slow_step(x, y):
            loss = real_step(x, y)
            time.sleep(delay_s)
            return loss

        adapter.train_step = slow_step
    return adapter
