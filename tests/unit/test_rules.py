"""lima.schemas.rules via validate.check: for every rule, a document that passes and one
that fails, with the exact field path and line of the problem."""

from __future__ import annotations

import pytest

from lima.errors import Problem
from lima.schemas.lines import from_loaded, line_of
from lima.schemas.validate import check
from lima.schemas.yamlload import load_yaml

# Line 1-3: a minimal valid document; every case appends from line 4 on.
BASE = (
    "images:\n"
    "- location: https://example.org/a.img\n"
    "  arch: x86_64\n"
)
SHA = "sha256:" + "0123456789abcdef" * 4


def problems(extra: str, *, base: str = BASE, filled: bool = False) -> list[Problem]:
    text = base + extra
    loaded = load_yaml(text, "t.yaml")
    return check(loaded.data, from_loaded(loaded.lines, "t.yaml"), "t.yaml", filled=filled)


def errors(extra: str, **kw: object) -> list[Problem]:
    return [p for p in problems(extra, **kw) if not p.warning]  # type: ignore[arg-type]


# (id, passing addition, failing addition, path, line, message fragment)
CASES = [
    ("minimumLimaVersion-semver", "minimumLimaVersion: 1.0.0\n", "minimumLimaVersion: one\n",
     "minimumLimaVersion", 4, "semver"),
    ("minimumLimaVersion-newer", "minimumLimaVersion: 2.0.0\n", "minimumLimaVersion: 99.0.0\n",
     "minimumLimaVersion", 4, "requires Lima version"),
    ("qemu-minimumVersion", "vmOpts:\n  qemu:\n    minimumVersion: 8.2.1\n",
     "vmOpts:\n  qemu:\n    minimumVersion: eight\n", "vmOpts.qemu.minimumVersion", 6, "semver"),
    ("os", "os: Linux\n", "os: Plan9\n", "os", 4, "must be one of"),
    ("arch", "arch: aarch64\n", "arch: i386\n", "arch", 4, "must be one of"),
    ("arch-default", "arch: default\n", "arch: Default\n", "arch", 4, "must be one of"),
    ("vmType", "vmType: qemu\n", "vmType: virtualbox\n", "vmType", 4, "must be one of"),
    ("cpuType-arch", "cpuType:\n  x86_64: qemu64\n", "cpuType:\n  i386: qemu32\n",
     "cpuType.i386", 5, "unsupported arch"),
    ("qemu-cpuType-arch", "vmOpts:\n  qemu:\n    cpuType:\n      aarch64: max\n",
     "vmOpts:\n  qemu:\n    cpuType:\n      m68k: max\n", "vmOpts.qemu.cpuType.m68k", 7,
     "unsupported arch"),
    ("image-arch", "", "- location: /b.img\n  arch: sparc\n", "images[1].arch", 5,
     "must be one of"),
    ("image-location-empty", "- location: /b.img\n", "- location: ''\n",
     "images[1].location", 4, "must not be empty"),
    ("image-digest", f"- location: /b.img\n  digest: {SHA}\n",
     "- location: /b.img\n  digest: sha256:xyz\n", "images[1].digest", 5, "64 lowercase hex"),
    ("image-digest-format", f"- location: /b.img\n  digest: {SHA}\n",
     "- location: /b.img\n  digest: abc-def\n", "images[1].digest", 5, "algorithm:hex"),
    ("image-digest-algo", "- location: /b.img\n  digest: sha512:" + "ab" * 64 + "\n",
     "- location: /b.img\n  digest: md5:" + "ab" * 16 + "\n", "images[1].digest", 5,
     "unsupported digest algorithm"),
    ("kernel-arch", "- location: /b.img\n  arch: aarch64\n  kernel:\n    location: /k\n"
     "    arch: aarch64\n", "- location: /b.img\n  arch: aarch64\n  kernel:\n"
     "    location: /k\n    arch: x86_64\n", "images[1].kernel.arch", 8, "like the image"),
    ("initrd-digest", f"- location: /b.img\n  initrd:\n    location: /i\n    digest: {SHA}\n",
     "- location: /b.img\n  initrd:\n    location: /i\n    digest: sha256:1\n",
     "images[1].initrd.digest", 7, "hex digits"),
    ("cpus", "cpus: 1\n", "cpus: 0\n", "cpus", 4, "at least 1"),
    ("memory-size", "memory: 2.5GiB\n", "memory: lots\n", "memory", 4, "invalid value"),
    ("disk-size", "disk: 100GiB\n", "disk: 100 GBs\n", "disk", 4, "invalid value"),
    ("additionalDisks-name", "additionalDisks:\n- data\n", "additionalDisks:\n- ../etc\n",
     "additionalDisks[0]", 5, "invalid disk name"),
    ("additionalDisks-object", "additionalDisks:\n- name: data\n  format: true\n",
     "additionalDisks:\n- name: 'my disk'\n", "additionalDisks[0].name", 5, "invalid disk name"),
    ("mount-location", "mounts:\n- location: ~/src\n", "mounts:\n- location: src\n",
     "mounts[0].location", 5, "absolute path"),
    ("mount-system-dir", "mounts:\n- location: /srv/data\n", "mounts:\n- location: /usr\n",
     "mounts[0].location", 5, "system path"),
    ("mountPoint-system-dir", "mounts:\n- location: /srv\n  mountPoint: /mnt/srv\n",
     "mounts:\n- location: /srv\n  mountPoint: /etc/\n", "mounts[0].mountPoint", 6,
     "system path"),
    ("mountPoint-tilde", "mounts:\n- location: '~'\n  mountPoint: /mnt/home\n",
     "mounts:\n- location: '~'\n  mountPoint: ~/home\n", "mounts[0].mountPoint", 6,
     'must not start with "~"'),
    ("mountPoint-relative", "mounts:\n- location: '~'\n  mountPoint: '{{.Home}}/x'\n",
     "mounts:\n- location: '~'\n  mountPoint: mnt\n", "mounts[0].mountPoint", 6, "absolute"),
    ("mountPoint-home", "user:\n  home: /home/me.linux\nmounts:\n- location: /data\n",
     "user:\n  home: /home/me.linux\nmounts:\n- location: /data\n"
     "  mountPoint: /home/me.linux\n", "mounts[0].mountPoint", 8, "home"),
    ("9p-msize", "mounts:\n- location: /a\n  9p:\n    msize: 128KiB\n",
     "mounts:\n- location: /a\n  9p:\n    msize: big\n", "mounts[0].9p.msize", 7,
     "invalid value"),
    ("9p-securityModel", "mounts:\n- location: /a\n  9p:\n    securityModel: none\n",
     "mounts:\n- location: /a\n  9p:\n    securityModel: open\n",
     "mounts[0].9p.securityModel", 7, "must be one of"),
    ("9p-protocolVersion", "mounts:\n- location: /a\n  9p:\n    protocolVersion: 9p2000.L\n",
     "mounts:\n- location: /a\n  9p:\n    protocolVersion: 9p3000\n",
     "mounts[0].9p.protocolVersion", 7, "must be one of"),
    ("9p-cache", "mounts:\n- location: /a\n  9p:\n    cache: mmap\n",
     "mounts:\n- location: /a\n  9p:\n    cache: always\n", "mounts[0].9p.cache", 7,
     "must be one of"),
    ("sshfs-sftpDriver", "mounts:\n- location: /a\n  sshfs:\n    sftpDriver: builtin\n",
     "mounts:\n- location: /a\n  sshfs:\n    sftpDriver: ftp\n",
     "mounts[0].sshfs.sftpDriver", 7, "must be one of"),
    ("virtiofs-queueSize", "mounts:\n- location: /a\n  virtiofs:\n    queueSize: 1024\n",
     "mounts:\n- location: /a\n  virtiofs:\n    queueSize: 0\n",
     "mounts[0].virtiofs.queueSize", 7, "at least 1"),
    ("mountType", "mountType: 9p\n", "mountType: nfs\n", "mountType", 4, "must be one of"),
    ("mountType-unsupported", "mountType: 9p\nmountTypesUnsupported: [virtiofs]\n",
     "mountType: 9p\nmountTypesUnsupported: [9p]\n", "mountType", 4, "mountTypesUnsupported"),
    ("mountType-virtiofs-unsupported", "mountType: virtiofs\n",
     "mountType: virtiofs\nmountTypesUnsupported: [virtiofs]\n", "mountType", 4,
     "listed in mountTypesUnsupported"),
    ("mountType-wsl2-on-qemu", "mountType: 9p\n", "vmType: qemu\nmountType: wsl2\n",
     "mountType", 5, "for the QEMU driver"),
    ("ssh-localPort-22", "ssh:\n  localPort: 60022\n", "ssh:\n  localPort: 22\n",
     "ssh.localPort", 5, "must not be 22"),
    ("ssh-localPort-range", "ssh:\n  localPort: 0\n", "ssh:\n  localPort: 70000\n",
     "ssh.localPort", 5, "< 65536"),
    ("ssh-localPort-negative", "ssh:\n  localPort: 2222\n", "ssh:\n  localPort: -1\n",
     "ssh.localPort", 5, "> 0"),
    ("user-name", "user:\n  name: dev_user\n", "user:\n  name: Dev User\n", "user.name", 5,
     "invalid user name"),
    ("user-uid-root", "user:\n  uid: 501\n", "user:\n  uid: 0\n", "user.uid", 5,
     "must not be 0"),
    ("user-uid-range", "user:\n  uid: 1000\n", "user:\n  uid: 4294967296\n", "user.uid", 5,
     "between 1 and"),
    ("user-shell", "user:\n  shell: /bin/bash\n", "user:\n  shell: bash\n", "user.shell", 5,
     "absolute"),
    ("user-home", "user:\n  home: /home/{{.User}}.linux\n", "user:\n  home: home/me\n",
     "user.home", 5, "absolute"),
    ("provision-mode", "provision:\n- mode: boot\n  script: echo hi\n",
     "provision:\n- mode: reboot\n  script: echo hi\n", "provision[0].mode", 5,
     "must be one of"),
    ("provision-script", "provision:\n- script: '#!/bin/sh\n\n    true'\n",
     "provision:\n- mode: user\n", "provision[0]", 5, '"script" must not be empty'),
    ("provision-skipDefault", "provision:\n- mode: dependency\n  script: x\n"
     "  skipDefaultDependencyResolution: true\n", "provision:\n- mode: system\n  script: x\n"
     "  skipDefaultDependencyResolution: true\n", "provision[0].skipDefaultDependencyResolution",
     7, "dependency"),
    ("provision-content-only-data", "provision:\n- mode: data\n  path: /etc/x\n  content: hi\n",
     "provision:\n- mode: system\n  script: x\n  content: hi\n", "provision[0].content", 7,
     'only be set when mode is "data"'),
    ("provision-data-path", "provision:\n- mode: data\n  path: /etc/x\n  content: hi\n",
     "provision:\n- mode: data\n  content: hi\n", "provision[0]", 5, '"path" must be set'),
    ("provision-data-path-absolute", "provision:\n- mode: data\n  path: /etc/x\n  content: hi\n",
     "provision:\n- mode: data\n  path: etc/x\n  content: hi\n", "provision[0].path", 6,
     "absolute"),
    ("provision-data-content", "provision:\n- mode: data\n  path: /etc/x\n  content: ''\n",
     "provision:\n- mode: data\n  path: /etc/x\n", "provision[0]", 5, '"content" must be set'),
    ("provision-data-permissions", "provision:\n- mode: data\n  path: /x\n  content: a\n"
     "  permissions: 644\n", "provision:\n- mode: data\n  path: /x\n  content: a\n"
     "  permissions: rw-r--r--\n", "provision[0].permissions", 8, "octal"),
    ("provision-yq-subset", "provision:\n- mode: yq\n  path: /etc/x.json\n"
     "  expression: '.a.b = [1] | .c += {d: 2}'\n", "provision:\n- mode: yq\n"
     "  path: /etc/x.json\n  expression: .a = .b\n", "provision[0].expression", 7,
     "only literal values"),
    ("provision-yq-format", "provision:\n- mode: yq\n  path: /etc/x.conf\n  format: ini\n"
     "  expression: .S.k = 1\n", "provision:\n- mode: yq\n  path: /etc/x.conf\n"
     "  format: toml\n  expression: .S.k = 1\n", "provision[0].format", 7,
     '"toml" is not supported'),
    ("provision-yq-auto-format", "provision:\n- mode: yq\n  path: /etc/x.ini\n"
     "  expression: .S.k = 1\n", "provision:\n- mode: yq\n  path: /etc/x.xml\n"
     "  expression: .S.k = 1\n", "provision[0].path", 6, "extension picks the format"),
    ("video-vnc", "video:\n  display: vnc\n", "video:\n  display: vnc=0.0.0.0:0\n",
     "video.display", 5, "not supported by limapy"),
    ("video-vnc-display", "video:\n  display: vnc\n  vnc:\n    display: 127.0.0.1:1\n",
     "video:\n  display: vnc\n  vnc:\n    display: 0.0.0.0:1\n", "video.vnc.display", 7,
     "127.0.0.1 only"),
    ("upgradePackages-restricted", "upgradePackages: true\n",
     "upgradePackages: true\nvmOpts:\n  qemu:\n    restrictNetwork: true\n",
     "upgradePackages", 4, "needs the network"),
    ("provision-yq-expression", "provision:\n- mode: yq\n  path: /etc/x.yaml\n"
     "  expression: .a = 1\n", "provision:\n- mode: yq\n  path: /etc/x.yaml\n",
     "provision[0]", 5, '"expression" must be set'),
    ("provision-ansible-playbook", "provision:\n- mode: ansible\n  playbook: site.yaml\n",
     "provision:\n- mode: ansible\n", "provision[0]", 5, '"playbook" must be set'),
    ("provision-playbook-mode", "provision:\n- mode: ansible\n  playbook: site.yaml\n",
     "provision:\n- mode: system\n  script: x\n  playbook: site.yaml\n",
     "provision[0].playbook", 7, 'only be set when mode is "ansible"'),
    ("probe-shebang", "probes:\n- script: |\n    #!/bin/sh\n    true\n",
     "probes:\n- script: |\n    true\n", "probes[0].script", 5, "'#!'"),
    ("probe-mode", "probes:\n- mode: readiness\n  script: '#!/bin/sh'\n",
     "probes:\n- mode: liveness\n  script: '#!/bin/sh'\n", "probes[0].mode", 5,
     "must be one of"),
    ("probe-script-required", "probes:\n- script: '#!/bin/sh'\n",
     "probes:\n- description: nothing\n", "probes[0]", 5, '"script" must be set'),
    ("forward-guestPort-22", "portForwards:\n- guestPort: 80\n",
     "portForwards:\n- guestPort: 22\n", "portForwards[0].guestPort", 5, "must not be 22"),
    ("forward-hostPort-range", "portForwards:\n- guestPort: 80\n  hostPort: 8080\n",
     "portForwards:\n- guestPort: 80\n  hostPort: 65536\n", "portForwards[0].hostPort", 6,
     "< 65536"),
    ("forward-guestPortRange-22", "portForwards:\n- guestPortRange: [4000, 4999]\n",
     "portForwards:\n- guestPortRange: [22, 30]\n", "portForwards[0].guestPortRange[0]", 5,
     "must not be 22"),
    ("forward-guestPort-matches-range", "portForwards:\n- guestPort: 80\n"
     "  guestPortRange: [80, 80]\n", "portForwards:\n- guestPort: 80\n"
     "  guestPortRange: [81, 81]\n", "portForwards[0].guestPort", 5, "must match"),
    ("forward-ordered-range", "portForwards:\n- guestPortRange: [100, 200]\n",
     "portForwards:\n- guestPortRange: [200, 100]\n", "portForwards[0].guestPortRange[1]", 5,
     "greater than or equal"),
    ("forward-host-ordered-range", "portForwards:\n- guestPortRange: [100, 200]\n"
     "  hostPortRange: [1100, 1200]\n", "portForwards:\n- guestPortRange: [100, 200]\n"
     "  hostPortRange: [1200, 1100]\n", "portForwards[0].hostPortRange[1]", 6,
     "greater than or equal"),
    ("forward-equal-length", "portForwards:\n- guestPortRange: [100, 200]\n"
     "  hostPortRange: [1100, 1200]\n", "portForwards:\n- guestPortRange: [100, 200]\n"
     "  hostPortRange: [1100, 1300]\n", "portForwards[0].hostPortRange", 6, "as many ports"),
    ("forward-guestSocket-with-port", "portForwards:\n- guestSocket: /run/x.sock\n"
     "  hostSocket: x.sock\n", "portForwards:\n- guestSocket: /run/x.sock\n"
     "  guestPort: 80\n", "portForwards[0].guestPort", 6, "guestSocket"),
    ("forward-hostSocket-with-port", "portForwards:\n- guestPort: 80\n  hostSocket: x.sock\n",
     "portForwards:\n- guestPort: 80\n  hostPort: 8080\n  hostSocket: x.sock\n",
     "portForwards[0].hostPort", 6, "hostSocket"),
    ("forward-guestSocket-absolute", "portForwards:\n- guestSocket: /run/x.sock\n"
     "  hostSocket: x.sock\n", "portForwards:\n- guestSocket: run/x.sock\n"
     "  hostSocket: x.sock\n", "portForwards[0].guestSocket", 5, "absolute"),
    ("forward-guestSocket-to-range", "portForwards:\n- guestSocket: /run/x.sock\n"
     "  hostSocket: /tmp/x.sock\n", "portForwards:\n- guestSocket: /run/x.sock\n"
     "  hostPortRange: [8080, 8081]\n", "portForwards[0].guestSocket", 5, "single port"),
    ("forward-hostSocket-from-range", "portForwards:\n- guestPort: 80\n  hostSocket: x.sock\n",
     "portForwards:\n- guestPortRange: [80, 81]\n  hostSocket: x.sock\n",
     "portForwards[0].hostSocket", 6, "single port"),
    ("forward-hostSocket-length", "portForwards:\n- guestPort: 80\n  hostSocket: x.sock\n",
     "portForwards:\n- guestPort: 80\n  hostSocket: /" + "s" * 120 + "\n",
     "portForwards[0].hostSocket", 6, "UNIX_PATH_MAX"),
    ("forward-proto", "portForwards:\n- guestPort: 53\n  proto: tcp\n",
     "portForwards:\n- guestPort: 53\n  proto: icmp\n", "portForwards[0].proto", 6,
     "must be one of"),
    # reverse: true with both sockets is valid Lima, but refused by limapy (test_portrules).
    ("forward-reverse", "portForwards:\n- guestSocket: /run/x.sock\n  hostSocket: /tmp/x.sock\n"
     "  reverse: false\n", "portForwards:\n- guestPort: 80\n  reverse: true\n",
     "portForwards[0].reverse", 6, "guestSocket and hostSocket"),
    ("forward-guestIPMustBeZero", "portForwards:\n- guestPort: 80\n  guestIP: 0.0.0.0\n"
     "  guestIPMustBeZero: true\n", "portForwards:\n- guestPort: 80\n  guestIP: 127.0.0.1\n"
     "  guestIPMustBeZero: true\n", "portForwards[0].guestIPMustBeZero", 7, "0.0.0.0"),
    ("forward-hostIP", "portForwards:\n- guestPort: 80\n  hostIP: '::1'\n",
     "portForwards:\n- guestPort: 80\n  hostIP: localhost\n", "portForwards[0].hostIP", 6,
     "not an IP address"),
    ("copyToHost-guest", "copyToHost:\n- guest: /etc/x\n  host: '{{.Dir}}/x'\n",
     "copyToHost:\n- guest: etc/x\n  host: /tmp/x\n", "copyToHost[0].guest", 5, "absolute"),
    ("copyToHost-host", "copyToHost:\n- guest: /etc/x\n  host: /tmp/x\n",
     "copyToHost:\n- guest: /etc/x\n  host: x\n", "copyToHost[0].host", 6, "absolute"),
    ("dns-ip", "dns: [1.1.1.1]\n", "dns: [1.1.1.1, one]\n", "dns[1]", 4, "not an IP"),
    ("dns-hostResolver", "dns: [1.1.1.1]\nhostResolver:\n  enabled: false\n",
     "dns: [1.1.1.1]\nhostResolver:\n  enabled: true\n", "dns", 4, "hostResolver.enabled"),
    ("network-kind", "networks:\n- lima: shared\n", "networks:\n- interface: lima0\n",
     "networks[0]", 5, "must be set"),
    ("network-exclusive", "networks:\n- socket: /var/run/socket_vmnet\n",
     "networks:\n- socket: /var/run/socket_vmnet\n  vzNAT: true\n", "networks[0].vzNAT", 6,
     "mutually exclusive"),
    ("network-mac", "networks:\n- lima: shared\n  macAddress: '52:55:55:12:34:56'\n",
     "networks:\n- lima: shared\n  macAddress: '52:55:55:12:34'\n", "networks[0].macAddress",
     6, "MAC"),
    ("network-interface-length", "networks:\n- lima: shared\n  interface: lima0\n",
     "networks:\n- lima: shared\n  interface: averyveryverylongname\n",
     "networks[0].interface", 6, "16 bytes"),
    ("network-interface-slirp", "networks:\n- lima: shared\n  interface: lima0\n",
     "networks:\n- lima: shared\n  interface: eth0\n", "networks[0].interface", 6, "reserved"),
    ("network-interface-space", "networks:\n- lima: shared\n  interface: lima0\n",
     "networks:\n- lima: shared\n  interface: 'li ma'\n", "networks[0].interface", 6,
     "whitespace"),
    ("network-interface-unique", "networks:\n- lima: shared\n  interface: lima0\n"
     "- lima: bridged\n  interface: lima1\n", "networks:\n- lima: shared\n  interface: lima0\n"
     "- lima: bridged\n  interface: lima0\n", "networks[1].interface", 8, "already used"),
    ("param-name", "param:\n  Key: v\nprovision:\n- script: echo {{.Param.Key}}\n",
     "param:\n  _Key: v\nprovision:\n- script: echo {{.Param._Key}}\n", "param._Key", 5,
     "invalid name"),
    ("param-unused", "param:\n  Key: v\nprobes:\n- script: \"#!/bin/sh\\necho $PARAM_Key\"\n",
     "param:\n  Key: v\nprobes:\n- script: \"#!/bin/sh\\necho $PARAM_Keys\"\n", "param.Key", 5,
     "not used"),
    ("param-unprintable", "param:\n  Key: \"a\\tb\"\nmounts:\n- location: '/x/{{.Param.Key}}'\n",
     "param:\n  Key: \"a\\u0001b\"\nmounts:\n- location: '/x/{{.Param.Key}}'\n", "param.Key",
     5, "unprintable"),
    ("containerd-archive", f"containerd:\n  archives:\n  - location: /n.tgz\n    digest: {SHA}\n",
     "containerd:\n  archives:\n  - location: /n.tgz\n    digest: sha256:00\n",
     "containerd.archives[0].digest", 7, "hex digits"),
    ("firmware-image", "firmware:\n  images:\n  - location: /edk2.fd\n    vmType: qemu\n",
     "firmware:\n  images:\n  - location: /edk2.fd\n    vmType: bhyve\n",
     "firmware.images[0].vmType", 7, "must be one of"),
    # Lima 2.2's fields: checked as Lima checks them, refused where limapy cannot do them.
    ("passwordlessSudo", "user:\n  passwordlessSudo: true\n",
     "user:\n  passwordlessSudo: false\n", "user.passwordlessSudo", 5, "not supported"),
    ("audio-interface", "audio:\n  interface: virtio\n", "audio:\n  interface: ac97\n",
     "audio.interface", 5, 'must be one of "", "hda", "virtio"'),
    ("tpm", "tpm: false\n", "tpm: true\n", "tpm", 4, "needs swtpm"),
    ("tpm-enabled", "tpm:\n  enabled: false\n", "tpm:\n  enabled: true\n", "tpm", 4,
     "needs swtpm"),
    ("osOpts", "osOpts: {}\n", "osOpts:\n  Windows:\n    virtioWin: []\n", "osOpts", 4,
     "Windows guests only"),
]


