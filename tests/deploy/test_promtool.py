#!/usr/bin/python3
"""promtool accepts deploy/prometheus/: the config, the alert rules, and the
rules' unit tests (deploy/prometheus/alerts_test.yml, which checks that each
alert fires on a series past its threshold and not on one just short of it)."""
import shutil
import subprocess
import unittest

import deploy_testlib as lib

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args):
    return subprocess.run([PROMTOOL, *args], cwd=lib.src("deploy", "prometheus"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=60)


class PromtoolTest(unittest.TestCase):
    def test_check_config(self):
        r = promtool("check", "config", "prometheus.yml")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("SUCCESS", r.stdout)
        self.assertIn("4 rules found", r.stdout)  # alerts.yml came along

    def test_check_rules(self):
        r = promtool("check", "rules", "alerts.yml")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("SUCCESS: 4 rules found", r.stdout)

    def test_rule_unit_tests(self):
        r = promtool("test", "rules", "alerts_test.yml")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("SUCCESS", r.stdout)


if __name__ == "__main__":
    lib.main()
