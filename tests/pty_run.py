#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal (100x30), as a person's shell would,
and writes everything it printed, escape codes and all, to OUT.
Usage: pty_run.py OUT COMMAND [ARG...]; exits with the command's status."""
import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

out_path, command = sys.argv[1], sys.argv[2:]
master, slave = pty.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
child = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
os.close(slave)
data = b""
while True:
    try:
        chunk = os.read(master, 65536)
    except OSError:  # the child closed the terminal
        break
    if not chunk:
        break
    data += chunk
code = child.wait()
open(out_path, "wb").write(data)
sys.exit(code)
