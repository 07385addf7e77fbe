"""Summarize an Autobahn|Testsuite report (index.json): counts per behavior; exit 1 on FAILED."""

import collections
import json
import sys


def main(path):
    with open(path) as f:
        index = json.load(f)
    failed = []
    for agent, cases in sorted(index.items()):
        behavior = collections.Counter()
        close = collections.Counter()
        for case, result in cases.items():
            behavior[result["behavior"]] += 1
            close[result["behaviorClose"]] += 1
            if result["behavior"] == "FAILED":
                failed.append(case)
        order = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
        print("%s: %d cases" % (agent, sum(behavior.values())))
        print("  behavior:      " + ", ".join("%s=%d" % (k, behavior[k]) for k in order))
        print("  behaviorClose: " + ", ".join("%s=%d" % (k, close[k]) for k in order))
        others = set(behavior) - set(order)
        if others:
            print("  other behaviors: %s" % sorted(others))
    if failed:
        print("FAILED cases: %s" % ", ".join(sorted(failed, key=case_key)))
        return 1
    return 0


def case_key(case):
    return [int(p) for p in case.split(".")]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
