"""Benchmark: mailstack sync against mbsync and doveadm backup, on the same corpus and servers.

One "old" Dovecot (127.0.6.1) gets a seeded corpus written straight into its
Maildirs; each tool copies it to a fresh "new" Dovecot of its own
(127.0.6.2 mailstack, .3 mbsync, .4 doveadm), 5 mailboxes at once, then runs
again with nothing to do (five times: the median is kept). Peak RSS is the tool's own processes (GNU time),
never the servers'. Fidelity compares what a client sees on both sides:
folders, and per message its bytes digest, flags and internal date.
Targets (10,000 messages): full copy <= 0.4 x mbsync's wall time, no-op re-sync <= mbsync's, CPU <= 1.1 s,
peak RSS < 100 MB. `mailstack` is always this checkout's code (PYTHONPATH set to it, the bench's interpreter).

    .venv/bin/python bench/sync_bench.py [--small] [--users 5] [--messages 10000] [--megabytes 327] [--json]
    .venv/bin/python bench/sync_bench.py --anchor 30cb9a8   # also mailstack as of that revision (127.0.6.5)
    .venv/bin/python bench/sync_bench.py --tls   # every tool over imaps (993), trusting the servers' certificates
    TMPDIR=/dev/shm .venv/bin/python bench/sync_bench.py   # the servers' mail in memory: no disk in the figures
    .venv/bin/python bench/sync_bench.py --scenario shards [--small]   # two shards (127.0.43.21 -> .22)
    .venv/bin/python bench/sync_bench.py --scenario large [--sizes 10000,50000,100000]   # 127.0.42.1 -> .2-.4
    .venv/bin/python bench/sync_bench.py --scenario many [--mailboxes 2000 --per-mailbox 20]  # 127.0.42.11 -> .12-.14
"""

from __future__ import annotations

import argparse
import base64
import email.header
import email.utils
import json
import math
import os
import pwd
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from mailstack.imap import utf7  # noqa: E402
from mailstack.local.imapserver import DovecotImap, User  # noqa: E402

OLD = "127.0.6.1"
NEW = {"mailstack": "127.0.6.2", "mbsync": "127.0.6.3", "doveadm": "127.0.6.4", "anchor": "127.0.6.5"}
FOLDERS = {"INBOX": 40, "Sent": 20, "Archive/2023": 15, "Archive/2024 日本": 15, "Projets/Été": 10}
KEYWORDS = ("$Forwarded", "$Label1", "Important")  # Maildir letters a, b, c
WORDS = ("the meeting budget invoice report draft review café naïve 日本 quarterly server migration please "
         "attached thanks regards schedule Zürich déjà vu project update").split()


def mailstack_program(tree: Path) -> list[str]:
    """`mailstack` as the code in ``tree`` runs it, whatever the venv has installed (an editable install may point
    at another checkout): the interpreter running the bench, with ``tree`` first on the path; -P, so that the
    current directory (another checkout, when the bench is run from one) is not put before it."""
    return ["env", f"PYTHONPATH={tree}", sys.executable, "-P", "-m", "mailstack.cli"]


MAILSTACK = mailstack_program(PROJECT)
MAILSTACKS = ("mailstack", "anchor")  # this checkout's mailstack, and the one of --anchor


# ---------------------------------------------------------------- corpus


def message_sizes(rng: random.Random, count: int, total: int) -> list[int]:
    """Most messages a few KB, about 3% 100 KB-1.5 MB, 0.3% 2-5 MB; scaled to ``total`` bytes."""
    sizes = []
    for _ in range(count):
        r = rng.random()
        if r < 0.003:
            sizes.append(rng.uniform(2e6, 5e6))
        elif r < 0.03:
            sizes.append(rng.uniform(100e3, 1.5e6))
        else:
            sizes.append(min(rng.lognormvariate(math.log(5000), 0.8), 90e3))
    scale = total / sum(sizes)
    return [max(1024, int(s * scale)) for s in sizes]


