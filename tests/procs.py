"""Find the processes a test started, by a tag in their environment (workers, Ray nodes)."""
import os

TAG_VAR = "CONVBENCH_TEST_TAG"


def tagged_processes(tag, var=TAG_VAR):
    """pid -> cmdline of live processes whose environment holds var=tag (zombies excluded)."""
    found = {}
    needle = ("%s=%s" % (var, tag)).encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/environ" % pid, "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open("/proc/%s/stat" % pid) as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open("/proc/%s/cmdline" % pid, "rb") as fh:
                found[int(pid)] = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:  # gone meanwhile, or not ours
            continue
    return found
