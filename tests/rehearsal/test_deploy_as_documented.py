"""docs/deploy.md, followed to the letter on this machine, then used in a French browser.

The shell blocks of its "One host" section run in order in one ``bash``, as a reader pastes them
as root, with two values set (``REPO``: this repository, whose committed code is cloned;
``DOMAIN``: 127.0.0.1) and ``systemctl`` standing in for systemd (``systemctl.py``), which is
not PID 1 here. So the doc cannot drift from what is tested. Then two people register through
nginx in French, chat, live through the "Upgrading" block (``systemctl reload chat``), and log out.

It installs packages, adds a ``chat`` user, writes /srv/chat, /etc/chat and an nginx site, and
serves on port 80: ``make deploy-check`` runs it (CI does), never ``make test``.
"""

import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import psutil
import pytest
from playwright.sync_api import expect

from helpers import ARTIFACTS, PASSWORD, ROOT, missing

pytestmark = pytest.mark.rehearsal

GUIDE = ROOT / "docs" / "deploy.md"
HERE = Path(__file__).resolve().parent
URL = "http://127.0.0.1"
# What the guide writes, and what it leaves behind: reset before and after the rehearsal.
WRITTEN = (
    "/srv/chat",
    "/etc/chat",
    "/etc/systemd/system/chat.service",
    "/etc/nginx/sites-available/chat",
    "/etc/nginx/sites-enabled/chat",
    "/var/lib/chat",
)
STATE = Path("/run/chat-rehearsal")
LOGS = Path("/var/log/chat-rehearsal")