def make_message(rng: random.Random, text: bytes, n: int, user: str, size: int, when: int, with_id: bool) -> bytes:
    """A plain-text message, or multipart with a base64 attachment when large; about ``size`` bytes."""
    subject = rng.choice(("Budget", "Réunion du lundi", "日本 trip", "Re: invoice", "Quarterly report"))
    head = (f"From: {rng.choice(('alice', 'bob', 'chloé'))} <sender{n % 97}@example.com>\n"
            f"To: {user}@example.org\nSubject: {email.header.Header(subject, 'utf-8').encode()} #{n}\n"
            f"Date: {email.utils.formatdate(when)}\n"
            + (f"Message-ID: <{n}.{when}@bench.example>\n" if with_id else "") + "MIME-Version: 1.0\n")
    start = rng.randrange(0, len(text) - 100_000)
    start = text.index(b"\n", start) + 1
    if size < 20_000:
        body = text[start:start + max(0, size - len(head.encode()) - 80)]
        return (head + "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n").encode() + body
    attachment = base64.encodebytes(rng.randbytes(size * 3 // 4 - 2000))
    return (head + 'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain; charset=utf-8\n'
            'Content-Transfer-Encoding: 8bit\n\n').encode() + text[start:start + 1000] + (
        f'\n--b\nContent-Type: application/octet-stream; name="file{n}.bin"\nContent-Transfer-Encoding: base64\n\n'
    ).encode() + attachment + b"--b--\n"


def folder_dir(server: DovecotImap, user: str, folder: str) -> Path:
    path = server.maildir(user)
    return path if folder == "INBOX" else path / ("." + ".".join(utf7.encode(p) for p in folder.split("/")))


def generate(server: DovecotImap, users: list[User], count: int, total: int, seed: int) -> dict:
    """Write the corpus into the old server's Maildirs (flags, keywords, dates in the file names/mtimes)."""
    rng = random.Random(seed)
    text = "".join(" ".join(rng.choices(WORDS, k=12)) + "\n" for _ in range(40_000)).encode()
    sizes = message_sizes(rng, count, total)
    names, weights = list(FOLDERS), list(FOLDERS.values())
    stats = Counter()
    for u, user in enumerate(users):
        for folder in names:  # doveadm first: it makes the Maildir root, owned by the mail user
            if folder != "INBOX":
                server.create_folder(user.name, folder)
        for folder in names:
            (folder_dir(server, user.name, folder) / "cur").mkdir(parents=True, exist_ok=True)
            (folder_dir(server, user.name, folder) / "dovecot-keywords").write_text(
                "".join(f"{i} {k}\n" for i, k in enumerate(KEYWORDS)))
        for n in range(u, count, len(users)):
            folder = rng.choices(names, weights)[0]
            when = rng.randrange(1420070400, 1735603200)  # 2015-2024
            with_id = rng.random() > 0.15
            flags = [f for f, p in (("\\Seen", 0.75), ("\\Answered", 0.12), ("\\Flagged", 0.06)) if rng.random() < p]
            if folder == "Sent" and rng.random() < 0.05:
                flags.append("\\Draft")
            body = make_message(rng, text, n, user.name, sizes[n], when, with_id)
            unique = f"{when}.M{n}P{seed}.bench"
            server.write_message(user.name, folder, body, flags=flags, internaldate=when, unique=unique)
            if rng.random() < 0.08:  # a keyword: its Maildir letter after the system flags' letters
                cur = folder_dir(server, user.name, folder) / "cur"
                path = next(cur.glob(f"{unique}:2,*"))
                path.rename(path.with_name(path.name + "abc"[rng.randrange(3)]))
                stats["keywords"] += 1
            stats["messages"] += 1
            stats["bytes"] += len(body)
            stats["without_message_id"] += not with_id
            stats["over_1mb"] += len(body) > 1_000_000
        server.resync(user.name)
    return dict(stats, folders_per_user=len(names), largest=max(sizes))


# ---------------------------------------------------------------- running the tools


def run_parallel(commands: list[list[str]], work: Path, label: str) -> dict:
    """Run commands at once, each under GNU time: wall time, peak RSS and CPU per process, exit codes, outputs."""
    procs = []
    busy_before = machine_busy()
    started = time.perf_counter()
    try:
        for i, command in enumerate(commands):
            out, rss = work / f"{label}-{i}.out", work / f"{label}-{i}.rss"
            with open(out, "wb") as stdout:
                # A session of its own, so an interrupted run kills the tool along with GNU time.
                procs.append((subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", str(rss), *command],
                                               stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True),
                              out, rss))
        codes = [p.wait() for p, _, _ in procs]
    finally:
        for p, _, _ in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    wall = time.perf_counter() - started
    busy = [after - before for before, after in zip(busy_before, machine_busy())]
    usage = [rss.read_text().splitlines()[-1].split() for _, _, rss in procs]  # last line: "%M %U %S"
    return {"wall_s": wall, "peak_rss_kb": [int(u[0]) for u in usage], "cpu_s": sum(float(u[1]) + float(u[2]) for u in usage),
            "machine_cpu_s": busy[0], "machine_iowait_s": busy[1],
            "exit_codes": codes, "outputs": [o.read_text() for _, o, _ in procs]}


def machine_busy() -> tuple[float, float]:
    """Seconds of CPU the whole machine has spent working (user, system, interrupts: the tool and both servers),
    and waiting for the disk, since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / tick, iowait / tick


def write_accounts(users: list[User], path: Path) -> Path:
    path.write_text("source_user,source_password,target_user,target_password\n"
                    + "".join(f"{u.name},{u.password},{u.name},{u.password}\n" for u in users))
    return path


def mailstack_commands(users: list[User], work: Path, source: str, target: str, jobs: int,
                       program: list[str] = MAILSTACK, cafile: Path | None = None) -> list[list[str]]:
    accounts = write_accounts(users, work / "accounts.csv")
    scheme, port = ("imaps", 993) if cafile else ("imap", 143)
    return [[*program, "sync", "--source", f"{scheme}://{source}:{port}", "--target", f"{scheme}://{target}:{port}",
             *(["--cafile", str(cafile)] if cafile else []),
             "--accounts", str(accounts), "--jobs", str(jobs), "--state-dir", str(work / "state"), "--json"]]


def mbsync_commands(users: list[User], work: Path, source: str, target: str,
                    cafile: Path | None = None) -> list[list[str]]:
    """One mbsyncrc and one mbsync process per user (RECIPES: Far :old:, Near :new:, Pull, PipelineDepth 50); over
    TLS, the servers' own certificates are listed in CertificateFile (isync trusts a certificate found there)."""
    security = f"Port 993\nSSLType IMAPS\nCertificateFile {cafile}\n" if cafile else "Port 143\nSSLType None\n"
    commands = []
    for user in users:
        state = work / "mbsync-state" / user.name
        state.mkdir(parents=True, exist_ok=True)
        stores = "".join(f"IMAPAccount {side}\nHost {host}\n{security}User {user.name}\nPass {user.password}\n"
                         f"PipelineDepth 50\n\nIMAPStore {side}\nAccount {side}\n\n"
                         for side, host in (("old", source), ("new", target)))
        rc = work / f"mbsyncrc-{user.name}"
        rc.write_text(f"SyncState {state}/\n\n{stores}Channel {user.name}\nFar :old:\nNear :new:\nPatterns *\n"
                      "Sync Pull\nCreate Near\nCopyArrivalDate yes\n")
        commands.append(["mbsync", "-c", str(rc), "-q", user.name])
    return commands


def doveadm_commands(users: list[User], server: DovecotImap, source: str,
                     cafile: Path | None = None) -> list[list[str]]:
    """Server-side pull into the new Dovecot from imapc: (RECIPES' command line); over TLS, imapc checks the old
    server's certificate against the bundle."""
    security = (["-o", "imapc_port=993", "-o", "imapc_ssl=imaps", "-o", f"ssl_client_ca_file={cafile}"] if cafile
                else ["-o", "imapc_port=143"])
    return [["doveadm", "-c", str(server.conf), "-o", f"imapc_host={source}", *security,
             "-o", f"imapc_user={u.name}", "-o", f"imapc_password={u.password}",
             "-o", "imapc_features=rfc822.size fetch-headers", "backup", "-R", "-u", u.name, "imapc:"] for u in users]


def tool_commands(name: str, users: list[User], work: Path, old: DovecotImap, new: DovecotImap, jobs: int,
                  anchor: Path | None = None, tls: bool = False) -> list[list[str]]:
    """The command lines of one tool copying ``users`` from ``old`` to ``new``; with ``tls``, over imaps, each
    tool trusting the two servers' certificates (a bundle of them written beside ``new``'s)."""
    cafile = None
    if tls:  # in the new server's directory: doveadm's dsync reads it as the mail user
        cafile = new.root / f"servers-ca-{work.name}.pem"  # work: one directory per tool (and per user: large)
        cafile.write_text(old.cert.read_text() + new.cert.read_text())
        cafile.chmod(0o644)
    if name == "mailstack":
        return mailstack_commands(users, work, old.address, new.address, jobs, cafile=cafile)
    if name == "anchor":
        return mailstack_commands(users, work, old.address, new.address, jobs, mailstack_program(anchor), cafile)
    if name == "mbsync":
        return mbsync_commands(users, work, old.address, new.address, cafile)
    return doveadm_commands(users, new, old.address, cafile)


def export_anchor(revision: str, work: Path) -> Path:
    """This repository's ``mailstack`` package as of ``revision``, unpacked under ``work`` and compiled."""
    tree = work / "anchor-src"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(PROJECT), "archive", revision, "mailstack", "templates"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "mailstack")], check=True)
    return tree


