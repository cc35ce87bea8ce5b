"""A stand-in for ``systemctl`` where systemd is not PID 1 (CI's machines): it runs a unit the
way its unit file says, so that docs/deploy.md's ``systemctl`` lines can run as written.

It knows the few verbs the deployment guide uses: ``daemon-reload``, ``enable --now``, ``start``,
``reload``, ``restart``, ``stop`` and ``is-active``. It reads ``/etc/systemd/system/NAME.service``,
else ``/lib/systemd/system/NAME.service`` (nginx's, from its Debian package), and honours what our
unit relies on: ``Type`` (simple or forking with ``PIDFile``), ``User``, ``Group``,
``WorkingDirectory``, ``RuntimeDirectory``, ``Environment``, ``EnvironmentFile``,
``ExecStartPre``, ``ExecStart``, ``ExecReload`` (with ``$MAINPID``), ``KillSignal``,
``TimeoutStopSec`` and ``LimitNOFILE``. A unit's output goes to
``/var/log/chat-rehearsal/NAME.log`` (journald's part). Sandboxing lines (``ProtectSystem``,
``PrivateTmp``, ...) are not applied. One leniency: ``reload`` of a unit that is not running starts
it, because Debian's packages start their services on install, which this machine's policy-rc.d
prevents.
"""

import configparser
import os
import pwd
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

UNIT_DIRS = (Path("/etc/systemd/system"), Path("/lib/systemd/system"))
STATE = Path("/run/chat-rehearsal")
LOGS = Path("/var/log/chat-rehearsal")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def main(argv: list[str]) -> int:
    """Run one verb on the units named after it; the exit code says whether it worked."""
    args = [arg for arg in argv if not arg.startswith("-")]
    verb, names = args[0], [name.removesuffix(".service") for name in args[1:]]
    if verb == "daemon-reload":
        return 0
    if verb == "enable":
        verb = "start" if "--now" in argv else "enable"
    for name in names:
        if not ACTIONS[verb](name, unit(name)):
            return 1
    return 0


def unit(name: str) -> configparser.SectionProxy:
    """The ``[Service]`` section of the unit file ``name``."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # Keys keep their case.
    for directory in UNIT_DIRS:
        path = directory / f"{name}.service"
        if path.is_file():
            parser.read(path)
            return parser["Service"]
    raise SystemExit(f"Unit {name}.service not found.")


def main_pid(name: str, service: configparser.SectionProxy) -> int | None:
    """The main process of the unit, if it runs."""
    pid_file = Path(service.get("PIDFile", str(STATE / f"{name}.pid")))
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


def environment(service: configparser.SectionProxy) -> dict[str, str]:
    """What systemd gives a service: a bare PATH, its user's HOME, then Environment= and
    EnvironmentFile= (which wins)."""
    env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
    user = service.get("User")
    if user:
        env.update(HOME=pwd.getpwnam(user).pw_dir, USER=user, LOGNAME=user)
    for name in service.get("RuntimeDirectory", "").split():
        env["RUNTIME_DIRECTORY"] = f"/run/{name}"
    for assignment in shlex.split(service.get("Environment", "")):
        key, _, value = assignment.partition("=")
        env[key] = value
    path = service.get("EnvironmentFile")
    if path:
        for line in Path(path.removeprefix("-")).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", ";")) and "=" in line:
                key, value = line.split("=", 1)
                env[key.strip()] = value.strip().strip("\"'")
    return env


def run(command: str, service: configparser.SectionProxy, log: Path, wait: bool) -> int:
    """Start one Exec line as the unit's user; wait for it unless it is the main process."""
    argv = shlex.split(command.lstrip("-@+!"))
    limit = service.get("LimitNOFILE")

    def limits() -> None:
        if limit:  # At most the hard limit of this container, which root may not raise here.
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            wanted = int(limit) if hard == resource.RLIM_INFINITY else min(int(limit), hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    with log.open("ab") as out:
        process = subprocess.Popen(
            argv,
            cwd=service.get("WorkingDirectory", "/"),
            env=environment(service),
            user=service.get("User"),
            group=service.get("Group"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limits,
        )
    return process.wait(60) if wait else process.pid


def start(name: str, service: configparser.SectionProxy) -> bool:
    """Start the unit unless it runs (a simple one is started once spawned, as in systemd)."""
    if main_pid(name, service):
        return True
    STATE.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    for directory in service.get("RuntimeDirectory", "").split():
        runtime = Path("/run") / directory
        runtime.mkdir(mode=0o755, exist_ok=True)
        shutil.chown(runtime, service.get("User", "root"), service.get("Group", "root"))
    log = LOGS / f"{name}.log"
    for line in service.get("ExecStartPre", "").splitlines():
        if line.strip() and run(line, service, log, wait=True) != 0 and not line.startswith("-"):
            return False
    if service.get("Type", "simple") == "forking":
        return run(service["ExecStart"], service, log, wait=True) == 0
    pid = run(service["ExecStart"], service, log, wait=False)
    (STATE / f"{name}.pid").write_text(str(pid))
    return True


def reload(name: str, service: configparser.SectionProxy) -> bool:
    """Run ExecReload with $MAINPID, or start the unit if it does not run (see above)."""
    pid = main_pid(name, service)
    if pid is None:
        return start(name, service)
    command = service["ExecReload"].replace("$MAINPID", str(pid))
    return run(command, service, LOGS / f"{name}.log", wait=True) == 0


def stop(name: str, service: configparser.SectionProxy) -> bool:
    """Send KillSignal to the main process, then SIGKILL to its group after TimeoutStopSec."""
    pid = main_pid(name, service)
    if pid is None:
        return True
    os.kill(pid, getattr(signal, service.get("KillSignal", "SIGTERM")))
    deadline = time.monotonic() + float(service.get("TimeoutStopSec", "90").rstrip("s"))
    while time.monotonic() < deadline and main_pid(name, service):
        time.sleep(0.1)
    if main_pid(name, service):
        os.killpg(pid, signal.SIGKILL)
    return True


def restart(name: str, service: configparser.SectionProxy) -> bool:
    """Stop, then start."""
    return stop(name, service) and start(name, service)


def is_active(name: str, service: configparser.SectionProxy) -> bool:
    """Whether the unit's main process runs."""
    return main_pid(name, service) is not None


def enable(name: str, service: configparser.SectionProxy) -> bool:
    """Nothing to do without a boot to start it at."""
    return True


ACTIONS = {
    "start": start,
    "reload": reload,
    "restart": restart,
    "stop": stop,
    "is-active": is_active,
    "enable": enable,
}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
