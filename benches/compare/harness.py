"""Processes on loopback: start, wait for readiness, read their CPU time and memory from /proc,
stop them. Everything the comparison starts goes through `Procs`, which stops it all on exit.

Only 127.0.0.1 is ever bound or connected to.
"""

import os
import re
import signal
import socket
import subprocess
import time

LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class HarnessError(Exception):
    """A process would not start or answer; the run cannot go on."""


def free_port():
    """An ephemeral port free on 127.0.0.1 right now (closed again: a small race, retried by the
    caller's readiness check)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=15.0):
    """Waits until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise HarnessError(f"nothing listens on {LOOPBACK}:{port} after {timeout}s")


def children(pid):
    """Direct children of `pid` (nginx's workers under its master)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def user_system_seconds(pids):
    """(utime, stime) of the processes (all their threads), in seconds, from /proc/PID/stat.
    The kernel splits the two by tick sampling, so the split is statistical."""
    utime = stime = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state is field 3, utime field 14 and stime field 15 of stat(5).
        utime += int(fields[11])
        stime += int(fields[12])
    return utime / CLK_TCK, stime / CLK_TCK


def cpu_seconds(pids):
    """utime + stime of the processes (all their threads), in seconds, from /proc/PID/stat."""
    return sum(user_system_seconds(pids))


def context_switches(pids):
    """voluntary + nonvoluntary context switches summed over every thread of the processes
    (/proc/PID/status counts only the main thread, hence /proc/PID/task/*/status). A thread
    that ends between listing and reading is skipped; one that ended earlier is not counted."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches:",
                                            "nonvoluntary_ctxt_switches:")):
                            total += int(line.split()[1])
            except OSError:
                continue
    return total


def rss_bytes(pids):
    """Resident set size summed over the processes (VmRSS of /proc/PID/status)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


class Server:
    """One started server: its process, the port it serves on and how to find all its pids."""

    def __init__(self, name, proc, port, with_children=False):
        self.name = name
        self.proc = proc
        self.port = port
        self.with_children = with_children

    def pids(self):
        """The process and, for master/worker servers (nginx), its workers."""
        pids = [self.proc.pid]
        if self.with_children:
            pids += children(self.proc.pid)
        return pids

    def cpu(self):
        return cpu_seconds(self.pids())

    def sample(self):
        """CPU time split into user and system, and context switches, of all its processes at
        one moment: the snapshot taken at each end of a measured window."""
        pids = self.pids()
        utime, stime = user_system_seconds(pids)
        return {"utime": utime, "stime": stime, "ctxsw": context_switches(pids)}

    def rss(self):
        return rss_bytes(self.pids())

    def alive(self):
        return self.proc.poll() is None


class Procs:
    """Owns every process the comparison starts; `stop_all` ends each one by its id."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.running = []

    def spawn(self, name, argv, pin=None):
        """Starts `argv` in its own process group, output to LOGDIR/NAME.log."""
        if pin:
            argv = ["taskset", "-c", pin] + argv
        log = open(os.path.join(self.logdir, f"{name}.log"), "ab")
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.running.append(proc)
        return proc

    def start_listening(self, name, argv, port, pin=None, with_children=False):
        """Starts a server that listens on a port we chose, and waits until it accepts."""
        proc = self.spawn(name, argv, pin)
        try:
            wait_port(port, proc)
        except HarnessError:
            self.stop(proc)
            raise
        return Server(name, proc, port, with_children)

    def start_hermod(self, name, argv, pin=None):
        """Starts a hermod-proxy on `--listen 127.0.0.1:0` and reads its port from its log line."""
        proc = self.spawn(name, argv, pin)
        path = os.path.join(self.logdir, f"{name}.log")
        deadline = time.monotonic() + 20
        pattern = re.compile(rb"client=127\.0\.0\.1:(\d+)")
        while time.monotonic() < deadline:
            with open(path, "rb") as f:
                found = pattern.findall(f.read())
            if found:
                port = int(found[-1])
                wait_port(port, proc)
                return Server(name, proc, port)
            if proc.poll() is not None:
                raise HarnessError(f"{name} exited with {proc.returncode}; see {path}")
            time.sleep(0.05)
        self.stop(proc)
        raise HarnessError(f"{name} printed no listening address; see {path}")

    def stop(self, proc, grace=5.0):
        """SIGTERM to the process, then SIGKILL to its process group after `grace`."""
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            # The group is the one `spawn` created for this process (start_new_session).
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.running:
            self.running.remove(proc)

    def stop_server(self, server):
        self.stop(server.proc)

    def stop_all(self):
        for proc in list(reversed(self.running)):
            self.stop(proc, grace=3.0)