def tools_of(args) -> list[str]:
    """The tools a scenario runs: --tools, with the anchor (--anchor) right after mailstack."""
    tools = args.tools.split(",")
    if args.anchor:
        tools.insert(tools.index("mailstack") + 1 if "mailstack" in tools else 0, "anchor")
    return tools


def anchor_line(report: dict) -> list[str]:
    """The table line that names the anchor revision, when there is one."""
    return [f"anchor: mailstack as of {report['anchor']}, run the same way"] if report.get("anchor") else []


def startup_seconds(work: Path) -> dict:
    """What a run costs before and after its servers, best of five each: the interpreter alone, the interpreter
    and asyncio's import, and a whole `mailstack sync` of one mailbox whose servers refuse at once (every module
    of a sync loaded, its options and roster read, its report printed, its exit)."""
    accounts = work / "startup-accounts.csv"
    accounts.write_text("source_user,source_password,target_user,target_password\nann,pw,ann,pw\n")
    runs = {"python": [sys.executable, "-P", "-c", "pass"],
            "python_asyncio": [sys.executable, "-P", "-c", "import asyncio"],
            "mailstack": [*MAILSTACK, "sync", "--source", "imap://127.0.0.1:1", "--target", "imap://127.0.0.1:1",
                          "--accounts", str(accounts), "--state-dir", str(work / "startup-state"), "--json"]}
    best = {}
    for name, command in runs.items():
        times = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run(command, capture_output=True)  # the sync exits 3: its one mailbox failed, as meant
            times.append(time.perf_counter() - t)
        best[name] = min(times)
    return best


# ---------------------------------------------------------------- fidelity


def fidelity(source: dict, target: dict) -> dict:
    """Per-message differences (digest, flags, date together), then which aspect differs, then folders."""
    missing = extra = 0
    aspects = Counter()
    folders_missing, folders_extra, subscriptions = [], [], 0
    refused = [f"{user}:{folder} ({words})" for user, snap in target.items() for folder, words in snap.refused.items()]
    for user, snap in source.items():
        theirs = target[user]
        folders_missing += [f"{user}:{f}" for f in snap.folders.keys() - theirs.folders.keys()]
        folders_extra += [f"{user}:{f}" for f in theirs.folders.keys() - snap.folders.keys()]
        subscriptions += snap.subscribed != theirs.subscribed
        for folder in (snap.folders.keys() | theirs.folders.keys()) - theirs.refused.keys():
            a, b = snap.folders.get(folder, Counter()), theirs.folders.get(folder, Counter())
            missing += sum((a - b).values())
            extra += sum((b - a).values())
            for index, aspect in enumerate(("bytes", "flags", "date")):
                aspects[aspect] += sum((_project(a, index) - _project(b, index)).values())
    identical = not (missing or extra or folders_missing or folders_extra or refused)
    parts = ["messages identical" if not (missing or extra) else
             f"{missing} messages missing or different, {extra} extra; differing: "
             + ", ".join(f"{k} {v}" for k, v in aspects.items() if v)]
    for what, names in (("folders missing", folders_missing), ("extra folders", folders_extra),
                        ("folders listed, then refused", refused)):
        if names:
            parts.append(f"{len(names)} {what} (e.g. {', '.join(names[:2])})")
    summary = "identical" if identical else "; ".join(parts)
    if subscriptions:
        summary += f"; subscriptions differ for {subscriptions} user(s)"
    return {"identical": identical, "summary": summary, "missing_or_different": missing, "extra": extra,
            "by_aspect": dict(aspects), "folders_missing": folders_missing, "folders_extra": folders_extra}


def _project(messages: Counter, index: int) -> Counter:
    """One aspect of (digest, flags, date) keys, counted."""
    out = Counter()
    for key, n in messages.items():
        out[key[index]] += n
    return out


