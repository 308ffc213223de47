"""The generated seed texts: user-data, meta-data, network-config, lima.env, param.env, env."""

from __future__ import annotations

import shlex
import subprocess
import time
from hashlib import sha256
from pathlib import Path

import pytest
import yaml

from lima.drivers import cloudconfig as cc
from lima.errors import SpecError
from tests.unit.cidata_fixtures import Mount, Provision, make_spec

KEYS = ["ssh-ed25519 AAAA lima", "ssh-ed25519 BBBB other"]


def _env(text: str) -> dict[str, str]:
    """Parse KEY=value lines with shell quoting, as `. lima.env` would."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        assert sep, line
        assert key not in out, f"duplicate {key}"
        words = shlex.split(value)
        assert len(words) <= 1, line
        out[key] = words[0] if words else ""
    return out


def test_user_data_is_cloud_config_with_the_user() -> None:
    text = cc.user_data(make_spec(timezone="Europe/Paris"), keys=KEYS)
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    (user,) = doc["users"]
    assert user["name"] == "alice"
    assert user["uid"] == 1001 and isinstance(user["uid"], int)
    assert user["homedir"] == "/home/alice.linux"
    assert user["shell"] == "/bin/bash"
    assert user["gecos"] == "Alice A"
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == KEYS
    assert doc["ssh_genkeytypes"] == ["ed25519"]
    assert doc["ssh_pwauth"] is False
    assert doc["package_update"] is False
    assert doc["hostname"] == "lima-demo"
    assert doc["timezone"] == "Europe/Paris"
    assert doc["growpart"]["mode"] == "auto"
    assert "mounts" not in doc


def test_bootcmd_mounts_cidata_and_starts_boot_sh_detached() -> None:
    doc = yaml.safe_load(cc.user_data(make_spec(), keys=KEYS))
    (hook,) = doc["bootcmd"]
    assert "/dev/disk/by-label/cidata" in hook
    assert "ro,mode=0700,dmode=0700,overriderockperm,exec,uid=0" in hook
    assert "/mnt/lima-cidata" in hook
    assert "lima_unit --no-block" in hook  # never blocks cloud-init on boot.sh
    # First of all: the guest's network is up (lima.drivers.serialwatch reads the console).
    assert hook.startswith("echo lima-network-up >/dev/console 2>/dev/null || :\n")
    assert "setsid" in hook and "&\n" in hook
    # The shares: a unit of their own, which cloud-init's config stage does not wait for
    # (boot.sh's provisioning does).
    assert ('lima_unit --no-block --collect --unit="lima-mounts-$IID" -p Type=oneshot '
            '--setenv=LIMA_CIDATA_MNT="$MNT" /bin/sh "$MNT/boot.sh" --mounts\n') in hook
    assert "Before=" not in hook and "cloud-config" not in hook
    # boot.sh itself is told to leave the shares to that unit.
    assert ('--unit="lima-boot-$IID" -p RemainAfterExit=yes --setenv=LIMA_CIDATA_MNT="$MNT" '
            '--setenv=LIMA_BOOT_SHARES_UNIT=1 /bin/sh "$MNT/boot.sh"\n') in hook


# The shells a guest may run the boot hook with.
SHELLS = {"dash": ["dash"], "bash": ["bash", "--posix"], "busybox": ["busybox", "sh"]}


def hook_here(hook: str, console: Path, mounts: Path, dev: Path, systemd: Path) -> str:
    """The hook with the guest's paths (each named once) replaced by files here."""
    for guest, here in (("/dev/console", console), ("/proc/mounts", mounts),
                        (cc.CIDATA_DEVICE, dev), ("/run/systemd/system", systemd)):
        assert hook.count(guest) == 1, guest
        hook = hook.replace(guest, str(here))
    return hook


