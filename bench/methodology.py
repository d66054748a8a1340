"""What the report says about how its figures are made (its Methodology section)."""

METHODOLOGY = """\
- Every backend trains the same network (models/*.toml) from the same initial weights
  (`init_weights_digest`), on the same MNIST batches in the same order (`order_digest`), with the
  same optimizer, learning rate (on the batch-mean loss), thread budget and dtype. The
  conformance suite (tests/test_conformance.py) proves it numerically against the NumPy reference:
  logits, one optimizer step, and a 100-step loss trajectory.
- Each backend runs in its own fresh worker process (its own environment where frameworks clash),
  so threads, allocators and imports of one never touch another's figures.
- Timed: one optimizer step, from handing over a prepared batch until its loss is back as a Python
  float (the device sync point). Not timed: batch slicing, evaluation, logging.
- The first step (graph building, compilation) is reported apart ("first step ms"); it and the next
  warm-up steps are excluded from the statistics.
- A step time is a property of a process as much as of a framework: where its buffers landed, what
  else ran, how the CPU clocked. The spread between fresh processes is several times the spread
  within one, and consecutive steps of one process are correlated, so a CI from one process' steps
  claims far more than it knows. So each backend is measured in several fresh processes
  (`--timing-runs`, default 5 for `convbench run`): the training run, plus timing-only processes
  that time the first steps of the same training (same weights, same batches; 50 steady steps by
  default), run after all training runs, interleaved across backends with the order rotated each
  round. "median step ms" is the median of the process medians; "95% CI ms" is a percentile
  bootstrap of that median over processes (scipy; shown from 3 processes up: it covers
  process-to-process variation on this machine in this session, not other machines or days);
  "process range ms" is the lowest and highest process median; "IQR ms" is the median of the
  processes' own interquartile ranges (the jitter within a process). Accuracy, time to accuracy
  and memory come from the training run(s) only.
- Epoch mode (the framework's own loop: Keras `fit`, `Estimator.train`, timed by its callbacks):
  a process' figure is the framework's loop time (from the first step's start to the last step's
  end, evaluations and the call's one-off setup left out) less the first step and the warm-up, per
  steady step, so it includes what the loop does between steps (Keras' iterator slicing and
  converting the next batch) and is comparable with step mode's; the callbacks' own step
  intervals give the IQR. Mid-epoch evaluations run on the same schedule in both modes, in epoch
  mode from inside the framework's call (a Keras callback; an Estimator hook that first writes a
  checkpoint, which Estimator.predict reads), their time left out of the training time, so time to
  98% / 99% means the same in both. Backends whose framework trains step by step have no epoch
  mode: `--mode epoch` gives them an "unsupported" record.
- Load: the CPU time other processes used during each job is measured (/proc/stat less the worker
  and convbench); above 0.25 cores on average the status says "noisy", and `compare` leaves such
  processes out unless asked. Python's garbage collector gets the same treatment in every worker:
  a full collection before the first step, `gc.freeze()` where available, then left on.
- GFLOP/s: the spec's training FLOPs per example (conv and dense multiply-adds x 2, forward +
  weight and input gradients) x batch / median step, against this machine's fp32 matmul peak:
  the best float32 1024^3 GEMM of every library the suite's interpreter has (NumPy's BLAS and
  torch's, interleaved), measured once per machine, thread budget and math-kernel settings and
  then reused, so every record of a machine divides by the same figure.
- Memory: MNIST stays uint8 in every worker, made float one batch at a time. "train mem MB" is
  what training itself adds: the peak resident set from the first step to the first evaluation
  (the kernel's high-water mark, reset before the first step) minus the resident set after the
  framework import and model build. "peak RSS MB" is the whole process' peak, import, data and
  evaluation at batch 1000 included. Device peak where the framework reports it.
- Time to 98% / 99%: training seconds (evaluation excluded) until a test-set evaluation (4 per
  epoch) first reached it.
- The suite's own cost per step, the loop around train_step (slicing the batch, uint8 to float,
  two clock reads, bookkeeping, progress), is outside every step figure and inside the epoch's
  wall time. Measured with a null adapter whose train_step returns at once (`python -m
  bench.overhead --json overhead.json`: the epoch's wall time less its timed steps, and the CPU
  time between the first and last progress message); the target is under 1% of the fastest step.
  The figure, when one was measured beside this report, follows this section.
- Tuned track and precision: `torch-tuned` and `keras-xla` are the idiomatic rows with their
  framework's performance guide applied (docs/adding-a-backend.md#the-tuned-track); their
  compilation is the first step's. `--precision bf16` rows (bfloat16 compute, float32 master
  weights) pass the conformance suite within tolerances derived from bf16's 8-bit significand
  (tests/bf16_tolerance.py); `environment.cpu_native_bf16` says whether the CPU computes bf16 in
  hardware.
"""
