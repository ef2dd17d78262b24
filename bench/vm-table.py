"""bench/vm's table: reads the guest console (VMB-RESULT / VMB-INFO lines)
and prints the markdown results file on stdout. Stdlib only.

Usage: vm-table.py CONSOLE_LOG STAMP VERSION ARGS LABEL ELAPSED
"""

import sys

TARGETS = [
    ("drbd", "DRBD 8.4 protocol C / ref"),
    ("repd-pair", "repd pair / ref"),
    ("repd-alone", "repd alone / ref"),
    ("nbdkit", "nbdkit alone / ref"),
]
# With bench/vm --base-bindir: the same targets run with an earlier build.
BASE_TARGETS = [
    ("repd-pair-base", "base pair / ref"),
    ("repd-alone-base", "base alone / ref"),
]
JOBS = [
    ("4k-randwrite-qd16", "4K randwrite QD16"),
    ("1m-seqwrite-qd8", "1M seqwrite QD8"),
    ("4k-randwrite-qd1", "4K randwrite QD1"),
]
FIELDS = ["target", "job", "iops", "bw_kib", "p50_us", "p99_us", "mean_us", "write_ios", "write_kib",
          "cpu_user", "cpu_sys", "cpu_softirq", "cpu_idle", "proc_s", "proc_minflt"]


def parse(path):
    """Results in console order, and the info lines."""
    runs, infos, extra = [], [], []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("VMB-RESULT "):
                parts = line.split()[1:]
                if len(parts) != len(FIELDS):
                    continue
                runs.append(dict(zip(FIELDS, parts)))
            elif line.startswith("VMB-INFO "):
                infos.append(line[len("VMB-INFO "):])
            elif line.startswith(("VMB-THREADS ", "VMB-PERF ")):
                extra.append(line)
    return runs, infos, extra


def num(s):
    try:
        return float(s)
    except ValueError:
        return None


def pairs(runs):
    """{(target, job): (run, its reference run)}: each target run with the
    ref run of the same job just before it."""
    out = {}
    last_ref = {}
    for r in runs:
        if r["target"] == "ref":
            last_ref[r["job"]] = r
        elif r["job"] in last_ref:
            out[(r["target"], r["job"])] = (r, last_ref.pop(r["job"]))
    return out


def ratio(p):
    run, ref = p
    a, b = num(run["bw_kib"]), num(ref["bw_kib"])
    return a / b if a is not None and b else None


def fmt(x, nd=3):
    return "—" if x is None else f"{x:.{nd}f}"


def main():
    log, stamp, version, args, label, elapsed = sys.argv[1:7]
    runs, infos, extra = parse(log)
    p = pairs(runs)
    w = sys.stdout.write
    w(f"# VM benchmark {stamp} (bench/vm)\n\n")
    if label:
        w(f"{label}\n\n")
    w(f"repd `{version}`; `bench/vm {args}`; whole run {elapsed}.\n")
    w("One TCG VM (one vCPU), brd ram disks, fio libaio direct; every ratio is a target's\n"
      "bandwidth over the reference ram disk's in the same job run just before it.\n\n")
    targets = TARGETS + [tb for tb in BASE_TARGETS if any(t == tb[0] for t, _ in p)]
    base = len(targets) > len(TARGETS)
    heads = [h for t, h in targets]
    extra_heads = " pair new/base | alone new/base |" if base else ""
    w("| job | " + " | ".join(heads) + " | pair >= DRBD | alone >= nbdkit |" + extra_heads + "\n")
    w("|---|" + "---:|" * len(heads) + "---|---|" + ("---:|---:|" if base else "") + "\n")
    for job, jname in JOBS:
        rs = {t: ratio(p[(t, job)]) if (t, job) in p else None for t, _ in targets}
        if all(v is None for v in rs.values()):
            continue

        def met(a, b):
            if rs[a] is None or rs[b] is None:
                return "—"
            return f"{'met' if rs[a] >= rs[b] else 'NOT met'} ({rs[a] / rs[b]:.2f}x)"

        def over(a, b):
            return "—" if rs.get(a) is None or not rs.get(b) else f"{rs[a] / rs[b]:.2f}x"

        w(f"| {jname} | " + " | ".join(fmt(rs[t]) for t, _ in targets)
          + f" | {met('repd-pair', 'drbd')} | {met('repd-alone', 'nbdkit')} |"
          + (f" {over('repd-pair', 'repd-pair-base')} | {over('repd-alone', 'repd-alone-base')} |" if base else "") + "\n")
    w("\n## Every run\n\n")
    w("IOPS and MB/s from fio (write side); latency (submission to completion); avg request: what the\n"
      "device under fio completed (`/sys/block/X/stat`, ramp included); guest CPU split over\n"
      "the run (user / system / softirq / idle+iowait, %); server CPU: seconds of\n"
      "utime+stime of the daemons (repd alpha+beta, or nbdkit) over the run; server faults:\n"
      "their minor page faults over the run.\n\n")
    w("| target | job | IOPS | MB/s | p50 / p99 / mean µs | ref IOPS | ratio | avg request KiB | CPU usr/sys/sirq/idle | server CPU s | server faults |\n")
    w("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n")
    for t, _ in targets:
        for job, jname in JOBS:
            if (t, job) not in p:
                continue
            run, ref = p[(t, job)]
            ios, kib = num(run["write_ios"]), num(run["write_kib"])
            avg = kib / ios if ios and kib is not None else None
            bw = num(run["bw_kib"])
            w(f"| {t} | {jname} | {run['iops']} | {fmt(bw / 1024 if bw is not None else None, 1)} | {run['p50_us']} / {run['p99_us']} / {run['mean_us']} "
              f"| {ref['iops']} | {fmt(ratio((run, ref)))} | {fmt(avg, 1)} "
              f"| {run['cpu_user']}/{run['cpu_sys']}/{run['cpu_softirq']}/{run['cpu_idle']} "
              f"| {run['proc_s'] if t != 'drbd' else '—'} | {run['proc_minflt'] if t != 'drbd' else '—'} |\n")
    w("\n## Guest notes\n\n")
    for i in infos:
        w(f"- {i}\n")
    threads = [e for e in extra if e.startswith("VMB-THREADS ")]
    if threads:
        w("\n## Busiest daemon threads per run (CPU ticks of 10 ms, context switches)\n\n```\n")
        for t in threads:
            head, _, rest = t[len("VMB-THREADS "):].partition(" | ")
            w(head + "\n")
            for part in rest.split(" | "):
                w("    " + part + "\n")
        w("```\n")
    prof = [e[len("VMB-PERF "):] for e in extra if e.startswith("VMB-PERF ")]
    if prof:
        w("\n## Profile (perf record -a -e cpu-clock in the guest, self time)\n\n```\n")
        for line in prof:
            w(line + "\n")
        w("```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
