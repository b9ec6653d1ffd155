"""Checks an Autobahn fuzzingclient report: every case must pass, and the results must match
the committed expected file (so a change in behaviour is seen). UPDATE_EXPECTED=1 rewrites it."""
import json
import os
import sys

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}


def case_key(case):
    return [int(p) for p in case.split(".")]


def main(index_path, expected_path):
    with open(index_path) as f:
        index = json.load(f)
    results = {}
    for agent in index.values():
        for case, r in agent.items():
            results[case] = {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
    failed = [c for c, r in results.items() if r["behavior"] not in PASSING or r["behaviorClose"] not in PASSING]
    counts = {}
    for r in results.values():
        counts[r["behavior"]] = counts.get(r["behavior"], 0) + 1
    print("autobahn: %d cases: %s" % (len(results), ", ".join("%s %d" % kv for kv in sorted(counts.items()))))
    ordered = {c: results[c] for c in sorted(results, key=case_key)}
    if os.environ.get("UPDATE_EXPECTED") == "1":
        with open(expected_path, "w") as f:
            json.dump(ordered, f, indent=1, sort_keys=False)
            f.write("\n")
        print("autobahn: wrote %s" % expected_path)
    for c in sorted(failed, key=case_key):
        print("autobahn: FAILED case %s: %s" % (c, results[c]))
    with open(expected_path) as f:
        expected = json.load(f)
    changed = sorted(set(expected) ^ set(results), key=case_key)
    changed += [c for c in sorted(set(expected) & set(results), key=case_key) if expected[c] != results[c]]
    for c in changed:
        print("autobahn: case %s changed: expected %s, got %s" % (c, expected.get(c), results.get(c)))
    passed = len(results) - len(failed)
    print("%d passed, %d failed" % (passed, len(failed)))
    if failed or changed:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
