"""Progress of the running job on stderr, fed by the worker's progress messages: a bar per epoch
(tqdm) on a terminal; plain lines when stderr is a pipe or file (`| tee`, CI logs)."""
import sys
import time

from tqdm import tqdm

#: plain lines: at most one per this many seconds, besides each epoch's last step
LINE_EVERY_S = 10.0


def _loss_text(loss):
    # the worker's JSON makes a NaN loss null
    return "loss %.4f" % loss if isinstance(loss, (int, float)) else "loss %s" % loss


class Progress(object):
    def __init__(self, label, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.plain = not getattr(self.stream, "isatty", lambda: False)()
        self.bar = None
        self.epoch = None
        self.first = None      # (time, step) of the epoch's first message: rates start there
        self.last_line = 0.0

    def log(self, text):
        (self.bar.write if self.bar else lambda t: print(t, file=self.stream))(text)

    def update(self, message):
        """Show a progress message; one that is malformed is ignored (a bar is never worth a run)."""
        try:
            self._update(message)
        except (KeyError, TypeError, ValueError):
            pass

    def _update(self, message):
        if message.get("type") != "progress" or "step" not in message:
            return
        now, step = time.monotonic(), message["step"]
        if message["epoch"] != self.epoch:
            self.close()
            self.epoch = message["epoch"]
            self.first = (now, step)
            if not self.plain:  # the bar starts at this step: its rate counts from here
                self.bar = tqdm(total=message["steps"], initial=step, unit="step", leave=False,
                                file=self.stream, desc="%s epoch %d/%d" % (
                                    self.label, message["epoch"], message["epochs"]))
        if self.plain:
            self._line(message, now, step)
            return
        self.bar.set_postfix_str(_loss_text(message.get("loss")), refresh=False)
        self.bar.update(step - self.bar.n)

    def _line(self, message, now, step):
        last = step == message["steps"]
        if not last and now - self.last_line < LINE_EVERY_S:
            return
        self.last_line = now
        t0, s0 = self.first
        rate = "%.1f step/s" % ((step - s0) / (now - t0)) if step > s0 and now > t0 else "rate n/a"
        print("  %s epoch %d/%d: step %d/%d, %s, %s" % (
            self.label, message["epoch"], message["epochs"], step, message["steps"],
            _loss_text(message.get("loss")), rate), file=self.stream)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
