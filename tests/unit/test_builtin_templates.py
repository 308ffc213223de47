"""Every built-in template and every example resolves; so do Lima's own templates.

Lima's templates at v2.2.0 are test data beside the project (../shared/lima-templates-v2.2.0,
never copied into it; CI provides it and the test fails there without it): every Linux
template must resolve and fill, or fail with the one clear line of `minimumLimaVersion`
(limapy follows Lima 2.2.0, lima.LIMA_COMPAT_VERSION); other guest OSes may fail with one
clear line. The constructs those templates use (template:// bases, relative and nested
bases, symlinked names, {{ }} fields, param maps) are also covered by small equivalents
below, so this runs always.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lima import paths, schemas
from lima.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
BUILTIN = paths.builtin_templates_dir()
BUILTIN_NAMES = sorted(
    p.relative_to(BUILTIN).with_suffix("").as_posix()
    for p in BUILTIN.rglob("*.yaml")
    if not p.relative_to(BUILTIN).as_posix().startswith("_")
)
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_the_expected_builtins_exist() -> None:
    for name in ("default", "debian-12", "debian-13", "ubuntu-24.04", "fedora", "alpine",
                 "archlinux", "debian-12-local", "tiny"):
        assert name in BUILTIN_NAMES


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_builtin_template_resolves(name: str) -> None:
    resolved = schemas.resolve(f"template:{name}")
    assert resolved.spec.images, name
    assert "base" not in resolved.document.data
    # The stored form round-trips: dumping and resolving again gives the same spec.
    again = schemas.resolve("-", name=resolved.spec.name,
                            stdin=schemas.dump_yaml(resolved.document.data).encode())
    assert schemas.generation(again.filled) == schemas.generation(resolved.filled)


def test_default_template_is_limas_default() -> None:
    spec = schemas.resolve("template:default").spec
    arches = {i.arch for i in spec.images if i.digest}
    assert {"x86_64", "aarch64"} <= arches
    assert all(i.location.startswith("https://cloud-images.ubuntu.com/") for i in spec.images)
    home = next(m for m in spec.mounts if m.location == str(Path.home()))
    assert home.writable is False
    assert any(m.location == "/tmp/lima" and m.writable for m in spec.mounts)


def test_local_templates_use_images_built_here() -> None:
    local = schemas.resolve("template:debian-12-local").spec
    assert [(i.location, i.arch) for i in local.images] == [("build:debian-12", "x86_64")]
    tiny = schemas.resolve("template:tiny").spec
    assert [(i.location, i.arch) for i in tiny.images] == [("build:tiny", "x86_64")]
    assert tiny.cpus == 1 and tiny.memory <= 512 << 20 and tiny.mounts == ()
    assert tiny.qemu.restrict_network and not tiny.containerd_user


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_resolves(example: Path) -> None:
    spec = schemas.resolve(str(example)).spec
    assert spec.qemu.restrict_network is True
    assert spec.ssh.local_port == 0
    assert spec.provision and spec.provision[0].mode == "system"


def test_main_example() -> None:
    spec = schemas.resolve(str(ROOT / "examples" / "default.yaml")).spec
    assert spec.name == "default"
    assert (spec.cpus, spec.memory, spec.disk) == (2, 2 << 30, 10 << 30)
    assert spec.images[0].location == "build:debian-12"
    home = next(m for m in spec.mounts if m.location == str(Path.home()))
    assert home.writable is False
    assert "/etc/limapy-provisioned" in (spec.provision[0].script or "")
    assert "{{" not in (spec.provision[0].script or "")


# -- Lima's own templates, v2.2.0 ------------------------------------------------------------

# Test data beside the project, never copied into it: CI clones the repository next to a
# copy of shared/ (see shared/lima-templates-v2.2.0/SOURCE.md).
LIMA_DIR = ROOT.parent / "shared" / "lima-templates-v2.2.0"
NON_LINUX = ("macos", "freebsd", "windows", "wsl2")
# Files in Lima's folder that are not lima.yaml documents (ansible.yaml's playbook).
NOT_TEMPLATES = ("ansible/",)
# The Linux templates limapy refuses, each with the words of its one-line refusal and why.
# limapy follows Lima 2.2.0 (lima.LIMA_COMPAT_VERSION): no template is refused for asking
# for a newer Lima, and none may be.
REFUSED_LINUX = {
    # Its base is `fedora-rawhide:...`, which Lima resolves by running a plugin program
    # (`limactl-url-fedora-rawhide`) that is not part of Lima either; limapy runs none.
    "experimental/fedora-rawhide": "limactl-url-",
}


def _lima_names() -> list[str]:
    if not LIMA_DIR.is_dir():
        return []
    return sorted(
        p.relative_to(LIMA_DIR).with_suffix("").as_posix()
        for p in LIMA_DIR.rglob("*.yaml")
        if not p.relative_to(LIMA_DIR).as_posix().startswith(("_", *NOT_TEMPLATES))
    )


def test_lima_templates_are_there_in_ci() -> None:
    """In CI the templates must be there: a missing copy must fail, not skip quietly."""
    if not LIMA_DIR.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{LIMA_DIR} is missing: CI must provide shared/ beside the repository")
        pytest.skip(f"no copy of Lima's templates at {LIMA_DIR}")
    assert len(_lima_names()) >= 80


@pytest.fixture(scope="module")
def lima_templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The templates with their symlinks back. The copy holds Lima's symlinks (ubuntu.yaml
    -> ubuntu-25.10.yaml, _images/ubuntu-lts.yaml, ...) as git stores them when a checkout
    makes no symlinks: a small file whose text is the target's path. This copy, outside
    the project, makes them links again."""
    dest = tmp_path_factory.mktemp("lima-templates")
    shutil.copytree(LIMA_DIR, dest, dirs_exist_ok=True)
    for path in dest.rglob("*.yaml"):
        text = path.read_text().strip() if path.stat().st_size < 256 else ""
        if text and "\n" not in text and ":" not in text and (path.parent / text).is_file():
            path.unlink()
            path.symlink_to(text)
    return dest