# ---------------------------------------------------------------- main


NOOP_RUNS = 5  # the no-op is short and the machine shared: its figures are the median of this many runs


def bench_tool(name: str, commands: list[list[str]], work: Path, corpus: dict, check) -> dict:
    """Full copy, fidelity, no-op re-sync (NOOP_RUNS times, the median kept), fidelity again (a re-sync must neither
    lose nor duplicate)."""
    full = run_parallel(commands, work, f"{name}-full")
    after_full = check()
    noops = [run_parallel(commands, work, f"{name}-noop{n}") for n in range(NOOP_RUNS)]
    noop = sorted(noops, key=lambda run: run["wall_s"])[len(noops) // 2]
    after_noop = check()
    said = [line for run in (full, noop) for out in run["outputs"] for line in out.splitlines()
            if line.strip() and " Info: " not in line and name not in MAILSTACKS]
    return {"full_s": full["wall_s"], "msgs_per_s": corpus["messages"] / full["wall_s"],
            "mb_per_s": corpus["bytes"] / 1e6 / full["wall_s"], "processes": len(commands),
            "peak_rss_mb": sum(full["peak_rss_kb"]) / 1024, "peak_rss_mb_max_process": max(full["peak_rss_kb"]) / 1024,
            "cpu_s": full["cpu_s"], "noop_s": noop["wall_s"], "noop_cpu_s": noop["cpu_s"],
            "noop_machine_cpu_s": noop["machine_cpu_s"], "noop_runs_s": sorted(run["wall_s"] for run in noops),
            "machine_cpu_s": full["machine_cpu_s"], "machine_iowait_s": full["machine_iowait_s"],
            "exit_codes": {"full": full["exit_codes"], "noop": [c for run in noops for c in run["exit_codes"]]},
            "fidelity": after_full, "fidelity_after_noop": after_noop, "said": sorted(set(said))[:20],
            "_outputs": {"full": full["outputs"], "noop": noop["outputs"]}}


def snapshot_check(server: DovecotImap, users: list[User], source: dict):
    def check() -> dict:
        try:
            return fidelity(source, {u.name: server.snapshot(u.name) for u in users})
        except Exception as exc:  # a target a client cannot read is a finding, not a reason to stop
            return {"identical": False, "summary": f"snapshot of the target failed: {exc}"}
    return check


def wire(report: dict) -> str:
    """How the tools reached the servers in a run (--tls)."""
    return "over imaps (993), certificates checked" if report.get("tls") else "plaintext IMAP (143)"


def table(report: dict) -> str:
    c = report["corpus"]
    lines = [f"corpus: {report['users']} users, {c['messages']} messages, {c['bytes'] / 1e6:.0f} MB, "
             f"{c['folders_per_user']} folders/user, {c['without_message_id']} without Message-ID, "
             f"{c['keywords']} with a keyword, {c['over_1mb']} over 1 MB (largest {c['largest'] / 1e6:.1f} MB); "
             f"generated in {report['generate_s']:.1f} s; {wire(report)}",
             f"{'tool':<10} {'full copy':>10} {'msgs/s':>8} {'MB/s':>7} {'CPU':>7} {'peak RSS':>16} {'no-op':>8}  fidelity"]
    for name, r in report["tools"].items():
        rss = f"{r['peak_rss_mb']:.0f} MB" + (f" ({r['processes']} procs)" if r["processes"] > 1 else "")
        lines.append(f"{name:<10} {r['full_s']:>8.1f} s {r['msgs_per_s']:>8.0f} {r['mb_per_s']:>7.1f} "
                     f"{r['cpu_s']:>5.1f} s {rss:>16} "
                     f"{r['noop_s']:>6.2f} s  {r['fidelity']['summary']}")
        lines.append(f"  {name} full copy: the machine worked {r['machine_cpu_s']:.1f} s of CPU (the tool "
                     f"{r['cpu_s']:.1f} s, so the servers and the kernel about {r['machine_cpu_s'] - r['cpu_s']:.1f} s) "
                     f"and waited {r['machine_iowait_s']:.1f} s for the disk, on {os.cpu_count()} cores: the copy "
                     f"cannot take less than {r['machine_cpu_s'] / os.cpu_count():.1f} s here, all of it spread on them")
        runs = r["noop_runs_s"]
        lines.append(f"  {name} no-op (median of {len(runs)}, {runs[0]:.2f} to {runs[-1]:.2f} s): the tool "
                     f"{r['noop_cpu_s']:.2f} s of CPU, the machine {r['noop_machine_cpu_s']:.2f} s (so the servers and "
                     f"the kernel about {max(0.0, r['noop_machine_cpu_s'] - r['noop_cpu_s']):.2f} s)")
        if r["fidelity_after_noop"]["summary"] != r["fidelity"]["summary"]:
            lines.append(f"  {name} after the no-op re-sync: {r['fidelity_after_noop']['summary']}")
        if any(r["exit_codes"]["full"] + r["exit_codes"]["noop"]):
            lines.append(f"  {name} exit codes: {r['exit_codes']}")
        for line in r["said"]:
            lines.append(f"  {name} said: {line}")
    m = report["tools"].get("mailstack")
    if m:
        start = report["mailstack_startup_s"]
        lines.append(f"mailstack via {report['mailstack_via']}")
        lines.append(f"start-up and exit of a sync whose servers refuse at once: {start['mailstack']:.2f} s (the "
                     f"interpreter alone {start['python']:.3f} s, with asyncio imported {start['python_asyncio']:.3f} s; "
                     f"best of 5 each)")
        lines += anchor_line(report)
        for run, totals in m.get("reports", {}).items():
            lines.append(f"mailstack {run} run reported: {totals}")
        lines += targets(m, report["tools"].get("mbsync"), report["tools"].get("anchor"), report.get("anchor"))
    return "\n".join(lines)


def targets(m: dict, mbsync: dict | None, anchor: dict | None = None, revision: str | None = None) -> list[str]:
    """The issue's targets for the 10,000-message corpus, each with the figure and PASS or FAIL; with an anchor
    run, its CPU halved is the CPU target measured on this machine."""
    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"
    lines = [f"target CPU <= 1.1 s: {verdict(m['cpu_s'] <= 1.1)} ({m['cpu_s']:.2f} s); "
             f"target peak RSS < 100 MB: {verdict(m['peak_rss_mb'] < 100)} ({m['peak_rss_mb']:.0f} MB)"]
    if mbsync:
        ratio = m["full_s"] / mbsync["full_s"]
        lines.append(f"target full copy <= 0.4 x mbsync: {verdict(ratio <= 0.4)} ({m['full_s']:.2f} s = "
                     f"{ratio:.2f} x {mbsync['full_s']:.2f} s); target no-op <= mbsync's: "
                     f"{verdict(m['noop_s'] <= mbsync['noop_s'])} ({m['noop_s']:.2f} s vs {mbsync['noop_s']:.2f} s)")
    if anchor:
        lines.append(f"target CPU <= half of the anchor's ({revision}, same run): "
                     f"{verdict(m['cpu_s'] <= anchor['cpu_s'] / 2)} ({m['cpu_s']:.2f} s vs {anchor['cpu_s']:.2f} s); "
                     f"full copy {m['full_s'] / anchor['full_s']:.2f} x, no-op {m['noop_s'] / anchor['noop_s']:.2f} x "
                     "the anchor's")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--messages", type=int, default=10_000, help="in total, over all users")
    parser.add_argument("--megabytes", type=float, default=327, help="corpus size in total")
    parser.add_argument("--jobs", type=int, default=5, help="mailboxes at once (mailstack --jobs)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--small", action="store_true", help="quick run: 500 messages, 16 MB")
    parser.add_argument("--tools", default="mailstack,mbsync,doveadm")
    parser.add_argument("--anchor", metavar="REV", help="also run mailstack as of this git revision (its own target "
                                                         "server, 127.0.6.5): the code a target is relative to")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--tls", action="store_true", help="every tool over imaps (993), trusting the servers' "
                        "certificates, as a real migration runs; default plaintext IMAP (143)")
    parser.add_argument("--scenario", choices=("tools", "shards", "large", "many"), default="tools",
                        help="tools: mailstack vs mbsync vs doveadm; shards: two shards of one migration, one "
                             "after the other, must copy exactly the corpus; large: one mailbox of 10k, 50k, 100k "
                             "small messages; many: 2,000 mailboxes of 20 messages, --jobs 20")
    parser.add_argument("--sizes", default="10000,50000,100000", help="large: the mailbox sizes synced")
    parser.add_argument("--message-size", type=int, default=2000, help="large: bytes per message")
    parser.add_argument("--mailboxes", type=int, default=2000, help="many: how many mailboxes")
    parser.add_argument("--per-mailbox", type=int, default=20, help="many: messages in each")
    args = parser.parse_args()
    if args.small:
        args.messages, args.megabytes = 500, 16
        args.sizes, args.mailboxes = "1000,5000,10000", 100
    signal.signal(signal.SIGTERM, _interrupted)
    anchor_work = tempfile.TemporaryDirectory(prefix="mailstack-bench-anchor-") if args.anchor else None
    args.anchor_tree = export_anchor(args.anchor, Path(anchor_work.name)) if anchor_work else None
    # Bytecode as an installed mailstack has it (pip compiles on install): a source changed since its last
    # compile, with PYTHONDONTWRITEBYTECODE set, would otherwise be compiled again by every run measured.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(PROJECT / "mailstack")], check=True)
    users = [User(f"user{i}", f"pw-{i}-secret") for i in range(1, args.users + 1)]
    if args.scenario == "shards":
        result = shards_scenario(args, users)
        print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else shards_table(result))
        return 0 if shards_exact(result["per_mailbox"], result["fidelity"]) else 1
    if args.scenario in ("large", "many"):
        if args.scenario == "many" and args.jobs == 5 and "--jobs" not in sys.argv:
            args.jobs = 20
        result = large_scenario(args) if args.scenario == "large" else many_scenario(args)
        print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else
              (large_table if args.scenario == "large" else many_table)(result))
        return 0
    tools = tools_of(args)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True))
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailstack-syncbench-")))
        old = stack.enter_context(DovecotImap(OLD, users))
        started = time.perf_counter()
        corpus = generate(old, users, args.messages, int(args.megabytes * 1e6), args.seed)
        report = {"users": args.users, "jobs": args.jobs, "corpus": corpus, "generate_s": time.perf_counter() - started,
                  "tls": args.tls,
                  "tools": {}}
        say(f"corpus: {corpus['messages']} messages, {corpus['bytes'] / 1e6:.0f} MB in {report['generate_s']:.1f} s")
        source = {u.name: old.snapshot(u.name) for u in users}
        report["mailstack_via"] = f"{' '.join(MAILSTACK[2:])} (this checkout: {PROJECT})"
        report["mailstack_startup_s"] = startup_seconds(work)
        report["anchor"] = args.anchor
        for name in tools:
            say(f"{name}: starting its target server and syncing")
            new = stack.enter_context(DovecotImap(NEW[name], users))
            tool_work = work / name
            tool_work.mkdir()
            commands = tool_commands(name, users, tool_work, old, new, args.jobs, args.anchor_tree, args.tls)
            result = bench_tool(name, commands, tool_work, corpus, snapshot_check(new, users, source))
            outputs = result.pop("_outputs")
            if name in MAILSTACKS:
                result["reports"] = {run: _mailstack_totals(outputs[run][0]) for run in ("full", "noop")}
            report["tools"][name] = result
            say(f"{name}: {result['full_s']:.1f} s, no-op {result['noop_s']:.2f} s, {result['fidelity']['summary']}")
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else table(report))
    return 0


