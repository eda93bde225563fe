"""Runs the Eclipse Paho MQTT interoperability tests (vendored, unmodified, in
tests/third_party/paho.mqtt.testing) against a broker.

Usage: paho_interop.py <suite-dir> <3|5> <host> <port> [test to leave out ...]

The suites read their settings from module globals that their own `__main__` block fills from
the command line; that block also hands the whole command line to unittest, which then refuses
the options, so this sets the globals and runs the tests itself. Tests left out are those
stricter than the MQTT specification (see docs/mqtt.md); each is named on the command line.
"""

import importlib
import logging
import os
import sys
import types
import unittest

suite_dir, version, host, port = sys.argv[1:5]
left_out = set(sys.argv[5:])
sys.path.insert(0, suite_dir)
# The `mqtt` package's __init__ imports the Paho test broker, which is not vendored.
package = types.ModuleType("mqtt")
package.__path__ = [os.path.join(suite_dir, "mqtt")]
sys.modules["mqtt"] = package

module = importlib.import_module("client_test5" if version == "5" else "client_test")
prefix = "client_test5/" if version == "5" else ""
module.topic_prefix = prefix
module.topics = [prefix + t for t in ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")]
module.wildtopics = [prefix + t for t in ("TopicA/+", "+/C", "#", "/#", "/+", "+/+", "TopicA/#")]
module.nosubscribe_topics = ("test/nosubscribe",)
module.host, module.port = host, int(port)
logging.getLogger().setLevel(logging.ERROR)


def flatten(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from flatten(test)
        else:
            yield test


tests = list(flatten(unittest.TestLoader().loadTestsFromModule(module)))
names = {test.id().rsplit(".", 1)[-1] for test in tests}
unknown = left_out - names
if unknown:
    sys.exit(f"no such tests to leave out: {sorted(unknown)}")
run = unittest.TestSuite(t for t in tests if t.id().rsplit(".", 1)[-1] not in left_out)
result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(run)
print(f"ran {result.testsRun}, failures {len(result.failures)}, errors {len(result.errors)}, left out {len(left_out)}")
sys.exit(0 if result.wasSuccessful() else 1)