UNSUPPORTED_NETWORK = "is not supported by limapy: guests get QEMU user networking"


@pytest.mark.parametrize(("good", "bad", "path", "line", "fragment"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule(good: str, bad: str, path: str, line: int, fragment: str) -> None:
    # networks[] shapes are checked as Lima checks them, and then refused as a whole
    # (test_what_limapy_cannot_drive_is_refused): that refusal is not what these test.
    assert [p for p in errors(good) if UNSUPPORTED_NETWORK not in p.message] == [], \
        "the passing document must have no errors"
    found = errors(bad)
    matching = [p for p in found if p.path == path and fragment in p.message]
    assert matching, f"expected {path}: ...{fragment}... in {[str(p) for p in found]}"
    assert matching[0].line == line
    assert matching[0].file == "t.yaml"
    assert str(matching[0]).startswith(f"t.yaml:{line}: {path}: ")


@pytest.mark.parametrize("doc", [
    "mountType: virtiofs\nmounts:\n- location: /a\n  writable: true\n",
    "vmType: qemu\nmountType: virtiofs\n",
    "mountInotify: true\nmounts:\n- location: /a\n  writable: true\n",
    "mountType: 9p\nmountInotify: true\n",
])
def test_virtiofs_and_mount_inotify_are_accepted(doc: str) -> None:
    """Both work now (virtiofsd's presence is checked when the instance starts)."""
    assert errors(doc) == []


def test_images_are_required() -> None:
    found = errors("cpus: 2\n", base="")
    assert [str(p) for p in found] == ["t.yaml:1: images: at least one image must be set"]
    assert errors("images: []\n", base="")[0].line == 1


def test_ext_vmtype_needs_no_image_like_lima() -> None:
    # Lima's experimental/raspberrypi template: an existing machine reached by ssh.address.
    doc = "vmType: ext\narch: aarch64\nssh:\n  address: pi.local\n"
    # no image needed, but limapy does not drive an existing machine: only that is said
    assert [(p.path, "drives QEMU only" in p.message) for p in problems(doc, base="")] == [
        ("vmType", True)]
    assert [p.path for p in errors("vmType: qemu\n", base="")] == ["images"]


def test_filled_documents_require_image_arch() -> None:
    doc = "images:\n- location: /a.img\n"
    assert errors(doc, base="") == []
    assert [p.path for p in errors(doc, base="", filled=True)] == ["images[0].arch"]


def test_unused_param_is_not_checked_on_filled_documents() -> None:
    doc = "param:\n  Key: v\n"  # after fill, {{.Param.Key}} has been expanded away
    assert [p.path for p in errors(doc)] == ["param.Key"]
    assert errors(doc, filled=True) == []


def test_templated_values_are_not_judged_before_expansion() -> None:
    doc = ("mounts:\n- location: '{{.Dir}}/share'\n  mountPoint: '{{.Home}}/share'\n"
           "portForwards:\n- guestSocket: '{{.Home}}/x.sock'\n  hostSocket: '{{.Dir}}/x.sock'\n")
    assert errors(doc) == []


@pytest.mark.parametrize(("doc", "path", "fragment"), [
    ("arch: riscv64\n", "arch", "experimental"),
    ("audio:\n  device: pa\n", "audio.device", "has no effect"),
    ("nestedVirtualization: true\n", "nestedVirtualization", "no effect with QEMU"),
    ("vmOpts:\n  qemu:\n    minimumVersion: 8.0.0\n", "vmOpts.qemu.minimumVersion",
     "not checked"),
    ("provision:\n- script: echo $LIMA_CIDATA_USER\n", "provision[0].script", "LIMA_CIDATA"),
    ("provision:\n- mode: ansible\n  playbook: x.yaml\n", "provision[0].mode", "deprecated"),
])
def test_warnings(doc: str, path: str, fragment: str) -> None:
    found = problems(doc)
    assert [p.path for p in found if not p.warning] == []
    assert any(p.warning and p.path == path and fragment in p.message for p in found)


def test_all_problems_are_reported_together_and_sorted() -> None:
    found = errors("cpus: 0\nssh:\n  localPort: 22\nos: Plan9\n")
    assert [(p.line, p.path) for p in found] == [(4, "cpus"), (6, "ssh.localPort"), (7, "os")]


def test_missing_lines_fall_back_to_the_nearest_parent() -> None:
    lines = {("portForwards",): ("base.yaml", 7), (): ("main.yaml", 1)}
    assert line_of(lines, ("portForwards", 3, "guestPort"), "main.yaml") == ("base.yaml", 7)
    assert line_of({}, ("cpus",), "main.yaml") == ("main.yaml", 0)
    data = {"images": [{"location": "/a"}], "portForwards": [{"guestPort": 22}]}
    [problem] = check(data, lines, "main.yaml")
    assert str(problem) == "base.yaml:7: portForwards[0].guestPort: must not be 22"


def test_a_non_mapping_is_one_problem() -> None:
    [problem] = check(["a"], {}, "x.yaml")  # type: ignore[arg-type]
    assert "mapping" in problem.message


@pytest.mark.unit
@pytest.mark.parametrize(("extra", "where", "words"), [
    ("vmType: vz\n", "vmType", "drives QEMU only"),
    ("vmType: krunkit\n", "vmType", "drives QEMU only"),
    ("networks:\n- lima: shared\n", "networks[0].lima", "QEMU user networking"),
    ("networks:\n- socket: /var/run/socket_vmnet\n", "networks[0].socket", "not supported"),
    ("networks:\n- vzNAT: true\n", "networks[0].vzNAT", "not supported"),
])
def test_what_limapy_cannot_drive_is_refused(extra: str, where: str, words: str) -> None:
    from lima import schemas
    from lima.errors import SpecError

    doc = "images:\n- location: /x.qcow2\n  arch: x86_64\n" + extra
    with pytest.raises(SpecError) as info:
        schemas.resolve("-", name="t", stdin=doc.encode())
    assert f"{where}:" in str(info.value) and words in str(info.value)


@pytest.mark.unit
def test_another_drivers_vmopts_get_a_warning_and_qemu_is_fine() -> None:
    from lima import schemas

    doc = ("images:\n- location: /x.qcow2\n  arch: x86_64\nvmType: qemu\n"
           "vmOpts:\n  vz:\n    rosetta:\n      enabled: true\n  krunkit: {}\n")
    resolved = schemas.resolve("-", name="t", stdin=doc.encode())
    texts = [str(w) for w in resolved.warnings]
    assert any("vmOpts.vz" in t and "no effect" in t for t in texts)
    assert not any("vmOpts.krunkit" in t and "QEMU only" in t for t in texts)  # nothing set