# ---------------------------------------------------------------- scenario: two shards


SHARDS_OLD, SHARDS_NEW = "127.0.43.21", "127.0.43.22"


def shards_scenario(args, users: list[User]) -> dict:
    """Two shards of one migration (``mailstack sync --shard 1/2``, then ``2/2``) against one target.

    Together they must copy exactly the corpus: per mailbox, the target holds
    as many messages as the source, each once (the fidelity check counts
    copies), and each mailbox was synced by one shard only.
    """
    say = (lambda *a: print(*a, file=sys.stderr, flush=True))
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailstack-shardbench-")))
        old = stack.enter_context(DovecotImap(SHARDS_OLD, users))
        started = time.perf_counter()
        corpus = generate(old, users, args.messages, int(args.megabytes * 1e6), args.seed)
        say(f"corpus: {corpus['messages']} messages, {corpus['bytes'] / 1e6:.0f} MB in "
            f"{time.perf_counter() - started:.1f} s")
        source = {u.name: old.snapshot(u.name) for u in users}
        new = stack.enter_context(DovecotImap(SHARDS_NEW, users))
        accounts = work / "accounts.csv"
        accounts.write_text("source_user,source_password,target_user,target_password\n"
                            + "".join(f"{u.name},{u.password},{u.name},{u.password}\n" for u in users))
        runs = {}
        for shard in ("1/2", "2/2"):
            say(f"shard {shard}: syncing")
            # This tree's code, whatever mailstack the venv has installed.
            command = [*MAILSTACK, "sync",
                       "--source", f"imap://{SHARDS_OLD}:143", "--target", f"imap://{SHARDS_NEW}:143",
                       "--accounts", str(accounts), "--jobs", str(args.jobs), "--state-dir", str(work / "state"),
                       "--shard", shard, "--json"]
            run = run_parallel([command], work, f"shard-{shard.replace('/', '-of-')}")
            output = run["outputs"][0]
            try:
                report = json.loads(output[output.index("{"):])
            except ValueError:
                report = {"shard": None, "mailboxes": [], "unparsed_output": output[-2000:]}
            runs[shard] = {"wall_s": run["wall_s"], "peak_rss_mb": run["peak_rss_kb"][0] / 1024,
                           "exit_code": run["exit_codes"][0], "report": report}
        target = {u.name: new.snapshot(u.name) for u in users}
    return {"corpus": corpus, "runs": runs, "per_mailbox": shard_figures(users, source, target, runs),
            "fidelity": fidelity(source, target)}


