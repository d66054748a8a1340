"""Records that are valid JSON but break the schema, field by field: the fault suite writes them
for the readers (tests/test_faults_outside.py), and tests/test_results.py holds the fast schema
check to jsonschema's verdict on them."""
import copy


DROP = object()
# (field path, value): wrong types, wrong shapes, values out of range, fields removed
MUTATIONS = [
    (("config",), "x"), (("config", "batch_size"), "64"), (("config", "lr"), None),
    (("config", "mode"), 3), (("config", "limit_train"), "all"),
    (("timing", "step_ns"), ["a"]), (("timing", "step_ns"), [1.5, 2]),
    (("timing", "warmup_steps"), "1"), (("timing", "train_s"), "x"), (("timing",), DROP),
    (("backend",), 7), (("framework",), None), (("model",), []), (("status",), "OK"),
    (("reason",), 5), (("time",), 12), (("summary",), "fast"), (("summary", "step_ms_q1"), "1"),
    (("summary", "median_step_ms"), "2"), (("summary", "test_accuracy"), 2.0),
    (("summary", "process_step_ms"), "x"), (("summary", "median_step_ms"), DROP),
    (("curve",), [{}]), (("curve",), "x"), (("curve", 0, "train_s"), "x"), (("epochs",), [{}]),
    (("epochs", 0, "test_accuracy"), "0.9"), (("step_loss",), ["x"]), (("step_loss",), 5),
    (("memory",), [1]), (("memory", "peak_rss_mb"), "big"), (("environment",), "numpy"),
    (("environment", "math_libraries"), [1]), (("machine",), None), (("machine", "cores"), "two"),
    (("machine", "gpus"), [1]), (("machine", "matmul_peak", "by_library"), {"x": "fast"}),
    (("load",), {"other_cores": "x", "noisy": 1}), (("injected",), {"a": 1}),
    (("repeat",), {"index": "0", "of": 2}), (("sweep",), {"id": 5, "axes": {}}),
    (("work_hash",), 5), (("role",), "both"), (("spec_facts", "param_count"), "1"),
    (("threads",), "1"), (("device",), "tpu"), (("run_id",), 1), (("executor",), "local"),
    (("wall_s",), -1), (("git_dirty",), "yes"),
    # valid, and so they must be reported and compared
    (("curve",), []), (("step_loss",), [None, 1e308]), (("load",), None),
    (("machine", "hostname"), None), (("summary", "time_to_98_s"), None),
    (("environment", "extra"), {"deep": [1, [2, {"x": None}]]}),
]


def mutant(record, path, value):
    """A deep copy of record with the field at `path` set to value (DROP: removed)."""
    out = copy.deepcopy(record)
    where = out
    for key in path[:-1]:
        where = where[key]
    if value is DROP:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return out