def shell_blocks(section):
    """The ``sh`` code blocks of the guide's section whose heading starts with ``section``."""
    text = GUIDE.read_text()
    match = re.search(rf"^## {re.escape(section)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/deploy.md has no section {section!r}"
    blocks = re.findall(r"^( *)```sh\n(.*?)^\1```", match.group(1), re.M | re.S)
    assert blocks, f"docs/deploy.md's {section!r} has no sh block"
    return [textwrap.dedent(body) for _indent, body in blocks]


def with_values(script, **values):
    """``script`` with the lines ``NAME=...`` of the guide set to ``values``."""
    for name, value in values.items():
        script, count = re.subn(rf"^{name}=.*$", f"{name}={value}", script, flags=re.M)
        assert count == 1, f"docs/deploy.md no longer sets {name} once"
    return script


@pytest.fixture
def machine(tmp_path):
    """A root shell on a Debian machine, with ``systemctl`` standing in for systemd."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        missing("the deployment rehearsal needs root on Debian (it is what docs/deploy.md says)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    standin = bin_dir / "systemctl"
    standin.write_text(f'#!/bin/sh\nexec /usr/bin/python3 {HERE / "systemctl.py"} "$@"\n')
    standin.chmod(0o755)
    path = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    env = {"PATH": path, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    reset(env, str(standin))
    log = ARTIFACTS / "deploy-rehearsal.log"
    ARTIFACTS.mkdir(exist_ok=True)
    log.write_text("")

    def run(script, what):
        with log.open("a") as out:
            out.write(f"\n===== {what}\n")
            out.flush()
            done = subprocess.run(
                ["/bin/bash", "-euxo", "pipefail", "-c", script],
                cwd="/root",
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=900,
                check=False,
            )
        if done.returncode != 0:
            pytest.fail(f"{what} failed ({done.returncode}); see {log}\n{tail(log)}{unit_logs()}")

    yield run
    for unit_log in LOGS.glob("*.log"):
        shutil.copy(unit_log, ARTIFACTS / f"deploy-rehearsal-{unit_log.name}")
    reset(env, str(standin))


def reset(env, systemctl):
    """Undo a rehearsal: stop what it started, remove what it wrote, drop its database and its
    Redis keys (the guide's REDIS_URL: database 0, prefix ``chat``)."""
    for unit in ("chat", "nginx"):
        subprocess.run([systemctl, "stop", unit], env=env, check=False, capture_output=True)
    for path in WRITTEN:
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)
    shutil.rmtree(STATE, ignore_errors=True)
    shutil.rmtree(LOGS, ignore_errors=True)
    if shutil.which("redis-cli"):
        keys = subprocess.run(
            ["/usr/bin/redis-cli", "--scan", "--pattern", "chat:*"],
            env=env, capture_output=True, text=True, check=False,
        ).stdout.split()  # fmt: skip
        if keys:
            subprocess.run(["/usr/bin/redis-cli", "del", *keys], env=env, capture_output=True)
    if shutil.which("dropdb"):
        for command in (["dropdb", "--if-exists", "chat"], ["dropuser", "--if-exists", "chat"]):
            as_postgres = ["/usr/sbin/runuser", "-u", "postgres", "--", *command]
            subprocess.run(as_postgres, env=env, check=True)


def tail(path, lines=40):
    """The last lines of a log file."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def unit_logs():
    """What the units printed, for a failure message."""
    return "".join(f"\n--- {log.name}\n{tail(log)}" for log in sorted(LOGS.glob("*.log")))


def workers():
    """The gunicorn workers of the chat unit."""
    arbiter = psutil.Process(int((STATE / "chat.pid").read_text()))
    return arbiter.children()


class FrenchPerson:
    """Somebody whose browser asks for French, using the deployed site."""

    def __init__(self, browser):
        self.context = browser.new_context(base_url=URL, locale="fr-FR")
        self.page = self.context.new_page()
        self.problems = []
        self.page.on("pageerror", lambda error: self.problems.append(str(error)))

    def register(self, email):
        self.page.goto("/register")
        expect(self.page.locator("html")).to_have_attribute("lang", "fr")
        self.page.get_by_label("Adresse e-mail").fill(email)
        self.page.get_by_label("Mot de passe", exact=True).fill(PASSWORD)
        self.page.get_by_label("Confirmer le mot de passe").fill(PASSWORD)
        self.page.get_by_role("button", name="Créer le compte").click()
        self.expect_connected()

    def expect_connected(self):
        status = self.page.locator("#status")
        expect(status).to_have_attribute("data-state", "connected", timeout=20_000)
        expect(status).to_have_text("Connecté")

    def say(self, text):
        box = self.page.get_by_role("textbox", name="Message")
        box.fill(text)
        box.press("Enter")

    def expect_message(self, text):
        message = self.page.locator(".messages:not([hidden]) .message .text").filter(has_text=text)
        expect(message).to_have_count(1, timeout=10_000)

    def upload(self, name, data):
        """Upload a file with the page's session and CSRF token; the JSON answer."""
        token = self.page.locator("input[name=csrf_token]").first.get_attribute("value")
        answer = self.context.request.post(
            "/api/uploads",
            multipart={"file": {"name": name, "mimeType": "text/plain", "buffer": data}},
            headers={"X-CSRFToken": token},
        )
        assert answer.status == 201, answer.text()
        return answer.json()

    def fetch(self, path):
        """``(status, headers, body)`` of a GET with this person's session."""
        answer = self.context.request.get(path)
        return answer.status, answer.headers, answer.body()

    def log_out(self):
        self.page.get_by_role("button", name="Se déconnecter", exact=True).click()
        expect(self.page.get_by_role("heading", name="Se connecter")).to_be_visible()


def test_the_deployment_guide_works_as_written(machine, browser):
    install = "\n".join(shell_blocks("One host, step by step"))
    machine(with_values(install, REPO=str(ROOT), DOMAIN="127.0.0.1"), "docs/deploy.md, One host")

    alice, bob = FrenchPerson(browser), FrenchPerson(browser)
    alice.register("alice@example.com")
    bob.register("bob@example.com")
    alice.say("Bonjour, ça marche !")
    bob.expect_message("Bonjour, ça marche !")
    # A file through nginx: the app checks, nginx sends it from /var/lib/chat/uploads.
    notes = alice.upload("notes.txt", b"Compte rendu")
    status, headers, body = alice.fetch(notes["url"])
    assert (status, body) == (200, b"Compte rendu")
    assert headers["content-disposition"].startswith("attachment;")
    assert headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert bob.fetch(notes["url"])[0] == 404  # Not posted: alice's alone.

    old_workers = workers()
    machine("\n".join(shell_blocks("Upgrading")), "docs/deploy.md, Upgrading")
    # The reload replaces the workers: once the old ones are gone, both pages have reconnected
    # by themselves (they were closed with 1001) and chat on.
    _gone, alive = psutil.wait_procs(old_workers, timeout=30)
    assert alive == []
    assert workers()
    alice.expect_connected()
    bob.expect_connected()
    bob.say("Toujours là après la mise à jour")
    alice.expect_message("Toujours là après la mise à jour")
    alice.expect_connected()

    alice.log_out()
    bob.log_out()
    assert alice.problems == bob.problems == []