def shard_figures(users: list[User], source: dict, target: dict, runs: dict) -> list[dict]:
    """Per mailbox: the shards that synced it, what they copied, and the messages on each side."""
    rows = []
    for user in users:
        synced_by = {shard: m["copied"] for shard, run in runs.items() for m in run["report"].get("mailboxes", [])
                     if m["source_user"] == user.name}
        rows.append({"mailbox": user.name, "shards": sorted(synced_by), "copied": sum(synced_by.values()),
                     "source": source[user.name].message_count(), "target": target[user.name].message_count()})
    return rows


def shards_exact(rows: list[dict], fidelity_found: dict) -> bool:
    """Each mailbox synced by one shard, which copied what the source holds, and the target holds just that."""
    return fidelity_found["identical"] and all(
        len(r["shards"]) == 1 and r["source"] == r["target"] == r["copied"] for r in rows)


def shards_table(result: dict) -> str:
    c = result["corpus"]
    lines = [f"corpus: {c['messages']} messages, {c['bytes'] / 1e6:.0f} MB, {len(result['per_mailbox'])} mailboxes"]
    for shard, run in result["runs"].items():
        covered = run["report"].get("shard") or {}
        lines.append(f"shard {shard}: {run['wall_s']:.1f} s, peak RSS {run['peak_rss_mb']:.0f} MB, exit "
                     f"{run['exit_code']}, {covered.get('accounts', '?')} account(s) in the shard, "
                     f"{covered.get('skipped_other_shards', '?')} left to the other")
    lines.append(f"{'mailbox':<10} {'shard':>6} {'copied':>7} {'source':>7} {'target':>7}")
    for row in result["per_mailbox"]:
        lines.append(f"{row['mailbox']:<10} {','.join(row['shards']) or '-':>6} {row['copied']:>7} "
                     f"{row['source']:>7} {row['target']:>7}")
    rows = result["per_mailbox"]
    once = all(len(r["shards"]) == 1 for r in rows)
    exact = shards_exact(rows, result["fidelity"])
    lines.append(f"every mailbox in exactly one shard: {'PASS' if once else 'FAIL'}; together the shards copied "
                 f"exactly the corpus, nothing twice: {'PASS' if exact else 'FAIL'} "
                 f"({sum(r['copied'] for r in rows)} copied, {sum(r['source'] for r in rows)} on the source, "
                 f"{sum(r['target'] for r in rows)} on the target; fidelity: {result['fidelity']['summary']})")
    return "\n".join(lines)


# ---------------------------------------------------------------- scenario: one large mailbox


LARGE_OLD = "127.0.42.1"
LARGE_NEW = {"mailstack": "127.0.42.2", "mbsync": "127.0.42.3", "doveadm": "127.0.42.4", "anchor": "127.0.42.5"}


