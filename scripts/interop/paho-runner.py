#!/usr/bin/env python3
"""Run the Eclipse Paho MQTT interoperability client tests against a broker.

The Paho suite (https://github.com/eclipse/paho.mqtt.testing) is NOT vendored
in this repository; check it out somewhere (e.g. /work/paho) and point --paho
at it.  This wrapper:

  * imports interoperability/client_test.py (MQTT 3.1.1) and/or
    interoperability/client_test5.py (MQTT 5) from the checkout,
  * sets the module globals the suites normally set in their __main__ block
    (host, port, topics, wildtopics, nosubscribe_topics, topic_prefix) -- the
    suites' own getopt handling of -p is broken, hence this wrapper,
  * runs every test case in its own child process (a re-invocation of this
    script) with a per-test timeout, so a hanging test (e.g.
    test_flow_control2 against a broker that never sends DISCONNECT 0x93)
    is killed and reported as TIMEOUT instead of blocking the run.

Each child runs the suite's setUpClass (which cleans the sessions of
"myclientid"/"myclientid2" and deletes retained messages) before its single
test, so tests do not leak state into each other.

Usage:
  python3 scripts/interop/paho-runner.py --paho /work/paho --host 127.0.0.1 \
      --port 1883 [--suite 3|5|both] [--timeout 60] [--test NAME ...] [-v]

Exit status: 0 if every selected test passed, 1 if any failed or timed out,
2 on usage / environment errors (paho checkout missing, broker unreachable).

Python standard library only.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

SUITES = {
    "3": "client_test",    # MQTT 3.1.1, 10 tests
    "5": "client_test5",   # MQTT 5.0, 27 tests
}

CHILD_RESULT_MARKER = "@@PAHO-RUNNER-RESULT@@"


def interop_dir(paho):
    return os.path.join(os.path.abspath(paho), "interoperability")


def load_suite_module(paho, suite):
    """Import the suite module from the paho checkout."""
    d = interop_dir(paho)
    if d not in sys.path:
        sys.path.insert(0, d)
    import importlib
    return importlib.import_module(SUITES[suite])


def configure_module(mod, suite, host, port):
    """Set the globals that the suites' __main__ blocks would normally set."""
    mod.host = host
    mod.port = port
    mod.nosubscribe_topics = ("test/nosubscribe",)
    if suite == "3":
        mod.topics = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")
        mod.wildtopics = ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")
    else:
        # client_test5's __main__ sets prefixed topics, but Test.setUpClass()
        # calls setData(), which overwrites topics/wildtopics with the
        # unprefixed names ("TopicA", ...).  topic_prefix is still needed by
        # test_shared_subscriptions ("$share/sharename/client_test5/x").
        mod.topic_prefix = "client_test5/"
        mod.topics = [mod.topic_prefix + t for t in
                      ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")]
        mod.wildtopics = [mod.topic_prefix + t for t in
                          ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")]


def list_tests(mod):
    import unittest
    return list(unittest.TestLoader().getTestCaseNames(mod.Test))


# --------------------------------------------------------------------------
# child mode: run exactly one test case and report
# --------------------------------------------------------------------------

def run_child(args):
    import logging
    import unittest
    import warnings

    # Some paho tests return a value; Python >= 3.11 warns about that.
    warnings.simplefilter("ignore", DeprecationWarning)
    mod = load_suite_module(args.paho, args.suite)
    configure_module(mod, args.suite, args.host, args.port)
    logging.getLogger().setLevel(logging.ERROR)  # as the suites' __main__ does

    suite = unittest.TestSuite([mod.Test(args.child)])
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2)
    result = runner.run(suite)
    ok = result.wasSuccessful() and result.testsRun == 1
    sys.stdout.write("\n%s %s\n" % (CHILD_RESULT_MARKER, "PASS" if ok else "FAIL"))
    sys.stdout.flush()
    sys.stderr.flush()
    # The paho test clients leave receiver threads running; don't wait for them.
    os._exit(0 if ok else 1)


# --------------------------------------------------------------------------
# parent mode
# --------------------------------------------------------------------------

def broker_reachable(host, port, timeout=3.0):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def run_one(args, suite, name):
    cmd = [sys.executable, os.path.abspath(__file__),
           "--paho", args.paho, "--host", args.host, "--port", str(args.port),
           "--suite", suite, "--child", name]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            cwd=interop_dir(args.paho))
    try:
        out, _ = proc.communicate(timeout=args.timeout)
        status = None
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        status = "TIMEOUT"
    elapsed = time.monotonic() - start
    out = out.decode("utf-8", "replace")
    if status is None:
        if proc.returncode == 0 and (CHILD_RESULT_MARKER + " PASS") in out:
            status = "PASS"
        else:
            status = "FAIL"
    out = out.replace(CHILD_RESULT_MARKER + " PASS", "").replace(
        CHILD_RESULT_MARKER + " FAIL", "").rstrip()
    return status, elapsed, out


