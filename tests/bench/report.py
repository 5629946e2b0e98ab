#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""report.py - the reporting half of tests/bench/bench.sh.

  report.py brief FIO_JSON
      one line about one fio run (for bench.sh's progress log);
  report.py report --machine F --config F --samples F --meta F
                   --json OUT --markdown OUT
      reads every sample bench.sh collected, writes results.json (the
      machine, the settings, every sample and its median) and results.md
      (one Markdown table per job group, each target against raw).

It only reads what bench.sh measured: it never runs anything, and a sample
that moved no data is an error, not a zero in a table.
"""
import argparse
import json
import statistics
import sys

TARGETS = [
    ("raw", "raw file"),
    ("vdpool", "vdpool, allocated disk"),
    ("vdpool-thin", "vdpool, fresh thin disk"),
    ("qemu-fuse", "qemu-storage-daemon FUSE"),
    ("nbdfuse", "nbdfuse + nbdkit file"),
]
# The iSCSI rows: compared with the LUN itself, not with the raw file.
ISCSI_TARGETS = [
    ("iscsi-raw", "iSCSI LUN, qemu libiscsi + fio nbd"),
    ("vdpool-iscsi", "vdpool on an iSCSI LUN"),
]


def fail(msg):
    sys.exit("report.py: " + msg)


def load_fio(path):
    """The metrics of one fio JSON output (group_reporting: one job)."""
    try:
        with open(path) as f:
            text = f.read()
        job = json.loads(text[text.index("{"):])["jobs"][0]
    except (OSError, ValueError, KeyError, IndexError) as e:
        fail("%s: not a fio JSON result: %s" % (path, e))
    if job.get("error"):
        fail("%s: fio reported error %s" % (path, job["error"]))
    m = {}
    for d in ("read", "write"):
        x = job[d]
        if not x["total_ios"]:
            continue
        lat = x["lat_ns"]
        pct = lat.get("percentile", {})
        m[d + "_iops"] = x["iops"]
        m[d + "_mibs"] = x["bw_bytes"] / 2**20
        m[d + "_lat_mean_us"] = lat["mean"] / 1e3
        for k, name in (("50.000000", "p50"), ("99.000000", "p99"),
                        ("99.900000", "p999")):
            if k in pct:
                m["%s_lat_%s_us" % (d, name)] = pct[k] / 1e3
    sync = job.get("sync", {}).get("lat_ns", {})
    if sync.get("N"):
        m["sync_n"] = sync["N"]
        m["sync_lat_mean_us"] = sync["mean"] / 1e3
        for k, name in (("50.000000", "p50"), ("99.000000", "p99"),
                        ("99.900000", "p999")):
            if k in sync.get("percentile", {}):
                m["sync_lat_%s_us" % name] = sync["percentile"][k] / 1e3
    if not m.get("read_iops") and not m.get("write_iops"):
        fail("%s: the run moved no data" % path)
    m["runtime_ms"] = job.get("job_runtime", 0)
    return m


def brief(path):
    m = load_fio(path)
    parts = []
    for d in ("write", "read"):
        if d + "_iops" not in m:
            continue
        if path.split("/")[-1].split(".")[1].startswith("seq"):
            parts.append("%s %.0f MiB/s" % (d, m[d + "_mibs"]))
        else:
            parts.append("%s %.0f IOPS, p99 %.2f ms" %
                         (d, m[d + "_iops"], m.get(d + "_lat_p99_us", 0) / 1e3))
    if "sync_lat_p99_us" in m:
        parts.append("fdatasync p99 %.2f ms" % (m["sync_lat_p99_us"] / 1e3))
    print("; ".join(parts))


def read_kv(path):
    """key=value lines; numbers become numbers."""
    d = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                d[k] = number(v)
    return d


def number(v):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def kv_words(s):
    return {k: number(v) for k, v in (w.split("=", 1) for w in s.split() if "=" in w)}


def median_of(samples):
    keys = sorted({k for s in samples for k in s if isinstance(s[k], (int, float))
                   and k != "rep"})
    return {k: statistics.median([s[k] for s in samples if k in s]) for k in keys}


# ---- Markdown ------------------------------------------------------------

def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "iops":
        return "{:,.0f}".format(v)
    if unit == "mibs":
        return "{:,.0f}".format(v) if v >= 100 else "%.1f" % v
    if unit == "ms":
        return "%.2f" % (v / 1e3)
    if unit == "pct":
        return "%.0f%%" % (v * 100)
    return str(v)


def table(title, note, cols, med, targets, lines, base_t="raw",
          base_name="raw"):
    """cols: (header, job, metric, unit, with_ratio); ratios to BASE_T."""
    rows = []
    head = ["target"]
    for h, _, _, _, ratio in cols:
        head.append(h)
        if ratio:
            head.append("vs " + base_name)
    for t, label in targets:
        row = [label]
        for _, job, metric, unit, ratio in cols:
            v = metric(med.get((t, job))) if med.get((t, job)) else None
            row.append(fmt(v, unit))
            if ratio:
                base = med.get((base_t, job))
                b = metric(base) if base else None
                row.append(fmt(v / b, "pct") if v is not None and b else "–")
        if any(c != "–" for c in row[1:]):
            rows.append("| " + " | ".join(row) + " |")
    if not rows:
        return
    lines += ["### " + title, ""]
    if note:
        lines += [note, ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" + "---:|" * (len(head) - 1))
    lines += rows + [""]


def get(key):
    return lambda m: m.get(key)


def total_iops(m):
    return m.get("read_iops", 0) + m.get("write_iops", 0)


def fio_tables(prefix, note, med, targets, L, base, base_name):
    """The three tables of fio jobs, for TARGETS against BASE."""
    table(prefix + "Sequential 1 MiB, libaio, QD 8 (MiB/s)", note, [
        ("write", "seq-write", get("write_mibs"), "mibs", True),
        ("read", "seq-read", get("read_mibs"), "mibs", True),
    ], med, targets, L, base, base_name)
    table(prefix + "Random 4 KiB, libaio, QD 32 (IOPS, p99 latency in ms)", None, [
        ("write", "rand-write", get("write_iops"), "iops", True),
        ("p99", "rand-write", get("write_lat_p99_us"), "ms", False),
        ("read", "rand-read", get("read_iops"), "iops", True),
        ("p99", "rand-read", get("read_lat_p99_us"), "ms", False),
        ("70/30 mix", "rand-rw", total_iops, "iops", True),
        ("p99 read", "rand-rw", get("read_lat_p99_us"), "ms", False),
    ], med, targets, L, base, base_name)
    table(prefix + "Random 4 KiB writes, synchronous (IOPS, p99 latency in ms)", None, [
        ("4 psync threads", "psync4-write", get("write_iops"), "iops", True),
        ("p99", "psync4-write", get("write_lat_p99_us"), "ms", False),
        ("QD 1, fdatasync every 16", "fsync16-write", get("write_iops"), "iops", True),
        ("fdatasync p99", "fsync16-write", get("sync_lat_p99_us"), "ms", False),
    ], med, targets, L, base, base_name)


def report(a):
    machine = read_kv(a.machine)
    config = read_kv(a.config)
    samples = []
    with open(a.samples) as f:
        for line in f:
            t, job, rep, path, extra = line.rstrip("\n").split("\t")
            s = {"target": t, "job": job, "rep": int(rep)}
            s.update(load_fio(path))
            s.update(kv_words(extra))
            samples.append(s)
    meta, clones = [], []
    with open(a.meta) as f:
        for line in f:
            kind, n, rep, extra = line.rstrip("\n").split("\t")
            s = {"kind": kind, "extents": int(n), "rep": int(rep)}
            s.update(kv_words(extra))
            if kind == "clone":
                clones.append(s)
                continue
            if s.get("mount_us", 0) <= 0 or s.get("VmRSS", 0) <= 0:
                fail("mount sample %r has no time or memory" % line)
            if s.get("extents_used") != s["extents"]:
                fail("the pool of %d extents has %s in use" %
                     (s["extents"], s.get("extents_used")))
            meta.append(s)

    groups = {}
    for s in samples:
        groups.setdefault((s["target"], s["job"]), []).append(s)
    med = {k: median_of(v) for k, v in groups.items()}
    present = {t for t, _ in groups}
    targets = [(t, label) for t, label in TARGETS if t in present]
    iscsi = [(t, label) for t, label in ISCSI_TARGETS if t in present]
    mgroups = {}
    for s in meta:
        mgroups.setdefault(s["extents"], []).append(s)
    mmed = {n: median_of(v) for n, v in mgroups.items()}

    results = {
        "machine": machine,
        "config": config,
        "results": [{"target": t, "job": j, "median": med[(t, j)],
                     "samples": groups[(t, j)]} for (t, j) in groups],
        "metadata": {
            "mount": [{"extents": n, "extent_size": 65536, "median": mmed[n],
                       "samples": mgroups[n]} for n in sorted(mgroups)],
            "clone": clones,
        },
    }
    with open(a.json, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")

    L = []
    reps = config.get("repeat")
    L.append("## Results: %s mode, vdpool %s" %
             (config.get("mode"), str(machine.get("vdpool_commit"))[:12]))
    L.append("")
    L.append("`%s`, %s. Each target on a %s file; %s s per job after %s s"
             " of warm-up; median of %s run%s." %
             (str(config.get("command")).strip(), machine.get("date"),
              "%g GiB" % (config["size"] / 2**30), config.get("runtime_s"),
              config.get("ramp_s"), reps, "" if reps == 1 else "s"))
    L.append("")
    L.append("| machine | |")
    L.append("|---|---|")
    for k, label in (("cpu", "CPU"), ("cores", "cores"), ("memory_gib", "memory GiB"),
                     ("kernel", "kernel"), ("os", "OS"), ("dir_fs", "filesystem"),
                     ("fio", "fio"), ("qemu", "qemu"), ("nbdkit", "nbdkit"),
                     ("nbdfuse", "nbdfuse"), ("tgt", "tgt (iSCSI target)"),
                     ("vdpool", "vdpool"),
                     ("vdpool_commit", "vdpool commit"),
                     ("load_start", "load average, start"),
                     ("load_end", "load average, end")):
        if k in machine:
            L.append("| %s | %s |" % (label, machine[k]))
    L.append("")

    fio_tables("", None, med, targets, L, "raw", "raw")
    table("Commit latency (ms)",
          "One 4 KiB write then `fdatasync` per 1 MiB, QD 1: on the thin disk "
          "every write allocates an extent and every fdatasync commits it; on "
          "the allocated disk the same writes overwrite.", [
              ("writes/s", "commit", get("write_iops"), "iops", False),
              ("fdatasync p50", "commit", get("sync_lat_p50_us"), "ms", False),
              ("p99", "commit", get("sync_lat_p99_us"), "ms", False),
              ("p99.9", "commit", get("sync_lat_p999_us"), "ms", False),
          ], med, targets, L)

    if iscsi:
        fio_tables("iSCSI: ", "A LUN of tgtd on 127.0.0.1 (a file of the same "
                   "size behind it). The limit reads and writes it with fio's "
                   "nbd engine through qemu-storage-daemon's libiscsi driver "
                   "(Debian's fio has no libiscsi engine, and its nbd engine "
                   "cannot fdatasync: no fdatasync column there); vdpool runs "
                   "the same jobs on an allocated disk of a pool whose one "
                   "member is another LUN of the same target.",
                   med, iscsi, L, "iscsi-raw", "LUN")

    if mmed:
        L.append("### Mount time and daemon memory (64 KiB extents)")
        L.append("")
        L.append("One disk with exactly that many allocated extents; `vdpool mount` "
                 "wall time, then the daemon's VmRSS and VmHWM. Per extent: the "
                 "growth of VmRSS over the smallest pool, per extra extent.")
        L.append("")
        L.append("| allocated extents | mount ms | VmRSS MiB | VmHWM MiB "
                 "| bytes per extent | members on disk MiB |")
        L.append("|---:|---:|---:|---:|---:|---:|")
        n0 = min(mmed)
        for n in sorted(mmed):
            m = mmed[n]
            per = ("%.1f" % ((m["VmRSS"] - mmed[n0]["VmRSS"]) * 1024 / (n - n0))
                   if n > n0 else "–")
            L.append("| {:,} | {:.0f} | {:.1f} | {:.1f} | {} | {:.1f} |".format(
                n, m["mount_us"] / 1e3, m["VmRSS"] / 1024, m["VmHWM"] / 1024, per,
                m["members_kib"] / 1024))
        L.append("")
    if clones:
        L.append("### Clone time")
        L.append("")
        L.append("`copy_file_range` of the disks above to a new disk of the same "
                 "pool (every extent shared), then `fsync` of the clone (the "
                 "commit).")
        L.append("")
        L.append("| extents | disk GiB | clone ms | commit ms |")
        L.append("|---:|---:|---:|---:|")
        for c in sorted(clones, key=lambda c: c["extents"]):
            L.append("| {:,} | {:.1f} | {:.1f} | {:.1f} |".format(
                c["extents"], c["extents"] * 65536 / 2**30, c["clone_us"] / 1e3,
                c["commit_us"] / 1e3))
        L.append("")
    order = str(config.get("jobs", "")).split(",") + ["commit"]
    thin = sorted(((j, m) for (t, j), m in med.items() if t == "vdpool-thin"),
                  key=lambda x: order.index(x[0]) if x[0] in order else 99)
    if thin:
        L.append("### The thin disk's runs")
        L.append("")
        L.append("Before each run the thin disk is truncated to nothing and "
                 "committed, which frees what the previous run allocated, and "
                 "the run waits until the daemon has discarded it on the "
                 "members; the run has no warm-up and writes each block at "
                 "most once, so it stops when the disk is full or the time is "
                 "up.")
        L.append("")
        L.append("| job | freeing the previous run's extents, ms | allocated at the end, MiB |")
        L.append("|---|---:|---:|")
        for j, m in thin:
            L.append("| %s | %.0f | %.0f |" % (j, m.get("free_prev_ms", 0),
                                              m.get("allocated_mib", 0)))
        L.append("")
    with open(a.markdown, "w") as f:
        f.write("\n".join(L))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "brief":
        brief(sys.argv[2])
        return
    p = argparse.ArgumentParser(prog="report.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("report")
    for opt in ("machine", "config", "samples", "meta", "json", "markdown"):
        r.add_argument("--" + opt, required=True)
    report(p.parse_args())


if __name__ == "__main__":
    main()