def generate_flat(server: DovecotImap, mailboxes: list[tuple[User, int]], size: int, seed: int, *,
                  resync: bool = True) -> dict:
    """Each mailbox's INBOX filled with its count of small plain-text messages of about ``size`` bytes (Maildir
    files written directly; three in four \\Seen, one in twenty \\Flagged)."""
    rng = random.Random(seed)
    text = "".join(" ".join(rng.choices(WORDS, k=12)) + "\n" for _ in range(20_000)).encode()
    stats = Counter()
    for user, count in mailboxes:
        (server.maildir(user.name) / "cur").mkdir(parents=True, exist_ok=True)
        for n in range(count):
            when = 1420070400 + n * 600
            head = (f"From: sender{n % 97}@example.com\nTo: {user.name}@example.org\nSubject: note {n}\n"
                    f"Date: {email.utils.formatdate(when)}\nMessage-ID: <{n}.{user.name}@bench.example>\n\n").encode()
            start = rng.randrange(0, len(text) - size)
            body = head + text[start:start + max(0, size - len(head))]
            flags = [f for f, p in (("\\Seen", 0.75), ("\\Flagged", 0.05)) if rng.random() < p]
            server.write_message(user.name, "INBOX", body, flags=flags, internaldate=when, unique=f"{when}.M{n}.bench")
            stats["messages"] += 1
            stats["bytes"] += len(body)
        if resync:
            server.resync(user.name)
    if not resync:  # a Maildir without an index yet is read as it is on first access: only its owner matters
        vmail = pwd.getpwnam("vmail")
        for directory, _, files in os.walk(server.root / "mail"):
            os.chown(directory, vmail.pw_uid, vmail.pw_gid)
            for name in files:
                os.chown(os.path.join(directory, name), vmail.pw_uid, vmail.pw_gid)
    return dict(stats)


def warm(server: DovecotImap, users: list[User]) -> None:
    """Every message's size and date asked once, so Dovecot has indexed the files written by hand (as a server
    in service has) and the tool that runs first does not pay for it."""
    for user in users:
        client = server.client(user.name)
        try:
            client.select("INBOX", readonly=True)
            client.uid("FETCH", "1:*", "(RFC822.SIZE INTERNALDATE)")
        finally:
            client.logout()


def large_scenario(args) -> dict:
    """One mailbox of small messages in one folder, synced by each tool at each size (10k, 50k, 100k by default),
    one size after another (--jobs 1); then a no-op re-sync of the largest. Time per 10,000 messages must stay flat."""
    say = (lambda *a: print(*a, file=sys.stderr, flush=True))
    sizes = [int(n) for n in args.sizes.split(",")]
    users = [User(f"big{n}", f"pw-big-{n}") for n in sizes]
    report = {"sizes": sizes, "message_size": args.message_size, "anchor": args.anchor, "tls": args.tls, "tools": {}}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailstack-largebench-")))
        old = stack.enter_context(DovecotImap(LARGE_OLD, users))
        started = time.perf_counter()
        report["corpus"] = generate_flat(old, list(zip(users, sizes)), args.message_size, args.seed)
        warm(old, users)
        report["generate_s"] = time.perf_counter() - started
        say(f"corpus: {report['corpus']['messages']} messages in {report['generate_s']:.1f} s")
        largest = users[-1]
        source = {largest.name: old.snapshot(largest.name)}
        for name in tools_of(args):
            with DovecotImap(LARGE_NEW[name], users) as new:
                runs, commands = {}, {}
                for user, count in zip(users, sizes):
                    user_work = work / name / user.name
                    user_work.mkdir(parents=True)
                    commands[count] = tool_commands(name, [user], user_work, old, new, 1, args.anchor_tree, args.tls)
                    say(f"{name}: {count} messages")
                    run = run_parallel(commands[count], user_work, "full")
                    runs[count] = {"wall_s": run["wall_s"], "per_10k_s": run["wall_s"] / (count / 10_000),
                                   "peak_rss_mb": max(run["peak_rss_kb"]) / 1024, "cpu_s": run["cpu_s"],
                                   "exit_codes": run["exit_codes"]}
                noop = run_parallel(commands[sizes[-1]], work / name / largest.name, "noop")
                report["tools"][name] = {
                    "runs": runs, "noop_s": noop["wall_s"], "noop_cpu_s": noop["cpu_s"],
                    "noop_exit_codes": noop["exit_codes"],
                    "fidelity": fidelity(source, {largest.name: new.snapshot(largest.name)})}
                say(f"{name}: {runs[sizes[-1]]['wall_s']:.1f} s for {sizes[-1]}, no-op {noop['wall_s']:.2f} s")
    return report


def large_table(report: dict) -> str:
    sizes = report["sizes"]
    lines = [f"one mailbox, one folder, messages of about {report['message_size']} bytes; corpus "
             f"{report['corpus']['messages']} messages generated in {report['generate_s']:.0f} s; --jobs 1; "
             f"{wire(report)}",
             f"{'tool':<10} " + " ".join(f"{f'{n} msgs':>12} {'per 10k':>8}" for n in sizes)
             + f" {'peak RSS':>9} {'CPU':>7} {'no-op':>7}  fidelity ({sizes[-1]})"]
    for name, r in report["tools"].items():
        big = r["runs"][sizes[-1]]
        lines.append(f"{name:<10} " + " ".join(f"{r['runs'][n]['wall_s']:>10.1f} s {r['runs'][n]['per_10k_s']:>6.2f} s"
                                                for n in sizes)
                     + f" {big['peak_rss_mb']:>6.0f} MB {big['cpu_s']:>5.1f} s {r['noop_s']:>5.2f} s  "
                       f"{r['fidelity']['summary']}")
        codes = [c for n in sizes for c in r["runs"][n]["exit_codes"]] + r["noop_exit_codes"]
        if any(codes):
            lines.append(f"  {name} exit codes: {codes}")
    lines += anchor_line(report)
    m = report["tools"].get("mailstack")
    if m:
        per = [m["runs"][n]["per_10k_s"] for n in sizes]
        big = m["runs"][sizes[-1]]
        lines.append(f"target peak RSS < 100 MB at {sizes[-1]}: {'PASS' if big['peak_rss_mb'] < 100 else 'FAIL'} "
                     f"({big['peak_rss_mb']:.0f} MB); time per 10k flat (largest within 15% of smallest): "
                     f"{'PASS' if max(per) <= 1.15 * per[0] else 'FAIL'} ({', '.join(f'{p:.2f}' for p in per)} s)")
    return "\n".join(lines)


