"""A throw-away Dovecot IMAP server: config in a temp dir, loopback port, passwd-file users, Maildir.

Mail is put into a user's INBOX the way a delivery agent would (a file in
Maildir `new/`), so the test controls exactly what the mailbox holds; Dovecot
then assigns UIDs and tells IDLE clients about it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from peers.common import free_port, port_open, wait_until


def available() -> bool:
    return shutil.which("dovecot") is not None or Path("/usr/sbin/dovecot").exists()


def _private_root() -> Path:
    # Dovecot's login and mail processes run as unprivileged users and must reach these folders.
    root = Path(tempfile.mkdtemp(prefix="umsg-dovecot-"))
    root.chmod(0o755)
    return root


@dataclass
class Dovecot:
    users: dict[str, str] = field(default_factory=lambda: {"support": "s3cret"})
    root: Path = field(default_factory=_private_root)
    port: int = field(default_factory=free_port)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def url(self, user: str = "support", folder: str = "INBOX") -> str:
        return f"imap://{user}:{self.users[user]}@127.0.0.1:{self.port}/{folder}"

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user

    def _write_config(self) -> None:
        owner = pwd.getpwnam("dovecot")  # mail files belong to an unprivileged user, like production
        for sub in ("run", "state", "mail"):
            (self.root / sub).mkdir(exist_ok=True)
        for user in self.users:
            for sub in ("cur", "new", "tmp"):
                (self.maildir(user) / sub).mkdir(parents=True, exist_ok=True)
        for dirpath, _dirs, _files in os.walk(self.root / "mail"):
            shutil.chown(dirpath, owner.pw_uid, owner.pw_gid)
        (self.root / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}::::\n" for u, p in self.users.items()))
        self.config.write_text(f"""\
base_dir = {self.root / 'run'}
state_dir = {self.root / 'state'}
log_path = {self.root / 'dovecot.log'}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:{self.root / 'mail'}/%u
mail_uid = {owner.pw_uid}
mail_gid = {owner.pw_gid}
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.root / 'passwd'}
}}
userdb {{
  driver = static
  args = uid={owner.pw_uid} gid={owner.pw_gid} home={self.root / 'mail'}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
imap_idle_notify_interval = 1 secs
""")

    def start(self) -> Dovecot:
        self._write_config()
        self._proc = subprocess.Popen(["dovecot", "-F", "-c", str(self.config)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: port_open(self.port) or self._proc.poll() is not None,  # type: ignore[union-attr]
                       f"dovecot on port {self.port}")
        except TimeoutError:
            self.stop()
            raise
        if self._proc.poll() is not None:
            err = self._proc.stderr.read().decode() if self._proc.stderr else ""
            raise RuntimeError(f"dovecot did not start: {err}{self.log()}")
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def make_folder(self, name: str, user: str = "support") -> None:
        """Create a mail folder (Maildir++: a dot-folder beside cur/new/tmp)."""
        owner = pwd.getpwnam("dovecot")
        folder = self.maildir(user) / f".{name}"
        for sub in ("", "cur", "new", "tmp"):
            (folder / sub).mkdir(exist_ok=True)
            shutil.chown(folder / sub, owner.pw_uid, owner.pw_gid)

    def folder_messages(self, name: str, user: str = "support") -> list[bytes]:
        folder = self.maildir(user) / f".{name}"
        return [p.read_bytes() for sub in ("cur", "new") for p in sorted((folder / sub).iterdir())]

    def deliver(self, raw: bytes, user: str = "support") -> Path:
        """Put a message into the user's INBOX (tmp/ then rename into new/, as Maildir asks)."""
        owner = pwd.getpwnam("dovecot")
        name = f"{time.time():.6f}.{uuid.uuid4().hex}.umsg-test"
        tmp = self.maildir(user) / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
        final = self.maildir(user) / "new" / name
        tmp.rename(final)
        return final

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
