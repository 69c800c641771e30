"""A throw-away Postfix instance: config in a temp dir, loopback-only, one test port.

Mail for `customer.test` is delivered by the virtual agent into Maildirs under
`mail/` that the test reads. `deferred` recipients get a 450 at RCPT time and
`rejected` ones a 550, so a test sees both kinds of relay refusal. Domains
in `routes` are relayed to other SMTP servers on loopback (our own listener,
a remote server that refuses); what the next hop refuses after Postfix took
responsibility comes back as a real DSN to the envelope sender.
"""

from __future__ import annotations

import email
import email.policy
import grp
import pwd
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from peers.common import free_port, port_open, wait_until

CUSTOMER_DOMAIN = "customer.test"


def _private_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="umsg-postfix-"))
    root.chmod(0o755)
    return root


def available() -> bool:
    return shutil.which("postfix") is not None or Path("/usr/sbin/postfix").exists()


@dataclass
class Postfix:
    # Postfix's daemons run as user postfix and must reach these folders, so they live in a
    # world-traversable temp dir of their own (pytest's tmp_path is private to root).
    root: Path = field(default_factory=lambda: _private_root())
    port: int = field(default_factory=free_port)
    users: tuple[str, ...] = ("alice", "bob")
    deferred: tuple[str, ...] = ("busy",)
    rejected: tuple[str, ...] = ("nobody",)
    routes: dict[str, int] = field(default_factory=dict)  # domain -> loopback SMTP port

    @property
    def conf(self) -> Path:
        return self.root / "etc"

    @property
    def mail(self) -> Path:
        return self.root / "mail"

    def _write_config(self) -> None:
        self.conf.mkdir(parents=True, exist_ok=True)
        self.mail.mkdir(parents=True, exist_ok=True)
        pw = pwd.getpwnam("postfix")
        uid, gid = pw.pw_uid, pw.pw_gid
        shutil.chown(self.mail, uid, gid)
        (self.root / "queue").mkdir(exist_ok=True)  # root's; postfix creates its subfolders
        (self.root / "data").mkdir(exist_ok=True)
        shutil.chown(self.root / "data", uid, gid)
        (self.conf / "vmailbox").write_text(
            "".join(f"{u}@{CUSTOMER_DOMAIN} {CUSTOMER_DOMAIN}/{u}/\n" for u in self.users))
        (self.conf / "access").write_text(
            "".join(f"{u}@{CUSTOMER_DOMAIN} 450 4.2.1 mailbox busy, try later\n" for u in self.deferred))
        transports = [f"{d} smtp:[127.0.0.1]:{p}" for d, p in self.routes.items()] or ["# none"]
        (self.conf / "transport").write_text("\n".join(transports) + "\n")
        c = self.conf
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.root / 'queue'}
data_directory = {self.root / 'data'}
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {self.root}
maillog_file = {self.root / 'postfix.log'}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.test
mydomain = relay.test
myorigin = relay.test
mydestination =
mynetworks = 127.0.0.0/8
relay_domains = {' '.join(self.routes)}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access texthash:{c / 'access'}, permit_mynetworks, reject
virtual_mailbox_domains = {CUSTOMER_DOMAIN}
virtual_mailbox_base = {self.mail}
virtual_mailbox_maps = texthash:{c / 'vmailbox'}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
transport_maps = texthash:{c / 'transport'}
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtp_tls_security_level = none
smtpd_tls_security_level = none
bounce_queue_lifetime = 0
maximal_queue_lifetime = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
alias_maps =
alias_database =
biff = no
""")
        # The package's service table, with our port and without chroot.
        shipped = [Path("/etc/postfix/master.cf"), Path("/usr/share/postfix/master.cf.dist")]
        master = next(p for p in shipped if p.exists()).read_text()
        lines = []
        for line in master.splitlines():
            if re.match(r"^smtp\s+inet\s", line):
                line = f"127.0.0.1:{self.port} inet n - n - - smtpd"
            elif line and not line[0].isspace() and not line.startswith("#"):
                cols = line.split()
                if len(cols) >= 8:
                    cols[4] = "n"  # no chroot: the temp dirs are not inside a jail
                    line = " ".join(cols[:8]) + (" " + " ".join(cols[8:]) if len(cols) > 8 else "")
            lines.append(line)
        (self.conf / "master.cf").write_text("\n".join(lines) + "\n")
        grp.getgrnam("postdrop")  # fails loudly when the package is half-installed

    def start(self) -> Postfix:
        self._write_config()
        cmd = ["postfix", "-c", str(self.conf), "start"]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        wait_until(lambda: port_open(self.port), f"postfix on port {self.port}")
        return self

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.conf), "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def maildir(self, user: str) -> Path:
        return self.mail / CUSTOMER_DOMAIN / user

    def messages(self, user: str) -> list[bytes]:
        new = self.maildir(user) / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []

    def wait_for_mail(self, user: str, count: int = 1, timeout: float = 30.0) -> list[EmailMessage]:
        def enough() -> list[bytes] | None:
            found = self.messages(user)
            return found if len(found) >= count else None

        raws = wait_until(enough, f"{count} message(s) for {user} in Postfix's Maildir", timeout)
        parsed = [email.message_from_bytes(r, policy=email.policy.default) for r in raws]
        return [m for m in parsed if isinstance(m, EmailMessage)]

    def __enter__(self) -> Postfix:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