# ---------------------------------------------------------------- scenario: many small mailboxes


MANY_OLD = "127.0.42.11"
MANY_NEW = {"mailstack": "127.0.42.12", "mbsync": "127.0.42.13", "doveadm": "127.0.42.14", "anchor": "127.0.42.15"}


def run_pool(commands: list[list[str]], width: int, work: Path, label: str) -> dict:
    """Run commands ``width`` at a time, each under GNU time: wall time, peak RSS per process, CPU, exit codes."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> tuple[int, list[str], str]:
        rss = work / f"{label}-{i}.rss"
        done = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", str(rss), *commands[i]],
                              capture_output=True, text=True)
        return done.returncode, rss.read_text().splitlines()[-1].split(), done.stdout[-300:] + done.stderr[-300:]

    started = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        done = list(pool.map(one, range(len(commands))))
    return {"wall_s": time.perf_counter() - started, "peak_rss_kb": [int(u[0]) for _, u, _ in done],
            "cpu_s": sum(float(u[1]) + float(u[2]) for _, u, _ in done), "exit_codes": [c for c, _, _ in done],
            "outputs": [o for c, _, o in done if c]}


def many_scenario(args) -> dict:
    """Many mailboxes of a few messages (2,000 x 20 by default), 20 at a time: what each mailbox costs."""
    say = (lambda *a: print(*a, file=sys.stderr, flush=True))
    users = [User(f"m{i:05d}", f"pw-m{i}") for i in range(args.mailboxes)]
    report = {"mailboxes": args.mailboxes, "per_mailbox": args.per_mailbox, "jobs": args.jobs, "anchor": args.anchor,
              "tls": args.tls,
              "tools": {}}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mailstack-manybench-")))
        old = stack.enter_context(DovecotImap(MANY_OLD, users))
        started = time.perf_counter()
        report["corpus"] = generate_flat(old, [(u, args.per_mailbox) for u in users], 2000, args.seed, resync=False)
        report["generate_s"] = time.perf_counter() - started
        source = {u.name: old.snapshot(u.name) for u in users}
        say(f"corpus: {sum(s.message_count() for s in source.values())} messages seen over IMAP in "
            f"{args.mailboxes} mailboxes; {time.perf_counter() - started:.1f} s")
        for name in tools_of(args):
            with DovecotImap(MANY_NEW[name], users) as new:
                tool_work = work / name
                tool_work.mkdir()
                say(f"{name}: syncing {args.mailboxes} mailboxes, {args.jobs} at a time")
                commands = tool_commands(name, users, tool_work, old, new, args.jobs, args.anchor_tree, args.tls)
                width = 1 if name in MAILSTACKS else args.jobs  # mailstack runs --jobs at once itself
                full = run_pool(commands, width, tool_work, "full")
                noop = run_pool(commands, width, tool_work, "noop")
                report["tools"][name] = {
                    "full_s": full["wall_s"], "cpu_s": full["cpu_s"], "processes": len(commands),
                    "peak_rss_mb": max(full["peak_rss_kb"]) / 1024, "noop_s": noop["wall_s"],
                    "noop_cpu_s": noop["cpu_s"], "failed": sum(1 for c in full["exit_codes"] + noop["exit_codes"] if c),
                    "said": (full["outputs"] + noop["outputs"])[:3],
                    "fidelity": fidelity(source, {u.name: new.snapshot(u.name) for u in users})}
                say(f"{name}: {full['wall_s']:.1f} s, no-op {noop['wall_s']:.1f} s")
    return report


def many_table(report: dict) -> str:
    n = report["mailboxes"]
    lines = [f"{n} mailboxes of {report['per_mailbox']} messages (about 2 KB), {report['jobs']} at a time "
             f"(mailstack --jobs {report['jobs']}; mbsync and doveadm {report['jobs']} processes at once); "
             f"{wire(report)}",
             f"{'tool':<10} {'full copy':>10} {'per mailbox':>12} {'CPU':>8} {'CPU/mailbox':>12} "
             f"{'peak RSS':>22} {'no-op':>8} {'per mailbox':>12}  fidelity"]
    for name, r in report["tools"].items():
        rss = f"{r['peak_rss_mb']:.0f} MB" + (" (largest process)" if r["processes"] > 1 else "")
        lines.append(f"{name:<10} {r['full_s']:>8.1f} s {r['full_s'] / n * 1000:>9.1f} ms {r['cpu_s']:>6.1f} s "
                     f"{r['cpu_s'] / n * 1000:>9.1f} ms {rss:>22} {r['noop_s']:>6.1f} s "
                     f"{r['noop_s'] / n * 1000:>9.1f} ms  {r['fidelity']['summary']}")
        if r["failed"]:
            lines.append(f"  {name}: {r['failed']} run(s) failed, e.g. {r['said'][:1]}")
    lines += anchor_line(report)
    return "\n".join(lines)


def _interrupted(*_) -> None:
    """SIGTERM unwinds like Ctrl-C, so every server is stopped and every temp dir removed."""
    raise KeyboardInterrupt


def _mailstack_totals(output: str) -> dict:
    """Copied, skipped, flag updates and errors from mailstack's JSON report (what the engine says it did)."""
    try:
        mailboxes = json.loads(output[output.index("{"):])["mailboxes"]
    except (ValueError, KeyError):
        return {"unparsed_output": output[-2000:]}
    return {key: sum(m[key] for m in mailboxes) for key in ("copied", "bytes", "skipped", "flag_updates")} | {
        "errors": [e for m in mailboxes for e in m["errors"]]}


if __name__ == "__main__":
    sys.exit(main())
