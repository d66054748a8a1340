"""A progress bar per epoch on stderr (tqdm), fed by the worker's progress messages."""
import sys

from tqdm import tqdm


class Progress(object):
    def __init__(self, label):
        self.label = label
        self.bar = None
        self.epoch = None

    def log(self, text):
        (self.bar.write if self.bar else lambda t: print(t, file=sys.stderr))(text)

    def update(self, message):
        """Show a progress message; one that is malformed is ignored (a bar is never worth a run)."""
        try:
            self._update(message)
        except (KeyError, TypeError, ValueError):
            pass

    def _update(self, message):
        if message.get("type") != "progress" or "step" not in message:
            return
        if message["epoch"] != self.epoch:
            self.close()
            self.epoch = message["epoch"]
            self.bar = tqdm(total=message["steps"], unit="step", leave=False, file=sys.stderr,
                            desc="%s epoch %d/%d" % (self.label, message["epoch"], message["epochs"]),
                            disable=None)  # None: no bar when stderr is not a terminal
        self.bar.n = message["step"]
        loss = message.get("loss")  # the worker's JSON makes a NaN loss null
        self.bar.set_postfix(loss="%.4f" % loss if isinstance(loss, (int, float)) else str(loss),
                             refresh=False)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