@pytest.mark.processes
@pytest.mark.parametrize(("env_line", "iid"), [
    ("LIMA_CIDATA_IID=iid-1796141969141", "iid-1796141969141"),
    ("LIMA_CIDATA_IID='iid-7'", "iid-7"),
    ("LIMA_CIDATA_IID=iid-8\r", "iid-8"),
    ("LIMA_CIDATA_IID=iid 9/x$(true)", "iid9xtrue"),
])
@pytest.mark.parametrize("mounted", [False, True])
@pytest.mark.parametrize("shell", ["dash", "bash", "busybox"])
def test_boot_hook_reads_the_boot_iid_and_mounts_cidata_once(
    tmp_path: Path, env_line: str, iid: str, mounted: bool, shell: str,
) -> None:
    # The whole hook under each shell a guest may run it with, its programs stand-ins
    # that log their arguments; the guest's paths replaced by files and directories here.
    argv = SHELLS[shell]
    # busybox sh would run its own mount applet, never the stand-in: it sees cidata mounted.
    mounted = mounted or shell == "busybox"
    mnt = tmp_path / "cidata"
    console, mounts, dev = tmp_path / "console", tmp_path / "mounts", tmp_path / "sr0"
    systemd = tmp_path / "systemd"
    systemd.mkdir()
    dev.touch()
    mounts.write_text("proc /proc proc rw 0 0\n"
                      + (f"/dev/sr0 {mnt} iso9660 ro 0 0\n" if mounted else ""))
    hook = hook_here(cc.boot_hook_script(str(mnt), modules=["9p"]), console, mounts, dev,
                     systemd)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    for name in ("systemd-run", "mount", "modprobe", "blkid", "mkdir", "setsid"):
        stub = bindir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >>"{log}"\n')
        stub.chmod(0o755)
    mnt.mkdir()
    # lima.env's first LIMA_CIDATA_IID line counts, not meta-data's instance-id
    # (cloud-init's); a last line without its newline is read too.
    env = (f"LIMA_CIDATA_NAME=x\n{env_line}\nLIMA_CIDATA_IID=second\n" if mounted
           else f"LIMA_CIDATA_NAME=x\n{env_line}")
    (mnt / "lima.env").write_text(env)
    (mnt / "meta-data").write_text("instance-id: iid-seed-0\nlocal-hostname: lima-x\n")
    # (Most of the hook runs in the background: `wait` for it.)
    out = subprocess.run([*argv, "-c", f"{hook}wait\n"],
                         env={"PATH": f"{bindir}:/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert console.read_text() == "lima-network-up\n"
    # (modprobe runs in the background: it may log after the hook ends.)
    calls = sorted(c.split(" --setenv")[0] for c in log.read_text().splitlines()
                   if not c.startswith("modprobe "))
    mount = [] if mounted else [
        f"mount -o {cc.CIDATA_MOUNT_OPTIONS} {dev} {mnt}"]
    # The directory exists and the device too: no mkdir, no blkid.
    assert calls == sorted([
        *mount,
        f"systemd-run -p StartupCPUWeight=1000 --no-block --collect --unit=lima-mounts-{iid}"
        " -p Type=oneshot",
        f"systemd-run -p StartupCPUWeight=1000 --no-block --collect --unit=lima-boot-{iid}"
        " -p RemainAfterExit=yes"])


@pytest.mark.processes
@pytest.mark.parametrize("shell", ["dash", "bash", "busybox"])
def test_boot_hook_returns_before_its_mount_and_units_are_done(
    tmp_path: Path, shell: str,
) -> None:
    # cloud-init's network stage (which sshd waits for) runs the hook and waits for its
    # shell: the shell ends once the console line is written, while the mount and the
    # units' systemd-run go on behind it. Here they block until `release` exists.
    argv = SHELLS[shell]
    mnt, console, dev = tmp_path / "cidata", tmp_path / "console", tmp_path / "sr0"
    mounts, systemd, release = tmp_path / "mounts", tmp_path / "systemd", tmp_path / "release"
    mnt.mkdir()
    systemd.mkdir()
    dev.touch()
    (mnt / "lima.env").write_text("LIMA_CIDATA_IID=iid-5\n")
    # busybox sh runs its own mount applet: there cidata is already mounted.
    mounts.write_text(f"/dev/sr0 {mnt} iso9660 ro 0 0\n" if shell == "busybox" else "")
    hook = hook_here(cc.boot_hook_script(str(mnt)), console, mounts, dev, systemd)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    for name in ("systemd-run", "mount"):
        (bindir / name).write_text(
            f'#!/bin/sh\nwhile [ ! -e "{release}" ]; do sleep 0.05; done\n'
            f'echo "{name}" >>"{log}"\n')
        (bindir / name).chmod(0o755)
    with (tmp_path / "out").open("w") as out:
        proc = subprocess.Popen([*argv, "-c", hook], env={"PATH": f"{bindir}:/usr/bin:/bin"},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            assert proc.wait(timeout=30) == 0
            assert console.read_text() == "lima-network-up\n"
            assert not log.exists()  # nothing behind the hook has got past its stand-ins
        finally:
            release.touch()
    deadline = time.monotonic() + 30
    want = ["systemd-run", "systemd-run"] if shell == "busybox" else [
        "mount", "systemd-run", "systemd-run"]
    while time.monotonic() < deadline and (
            not log.exists() or log.read_text().split() != want):
        time.sleep(0.05)
    assert log.read_text().split() == want


@pytest.mark.processes
def test_boot_hook_creates_the_mount_point_when_missing(tmp_path: Path) -> None:
    mnt = tmp_path / "absent" / "cidata"
    hook = cc.boot_hook_script(str(mnt))
    hook = hook.replace("/dev/console", str(tmp_path / "console"))
    hook = hook.split("IID=\n", 1)[0] + ")\n"  # up to the mount, in the foreground
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "mount").write_text("#!/bin/sh\nexit 0\n")
    (bindir / "mount").chmod(0o755)
    out = subprocess.run(["dash", "-c", hook], env={"PATH": f"{bindir}:/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert mnt.is_dir() and (mnt.stat().st_mode & 0o777) == 0o700


@pytest.mark.processes
@pytest.mark.parametrize("old_systemd", [False, True])
def test_boot_units_get_the_startup_cpu_weight_unless_systemd_refuses_it(
    tmp_path: Path, old_systemd: bool,
) -> None:
    (hook,) = yaml.safe_load(cc.user_data(make_spec(), keys=KEYS))["bootcmd"]
    (define,) = [ln for ln in hook.splitlines() if ln.strip().startswith("lima_unit() {")]
    log = tmp_path / "calls"
    fake = tmp_path / "systemd-run"
    refuse = ('case "$*" in *StartupCPUWeight*) echo "Unknown assignment" >&2; exit 1;; esac\n'
              if old_systemd else "")
    fake.write_text(f'#!/bin/sh\necho "$*" >>"{log}"\n{refuse}exit 0\n')
    fake.chmod(0o755)
    out = subprocess.run(["sh", "-c", f"{define}\nlima_unit --no-block --unit=u /bin/sh x"],
                         env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and out.stderr == ""
    calls = log.read_text().splitlines()
    with_weight = "-p StartupCPUWeight=1000 --no-block --unit=u /bin/sh x"
    assert calls == ([with_weight, "--no-block --unit=u /bin/sh x"] if old_systemd
                     else [with_weight])


def test_reference_copy_has_no_boot_hook() -> None:
    doc = yaml.safe_load(cc.user_data(make_spec(), keys=KEYS, boot_hook=False))
    assert "bootcmd" not in doc
    assert doc["users"][0]["ssh_authorized_keys"] == KEYS


def test_no_keys_is_an_error() -> None:
    with pytest.raises(SpecError):
        cc.user_data(make_spec(), keys=[])


def test_upgrade_packages() -> None:
    doc = yaml.safe_load(cc.user_data(make_spec(upgrade_packages=True), keys=KEYS))
    assert doc["package_update"] is True and doc["package_upgrade"] is True


def test_9p_shares_go_to_the_seed_fstab_not_to_cloud_init_mounts() -> None:
    spec = make_spec(
        mount_type="9p",
        mounts=(
            Mount(
                location="/h",
                mount_point="/h",
                writable=False,
                nine_p={"protocolVersion": "9p2000.L", "msize": "128KiB", "cache": "fscache"},
            ),
            Mount(location="/tmp/lima", mount_point="/tmp/lima", writable=True, nine_p={}),
        ),
    )
    doc = yaml.safe_load(cc.user_data(spec, keys=KEYS))
    # No `mounts:`: cloud-init's mounts module then leaves fstab alone and its config
    # stage waits for nothing of the shares; boot.sh writes their lines.
    assert "mounts" not in doc
    # The seed's fstab: each share as cloud-init's mounts module writes Lima's `mounts:`
    # entries (tab-separated, its comment=cloudconfig added), as on earlier boots.
    lines = cc.fstab(spec, None).splitlines()
    assert lines == [
        # Lima's tag: "lima-" + the first 8 bytes of sha256("/h:/h"), as the -virtfs device.
        "lima-0647c9f4e72b4b97\t/h\t9p\tro,trans=virtio,version=9p2000.L,"
        "msize=131072,cache=fscache,nofail,comment=cloudconfig\t0\t0",
        "lima-" + sha256(b"/tmp/lima:/tmp/lima").hexdigest()[:16] + "\t/tmp/lima\t9p\t"
        + cc.mount_options(spec, spec.mounts[1]) + ",comment=cloudconfig\t0\t0",
    ]
    assert lines[1].split("\t")[3].startswith("rw,") and "cache=mmap" in lines[1]
    assert cc.fstab(make_spec(mount_type="reverse-sshfs", mounts=spec.mounts), None) == ""
    # bootcmd loads 9p in the background, before the shares' unit needs it.
    (hook,) = doc["bootcmd"]
    assert hook.splitlines()[1] == "modprobe -q -a 9p </dev/null >/dev/null 2>&1 &"


def test_virtiofs_shares_have_no_9p_options_and_reverse_sshfs_none() -> None:
    m = Mount(location="/h", mount_point="/mnt/h", writable=True)
    spec = make_spec(mount_type="virtiofs", mounts=(m,))
    doc = yaml.safe_load(cc.user_data(spec, keys=KEYS))
    assert "mounts" not in doc
    assert cc.fstab(spec, None) == ("lima-" + sha256(b"/h:/mnt/h").hexdigest()[:16]
                                    + "\t/mnt/h\tvirtiofs\trw,nofail,comment=cloudconfig\t0\t0\n")
    assert "modprobe" not in doc["bootcmd"][0]
    doc = yaml.safe_load(cc.user_data(make_spec(mount_type="reverse-sshfs", mounts=(m,)),
                                      keys=KEYS))
    assert "mounts" not in doc
    assert "modprobe" not in doc["bootcmd"][0]


def test_lima_env_lists_every_mount_point() -> None:
    mounts = (Mount(location="/home/u", mount_point="/home/u"),
              Mount(location="/tmp/lima", mount_point="/mnt/x y", writable=True))
    env = cc.lima_env(make_spec(mount_type="9p", mounts=mounts), iid="i", host_home="/home/u")
    lines = env.splitlines()
    assert "LIMA_CIDATA_MOUNTS=2" in lines
    assert "LIMA_CIDATA_MOUNTS_0_MOUNTPOINT=/home/u" in lines
    assert "LIMA_CIDATA_MOUNTS_1_MOUNTPOINT='/mnt/x y'" in lines
    assert "LIMA_CIDATA_MOUNTTYPE=9p" in lines
    assert "LIMA_CIDATA_HOSTHOME_MOUNTPOINT=/home/u" in lines


def test_meta_data() -> None:
    doc = yaml.safe_load(cc.meta_data(make_spec(name="my_vm.x"), instance_id="iid-seed-1"))
    assert doc == {"instance-id": "iid-seed-1", "local-hostname": "lima-my-vm-x"}


def test_network_config_pins_gateway_and_dns() -> None:
    doc = yaml.safe_load(cc.network_config(make_spec()))
    assert doc["version"] == 2
    assert set(doc["ethernets"]) == {"eth0", "en*"}
    for nic in doc["ethernets"].values():
        assert nic["addresses"] == ["192.168.5.15/24"]
        assert nic["gateway4"] == "192.168.5.2"
        assert nic["nameservers"]["addresses"] == ["192.168.5.3"]


def test_network_config_custom_dns() -> None:
    doc = yaml.safe_load(cc.network_config(make_spec(dns=("10.0.0.1",))))
    assert doc["ethernets"]["eth0"]["nameservers"]["addresses"] == ["10.0.0.1"]


def test_lima_env_has_every_variable() -> None:
    spec = make_spec(
        mounts=(
            Mount(location="/home/host", mount_point="/home/host"),
            Mount(location="/tmp/lima", mount_point="/tmp/lima", writable=True),
        ),
        containerd_user=True,
        provision=(
            Provision(mode="dependency", script="x", skip_default_dependency_resolution=True),
        ),
    )
    env = _env(cc.lima_env(spec, iid="iid-7", host_home="/home/host"))
    expected = {
        "LIMA_CIDATA_DEBUG": "false",
        "LIMA_CIDATA_NAME": "demo",
        "LIMA_CIDATA_MNT": "/mnt/lima-cidata",
        "LIMA_CIDATA_IID": "iid-7",
        "LIMA_CIDATA_USER": "alice",
        "LIMA_CIDATA_UID": "1001",
        "LIMA_CIDATA_COMMENT": "Alice A",
        "LIMA_CIDATA_HOME": "/home/alice.linux",
        "LIMA_CIDATA_SHELL": "/bin/bash",
        "LIMA_CIDATA_HOSTHOME_MOUNTPOINT": "/home/host",
        "LIMA_CIDATA_MOUNTS": "2",
        "LIMA_CIDATA_MOUNTS_0_MOUNTPOINT": "/home/host",
        "LIMA_CIDATA_MOUNTS_1_MOUNTPOINT": "/tmp/lima",
        "LIMA_CIDATA_MOUNTTYPE": "reverse-sshfs",
        "LIMA_CIDATA_CONTAINERD_USER": "1",
        "LIMA_CIDATA_CONTAINERD_SYSTEM": "",
        "LIMA_CIDATA_CONTAINERD_ARCHIVE": "nerdctl-full.tgz",
        "LIMA_CIDATA_SLIRP_GATEWAY": "192.168.5.2",
        "LIMA_CIDATA_SLIRP_DNS": "192.168.5.3",
        "LIMA_CIDATA_SLIRP_IP_ADDRESS": "192.168.5.15",
        "LIMA_CIDATA_UDP_DNS_LOCAL_PORT": "0",
        "LIMA_CIDATA_TCP_DNS_LOCAL_PORT": "0",
        "LIMA_CIDATA_SKIP_DEFAULT_DEPENDENCY_RESOLUTION": "1",
        "LIMA_CIDATA_VMTYPE": "qemu",
        "LIMA_CIDATA_PLAIN": "",
    }
    for key, value in expected.items():
        assert env.get(key) == value, key


def test_lima_env_without_mounts_or_containerd() -> None:
    env = _env(cc.lima_env(make_spec(), iid="i", debug=True))
    assert env["LIMA_CIDATA_DEBUG"] == "true"
    assert env["LIMA_CIDATA_MOUNTS"] == "0"
    assert env["LIMA_CIDATA_HOSTHOME_MOUNTPOINT"] == ""
    assert "LIMA_CIDATA_CONTAINERD_ARCHIVE" not in env
    assert not any(k.startswith("LIMA_CIDATA_MOUNTS_") for k in env)


def test_param_env_sorted_and_validated() -> None:
    assert cc.param_env(make_spec(param={"B": "2", "A": "x y"})) == "PARAM_A='x y'\nPARAM_B=2\n"
    with pytest.raises(SpecError):
        cc.param_env(make_spec(param={"A": "two\nlines"}))
    with pytest.raises(SpecError):
        cc.param_env(make_spec(param={"1bad": "x"}))


def test_etc_environment_env_and_proxies() -> None:
    spec = make_spec(env={"FOO": "bar", "SPACED": "a b"}, propagate_proxy_env=True)
    host = {
        "http_proxy": "http://localhost:3128",
        "HTTPS_PROXY": "http://proxy:8080",
        "PATH": "/host/bin",
    }
    text = cc.etc_environment(spec, host)
    lines = text.splitlines()
    assert lines[0] == "#LIMA-START" and lines[-1] == "#LIMA-END"
    body = dict(line.split("=", 1) for line in lines[1:-1])
    assert body["FOO"] == "bar"
    assert body["SPACED"] == '"a b"'
    assert body["http_proxy"] == body["HTTP_PROXY"] == "http://192.168.5.2:3128"
    assert body["https_proxy"] == body["HTTPS_PROXY"] == "http://proxy:8080"
    assert "PATH" not in body


def test_proxies_not_propagated_when_disabled() -> None:
    spec = make_spec(propagate_proxy_env=False, env={"no_proxy": "x"})
    body = cc.etc_environment(spec, {"http_proxy": "http://p:1"})
    assert "http_proxy" not in body
    assert "NO_PROXY=x" in body and "no_proxy=x" in body


def test_expand_params() -> None:
    params = {"A": "1", "LONG_NAME": "v"}
    assert cc.expand_params("x={{.Param.A}} y={{ .Param.LONG_NAME }}", params) == "x=1 y=v"
    assert cc.expand_params("{{.Other}} $A", params) == "{{.Other}} $A"
    with pytest.raises(SpecError, match="MISSING"):
        cc.expand_params("{{.Param.MISSING}}", params)


def test_data_writer_script() -> None:
    p = Provision(
        mode="data",
        path="/etc/my conf",
        content="x",
        owner="bob:bob",
        permissions="600",
        overwrite=False,
    )
    script = cc.data_writer_script(p, 3)
    assert script.startswith("#!/bin/sh\n")
    assert "dest='/etc/my conf'" in script
    assert "chown bob:bob" in script and "chmod 600" in script
    assert 'if [ -e "$dest" ]' in script
    with pytest.raises(SpecError):
        cc.data_writer_script(Provision(mode="data", path="/x", permissions="rwx"), 0)


@pytest.mark.processes  # sh itself reads the env files
def test_env_files_source_in_sh_exactly() -> None:
    spec = make_spec(
        user=make_spec().user.__class__(
            name="bob", uid=5, comment="O'Brien $HOME `x`", home="/h b", shell="/bin/sh"
        ),
        param={"P": 'a\'b "c" $d'},
    )
    script = cc.lima_env(spec, iid="i") + cc.param_env(spec)
    script += 'printf "%s|%s|%s" "$LIMA_CIDATA_COMMENT" "$LIMA_CIDATA_HOME" "$PARAM_P"\n'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == "O'Brien $HOME `x`|/h b|a'b \"c\" $d"
    assert "LIMA_CIDATA_NAME=demo\n" in cc.lima_env(spec, iid="i")  # plain values unquoted