@pytest.mark.parametrize("name", _lima_names())
def test_lima_template_resolves(name: str, lima_templates: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIMA_TEMPLATES_PATH", str(lima_templates))
    try:
        resolved = schemas.resolve(f"template:{name}", name="check")
    except SpecError as exc:
        errors = [p for p in exc.problems if not p.warning]
        assert len(errors) == 1, str(exc)  # always one clear line
        (error,) = errors
        if any(word in name for word in NON_LINUX):
            return  # another guest OS: refused in one line
        # A Linux template fails only when the table above says so, for its reason.
        assert name in REFUSED_LINUX, str(exc)
        assert REFUSED_LINUX[name] in error.message, str(exc)
        return
    assert name not in REFUSED_LINUX, "resolves now: remove it from REFUSED_LINUX"
    # `vmType: ext` (an external machine) boots no image, as in Lima.
    assert resolved.spec.images or resolved.filled.get("vmType") == "ext"
    assert resolved.filled["arch"] and resolved.filled["cpus"]  # defaults filled in
    assert not [w for w in resolved.warnings if "cannot process the value" in w.message]


# -- small equivalents of the constructs Lima's templates use -----------------------------


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def lima_like(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "templates"
    _write(root, "_images/distro-1.yaml",
           "images:\n- location: https://example.invalid/d-amd64.qcow2\n  arch: x86_64\n"
           "  digest: sha256:" + "a" * 64 + "\n"
           "- location: https://example.invalid/d-arm64.qcow2\n  arch: aarch64\n"
           "mountTypesUnsupported: [9p]\n")
    (root / "_images" / "distro.yaml").symlink_to("distro-1.yaml")
    _write(root, "_default/mounts.yaml",
           "mounts:\n- location: \"~\"\n- location: \"/tmp/lima\"\n  writable: true\n")
    _write(root, "plain.yaml",
           "minimumLimaVersion: 1.1.0\n\nbase:\n- template://_images/distro\n"
           "- template://_default/mounts\n")
    _write(root, "tool.yaml",
           "minimumLimaVersion: 1.1.0\nbase:\n- template://_images/distro\n"
           "- template://_default/mounts\n"
           "containerd:\n  system: false\n  user: false\n"
           "provision:\n- mode: system\n  script: |\n    #!/bin/sh\n    echo {{.Param.flag}}\n"
           "- mode: user\n  script: |\n    #!/bin/bash\n    mkdir -p {{.Home}}/.config\n"
           "probes:\n- script: |\n    #!/bin/bash\n    true\n  hint: See the log\n"
           "hostResolver:\n  hosts:\n    host.tool.internal: host.lima.internal\n"
           "portForwards:\n- guestSocket: \"/run/user/{{.UID}}/tool.sock\"\n"
           "  hostSocket: \"{{.Dir}}/sock/tool.sock\"\n"
           "message: |\n  Run: tool --host unix://{{.Dir}}/sock/tool.sock\n"
           "param:\n  flag: \"on\"\n")
    _write(root, "nomounts.yaml",
           "minimumLimaVersion: 2.0.0\nbase: template:_images/distro-1\nmounts: []\n"
           "containerd:\n  system: true\n  user: false\n")
    monkeypatch.setenv("LIMA_TEMPLATES_PATH", str(root))
    return root


def test_lima_like_plain_template(lima_like: Path) -> None:
    resolved = schemas.resolve("template:plain")
    spec = resolved.spec
    assert len(spec.images) == 2
    assert [m.location for m in spec.mounts] == [str(Path.home()), "/tmp/lima"]
    assert resolved.filled["mountTypesUnsupported"] == ["9p"]


def test_lima_like_tool_template(lima_like: Path) -> None:
    spec = schemas.resolve("template:tool", name="tool").spec
    assert spec.provision[0].script == "#!/bin/sh\necho on\n"
    assert spec.provision[1].script == f"#!/bin/bash\nmkdir -p {spec.user.home}/.config\n"
    forward = spec.port_forwards[0]
    assert forward.guest_socket == f"/run/user/{spec.user.uid}/tool.sock"
    assert forward.host_socket == str(paths.instance_dir("tool") / "sock" / "tool.sock")
    assert spec.probes[0].hint == "See the log"


def test_lima_like_template_without_mounts(lima_like: Path) -> None:
    spec = schemas.resolve("template:nomounts").spec
    assert spec.mounts == () and spec.containerd_system
