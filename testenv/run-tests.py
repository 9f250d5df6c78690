#!/usr/bin/env python3
"""Builds the workspace's tests once, then runs the test binaries side by side.

`cargo test` runs one test binary after another. Most of ours wait on real
processes (etcd, kube-apiserver, kubelets, moto) far more than they compute,
so a run spent most of its time with the CPU idle: 6.6 min of tests in a row,
of which e2e alone is 2 min. Here up to TEST_JOBS binaries (default 3) run at
once, longest first by the durations recorded in the previous run, each with
cargo's own environment for it (working directory and CARGO_MANIFEST_DIR of
its package). Clusters and ports are already safe to share a machine
(overcast_testenv's slots and port claims).

usage: run-tests.py [cargo test options] [-- test binary options]
One line per binary as it finishes; the whole output of each failed one at the end.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

# A test binary that runs this long is hung: stopped and counted as failed.
BINARY_TIMEOUT_S = int(os.environ.get("TEST_BINARY_TIMEOUT", "1200"))
JOBS = max(1, int(os.environ.get("TEST_JOBS", "3")))
# An unknown binary (new, or no record yet) is assumed to take this long.
UNKNOWN_S = 30.0


def build(cargo, cargo_args):
    """cargo test --no-run; returns [(label, executable, package dir)]."""
    cmd = [cargo, "test", "--no-run", "--message-format=json-render-diagnostics", *cargo_args]
    print("run-tests:", shlex.join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    found = []
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        target = msg["target"]
        package = msg["package_id"]
        package_dir = os.path.dirname(msg["manifest_path"])
        name = os.path.basename(package_dir)
        kind = target["kind"][0]
        # "ccm test e2e", "demo bin demo", "testenv example cluster", "ccm lib"
        label = f"{name} lib" if kind == "lib" else f"{name} {kind} {target['name']}"
        found.append((label, msg["executable"], package_dir, package))
    if proc.wait() != 0:
        sys.exit(proc.returncode)
    return found


def package_env(package_dir, package_id):
    env = dict(os.environ)
    env["CARGO_MANIFEST_DIR"] = package_dir
    # package_id: "path+file:///…/crates/ccm#overcast-ccm@0.1.0"
    spec = package_id.rsplit("#", 1)[-1]
    name, _, version = spec.partition("@")
    if name and version:
        env["CARGO_PKG_NAME"] = name
        env["CARGO_PKG_VERSION"] = version
    return env


class Run:
    def __init__(self, label, executable, package_dir, package_id, test_args):
        self.label = label
        self.log = tempfile.TemporaryFile(mode="w+")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [executable, *test_args],
            cwd=package_dir,
            env=package_env(package_dir, package_id),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seconds = None
        self.timed_out = False

    def poll(self):
        if self.proc.poll() is None and time.monotonic() - self.started > BINARY_TIMEOUT_S:
            self.timed_out = True
            self.stop(signal.SIGKILL)
            self.proc.wait()
        if self.proc.poll() is None:
            return False
        self.seconds = time.monotonic() - self.started
        return True

    def stop(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def summary(self, text):
        results = [l for l in text.splitlines() if l.startswith("test result:")]
        return results[-1].removeprefix("test result: ") if results else ""


def main():
    args = sys.argv[1:]
    test_args = []
    if "--" in args:
        at = args.index("--")
        args, test_args = args[:at], args[at + 1 :]
    cargo = os.environ.get("CARGO", "cargo")
    binaries = build(cargo, args)

    history_path = os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "overcast-test-times.json")
    # The last run's durations, else those recorded in the repository (a
    # fresh clone's first run still starts the long binaries first).
    history = {}
    for path in (os.path.join(os.path.dirname(__file__), "test-durations.json"), history_path):
        try:
            with open(path) as f:
                history.update(json.load(f))
        except (OSError, ValueError):
            pass
    pending = sorted(binaries, key=lambda b: -history.get(b[0], UNKNOWN_S))
    print(f"run-tests: {len(pending)} test binaries, {JOBS} at a time", flush=True)

    running, failed, started = [], [], time.monotonic()

    def stop_all(signum, _frame):
        for run in running:
            run.stop(signal.SIGTERM)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)

    while pending or running:
        while pending and len(running) < JOBS:
            running.append(Run(*pending.pop(0), test_args))
        time.sleep(0.1)
        for run in [r for r in running if r.poll()]:
            running.remove(run)
            text = run.output()
            history[run.label] = round(run.seconds, 1)
            ok = run.proc.returncode == 0
            verdict = "ok" if ok else ("TIMED OUT" if run.timed_out else "FAILED")
            if not ok:
                failed.append((run.label, text))
            print(f"run-tests: {run.label}: {verdict} in {run.seconds:.1f}s  {run.summary(text)}", flush=True)

    try:
        with open(history_path, "w") as f:
            json.dump(history, f, indent=1, sort_keys=True)
    except OSError:
        pass
    wall = time.monotonic() - started
    if failed:
        for label, text in failed:
            print(f"\n===== {label} =====\n{text}", end="")
        print(f"\nrun-tests: {len(failed)} of {len(binaries)} test binaries failed "
              f"({', '.join(l for l, _ in failed)}) in {wall:.0f}s", flush=True)
        return 1
    print(f"run-tests: all {len(binaries)} test binaries passed in {wall:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