def print_output(out, max_lines):
    lines = out.splitlines()
    if max_lines and len(lines) > max_lines:
        print("      ... (%d lines omitted)" % (len(lines) - max_lines))
        lines = lines[-max_lines:]
    for line in lines:
        print("      | " + line)


def main():
    ap = argparse.ArgumentParser(
        description="Run the Eclipse Paho interoperability tests (client_test.py / "
                    "client_test5.py) against an MQTT broker.")
    ap.add_argument("--paho", required=True,
                    help="path of a checkout of github.com/eclipse/paho.mqtt.testing")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--suite", choices=["3", "5", "both"], default="both",
                    help="3 = MQTT 3.1.1 (client_test.py), 5 = MQTT 5 (client_test5.py)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="per-test timeout in seconds (default 60; includes the ~3-6 s "
                         "per-test setUpClass cleanup; the slowest passing tests take ~25 s)")
    ap.add_argument("--test", "-k", action="append", default=[],
                    help="only run tests whose name contains this substring (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the test names and exit")
    ap.add_argument("--verbose", "-v", action="store_true",
                    help="print the child output of passing tests too")
    ap.add_argument("--output-lines", type=int, default=60,
                    help="max lines of child output shown per failing test (0 = all)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if not os.path.isfile(os.path.join(interop_dir(args.paho), "client_test5.py")):
        print("error: %s does not look like a paho.mqtt.testing checkout "
              "(no interoperability/client_test5.py)" % args.paho, file=sys.stderr)
        return 2

    if args.child:
        run_child(args)
        return 1  # not reached

    suites = ["3", "5"] if args.suite == "both" else [args.suite]

    plan = []
    for suite in suites:
        mod = load_suite_module(args.paho, suite)
        names = list_tests(mod)
        if args.test:
            names = [n for n in names if any(t in n for t in args.test)]
        plan.append((suite, names))

    if args.list:
        for suite, names in plan:
            for n in names:
                print("suite%s %s" % (suite, n))
        return 0

    if not broker_reachable(args.host, args.port):
        print("error: cannot connect to broker at %s:%d" % (args.host, args.port),
              file=sys.stderr)
        return 2

    print("paho interop: broker %s:%d, paho %s, per-test timeout %gs"
          % (args.host, args.port, os.path.abspath(args.paho), args.timeout))
    summary = []
    any_bad = False
    for suite, names in plan:
        print("== suite%s (%s.py): %d tests" % (suite, SUITES[suite], len(names)))
        passed = 0
        failed = []
        for name in names:
            status, elapsed, out = run_one(args, suite, name)
            print("%-7s suite%s %s (%.1fs)" % (status, suite, name, elapsed))
            sys.stdout.flush()
            if status == "PASS":
                passed += 1
                if args.verbose:
                    print_output(out, 0)
            else:
                failed.append("%s(%s)" % (name, status))
                print_output(out, args.output_lines)
        summary.append((suite, passed, len(names), failed))
        if failed:
            any_bad = True

    print()
    for suite, passed, total, failed in summary:
        line = "suite%s: %d/%d passed" % (suite, passed, total)
        if failed:
            line += "  (failed: %s)" % ", ".join(failed)
        print(line)
    return 1 if any_bad else 0


if __name__ == "__main__":
    sys.exit(main())
