#!/usr/bin/python3
"""Horizontal scaling with client-side balancing: three ghostserve replicas on
loopback behind one gRPC channel with the round_robin policy (the in-cluster
equivalent is dns:///ghostserve-headless.<ns>.svc.cluster.local:50051, whose
DNS name resolves to every ready pod). Each replica must get a third of the
calls, counted by its own ghostserve_requests_total; the same calls on a
default (pick_first) channel all land on one replica, so the test notices
when balancing is off."""
import os
import shutil
import sys
import tempfile
import unittest

import grpc

import deploy_testlib as lib

REPLICAS = 3
CALLS = 60
WARMUP_CALLS = 2 * REPLICAS


def counts(servers):
    return [lib.sample_sum(s.metrics_text(), "ghostserve_requests_total", code="OK") for s in servers]


class RoundRobinTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ghostserve-rr-test-")
        cls.servers = []
        try:
            for i in range(REPLICAS):
                cls.servers.append(lib.GhostServe(log_path=os.path.join(cls.tmp, f"server{i}.log")).start())
            for s in cls.servers:
                s.wait_serving()
            cls.stubs = cls._stubs()
        except BaseException:
            cls.tearDownClass()
            raise
        with open(lib.src("tests", "testdata", "chelsea.jpg"), "rb") as f:
            cls.image = f.read()

    @classmethod
    def tearDownClass(cls):
        for s in cls.servers:
            s.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def _stubs(cls):
        # Stubs generated from proto/ at run time, as the example client does.
        sys.path.insert(0, lib.src("client", "python"))
        import classify
        cls.stub_dir = tempfile.mkdtemp(dir=cls.tmp)
        return classify.load_stubs(lib.src("proto"), cls.stub_dir)

    def send(self, channel, n):
        pb, pb_grpc = self.stubs[0], self.stubs[1]
        stub = pb_grpc.ClassifierStub(channel)
        for i in range(n):
            r = stub.Classify(pb.ClassifyRequest(image=self.image, model="ghostnet_050", top_k=1), timeout=30)
            self.assertEqual(len(r.predictions), 1)

    def target(self):
        return "ipv4:" + ",".join(s.target for s in self.servers)

    def test_round_robin_spreads_calls_evenly(self):
        options = [("grpc.lb_policy_name", "round_robin")]
        with grpc.insecure_channel(self.target(), options=options) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            # Until every subchannel is READY, round_robin picks among those
            # that are; a few calls give them time to connect.
            self.send(channel, WARMUP_CALLS)
            before = counts(self.servers)
            self.send(channel, CALLS)
            after = counts(self.servers)
        got = [a - b for a, b in zip(after, before)]
        print(f"round_robin: calls per replica {got}", file=sys.stderr)
        self.assertEqual(sum(got), CALLS)
        # Strict rotation once all are READY gives exactly CALLS/REPLICAS
        # each; allow a reconnect's worth of skew.
        for n in got:
            self.assertGreaterEqual(n, CALLS / REPLICAS - 2, got)
            self.assertLessEqual(n, CALLS / REPLICAS + 2, got)

    def test_default_policy_pins_one_replica(self):
        with grpc.insecure_channel(self.target()) as channel:  # pick_first
            before = counts(self.servers)
            self.send(channel, REPLICAS * 3)
            after = counts(self.servers)
        got = sorted(a - b for a, b in zip(after, before))
        self.assertEqual(got, [0] * (REPLICAS - 1) + [REPLICAS * 3])


if __name__ == "__main__":
    lib.main()
