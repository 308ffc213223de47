"""A stand-in for "qemu + a booted guest" in host agent tests: a paramiko ssh server.

Usage: python fake_sshd.py PORT IID PUBKEY_FILE MODE
  ok:      after a short delay, serve ssh; the IID markers say boot done
  failed:  like ok, but /run/lima-boot-failed is there instead of boot-done
  exit:    print to stderr and exit 3 at once (qemu dying early)
  silent:  accept TCP connections and never answer (no sshd in the guest)
The only commands served are `cat PATH` on the marker files, lima.drivers.markers's
marker_command on them, its markers_command and looker_command, and its boot_wait_command
(answered at once from the markers).
"""

from __future__ import annotations

import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import paramiko


def main() -> None:
    port, iid, pubkey_file, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    if mode == "exit":
        print("qemu-system-x86_64: fake failure", file=sys.stderr)
        sys.exit(3)
    files = {"/run/lima-ssh-ready": iid}
    if mode == "failed":
        files["/run/lima-boot-failed"] = f"{iid}\nprovision.system/00: exit 1"
    else:
        files["/run/lima-boot-done"] = iid
    authorized = Path(pubkey_file).read_text().split()[1]
    host_key = paramiko.ECDSAKey.generate()
    time.sleep(0.5)  # the guest boots: the port is not served yet
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(16)
    while True:
        conn, _ = listener.accept()
        if mode == "silent":
            continue
        threading.Thread(target=serve, args=(conn, host_key, authorized, files),
                         daemon=True).start()


class Server(paramiko.ServerInterface):
    def __init__(self, authorized: str, files: dict[str, str]) -> None:
        self.authorized = authorized
        self.files = files

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if key.get_base64() == self.authorized:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED_OPEN_REQUEST

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=self.answer, args=(channel, command.decode()),
                         daemon=True).start()
        return True

    def markers(self) -> dict[str, str | None]:
        """boot.sh's markers as the guest has them now (None: missing)."""
        return {k: self.files.get(f"/run/lima-{k}")
                for k in ("ssh-ready", "boot-done", "boot-failed")}

    def answer(self, channel: paramiko.Channel, command: str) -> None:
        time.sleep(0.02)  # let the exec reply go out first
        if command.startswith(": lima-boot-wait;"):  # lima.drivers.markers.boot_wait_command
            done = self.files.get("/run/lima-boot-done")
            failed = self.files.get("/run/lima-boot-failed")
            if done is not None:
                channel.sendall(b"done\n")
            elif failed is not None:
                channel.sendall(f"failed\n{failed}\n".encode())
            channel.send_exit_status(0 if done is not None or failed is not None else 1)
            channel.close()
            return
        if command.startswith("r=; d=; f=;"):  # lima.drivers.markers.markers_command
            # looker_command: the markers again for each line read, until stdin ends.
            while True:
                first = {k: (v or "").split("\n")[0] for k, v in self.markers().items()}
                channel.sendall("".join(f"{k} {v}\n" for k, v in first.items()).encode())
                if "while read -r _;" not in command or not _read_line(channel):
                    break
            channel.send_exit_status(0)
            channel.close()
            return
        words = shlex.split(command)
        path = None
        if len(words) == 2 and words[0] == "cat":
            path = words[1]
        elif words[:2] == ["[", "-r"]:  # lima.drivers.markers.marker_command
            path = words[2]
        content = self.files.get(path) if path is not None else None
        if content is None:
            channel.sendall_stderr(f"{command}: No such file or directory\n".encode())
            channel.send_exit_status(1)
        else:
            channel.sendall(f"{content}\n".encode())
            channel.send_exit_status(0)
        channel.close()


def _read_line(channel: paramiko.Channel) -> bool:
    """Read up to a newline; False when the input ended first."""
    while True:
        data = channel.recv(1)
        if not data:
            return False
        if data == b"\n":
            return True


def serve(conn: socket.socket, host_key: paramiko.PKey, authorized: str,
          files: dict[str, str]) -> None:
    transport = paramiko.Transport(conn)
    transport.add_server_key(host_key)
    try:
        transport.start_server(server=Server(authorized, files))
    except (paramiko.SSHException, EOFError, OSError):
        return
    while transport.is_active():
        time.sleep(0.2)


if __name__ == "__main__":
    main()
