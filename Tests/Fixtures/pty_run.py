#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal, as a person at a terminal would, and records what it shows.

    pty_run.py TRANSCRIPT [--interrupt-after TEXT] [--timeout S] -- COMMAND [ARGS...]

The command gets a new session whose controlling terminal is the pty (stdin, stdout and stderr are
all the terminal), so it is the terminal's foreground job, exactly as in an interactive shell.
Everything it writes goes to TRANSCRIPT (bytes as written, terminal control sequences included).
With --interrupt-after, the first time TEXT appears in the output a Ctrl-C (0x03) is typed: the
terminal's line discipline then sends SIGINT to its foreground process group, as a keyboard does.
Exits with the command's exit code (128 + N when a signal N killed it); 124 on timeout.
"""
import argparse
import os
import pty
import select
import signal
import sys
import time


def main():
    # Our options before "--", the command after it (argparse's REMAINDER would swallow options).
    if "--" not in sys.argv:
        sys.exit("usage: pty_run.py TRANSCRIPT [--interrupt-after TEXT] [--timeout S] -- COMMAND [ARGS...]")
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("transcript")
    parser.add_argument("--interrupt-after")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(sys.argv[1:split])
    command = sys.argv[split + 1:]

    pid, master = pty.fork()
    if pid == 0:
        # A terminal emulator always says what it is; restic draws no status line without TERM.
        os.environ.setdefault("TERM", "xterm")
        os.execvp(command[0], command)
    output = bytearray()
    interrupted = args.interrupt_after is None
    deadline = time.monotonic() + args.timeout
    status = None
    closed = False
    while True:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            open(args.transcript, "wb").write(bytes(output))
            sys.exit(124)
        chunk = b""
        if not closed:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every process holding the terminal is gone
                    chunk = b""
                closed = not chunk
        else:
            time.sleep(0.05)
        if chunk:
            output += chunk
            if not interrupted and args.interrupt_after.encode() in output:
                interrupted = True
                time.sleep(0.5)
                os.write(master, b"\x03")
            continue
        if status is None:
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
        if status is not None and (closed or not ready):
            break
    open(args.transcript, "wb").write(bytes(output))
    if os.WIFSIGNALED(status):
        sys.exit(128 + os.WTERMSIG(status))
    sys.exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
