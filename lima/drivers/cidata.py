"""Build cidata.iso, the NoCloud seed of one boot (label `cidata`, Rock Ridge names).

Called by the controller's build_cidata step before every boot, with a fresh IID
(chosen by `lima.states.decide.new_iid`), lima.env's LIMA_CIDATA_IID as in Lima: boot.sh's
markers hold it, so they can be told apart per boot. meta-data's instance-id is not that
IID but `cloud_init_id`, a digest of what cloud-init reads from the seed: cloud-init
re-runs its once-per-instance modules (users, ssh host keys, passwords, network) when the
spec changes what it is given, not on every start as under Lima, whose seed uses one id for
both. A start with nothing changed skips 1-2 s of guest work under TCG, and the guest keeps
its ssh host keys from one start to the next.
The file contents come from `lima.drivers.cloudconfig` (pure) and the shipped
assets in lima/assets/cidata; this module only lays them out and writes the ISO.

Layout (base names <= 30 characters, checked):
  user-data meta-data network-config lima.env param.env etc_environment boot.sh
  fstab                the 9p/virtiofs shares' lines, as cloud-init's mounts module
                       writes them (only with such mounts; boot.sh, not cloud-init, puts
                       them in /etc/fstab and mounts them)
  boot/NN-*            our boot scripts, then `mode: boot` provision scripts
  util/*               helpers put on the guest's PATH by boot.sh (assets)
  provision.dependency/NNNNNNNN, provision.data/NNNNNNNN{,.sh},
  provision.yq/NNNNNNNN{,.json} (the expression, and its program for util/lima-yq),
  provision.system/NNNNNNNN, provision.user/NNNNNNNN   (NNNNNNNN = index in provision)
  provision.labels     "<path>\t<label>" per step, how boot.sh names a failing one
`mode: ansible` steps are not on the seed: the host agent runs them (drivers/postboot.py).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pycdlib

from lima import paths
from lima.drivers import cloudconfig
from lima.drivers.identity import Identity, authorized_keys
from lima.errors import SpecError
from lima.fsutil import atomic_write, atomic_writer
from lima.schemas.spec import InstanceSpec

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "cidata"
MAX_NAME = 30  # Lima's limit on seed file names (kept for guests reading plain ISO9660)
EXEC_MODE = 0o100755
FILE_MODE = 0o100644
DIR_MODE = 0o040755


# Where `mode: boot` provision scripts go in boot/: after our own 00-49 scripts.
_BOOT_PROVISION_PREFIX = "50-provision"


@dataclass(frozen=True)
class SeedFile:
    path: str  # "boot/10-hostname.sh"
    data: bytes
    executable: bool = False


def parse_boot_failed(text: str) -> tuple[str, list[str]]:
    """Split /run/lima-boot-failed into (IID, ["<script>: exit N", ...])."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "", []
    return lines[0].strip(), lines[1:]


def seed_files(
    spec: InstanceSpec,
    *,
    iid: str,
    keys: list[str],
    host_env: Mapping[str, str],
    host_home: str | None,
) -> list[SeedFile]:
    """Every file of the seed, in a stable order (pure apart from reading the assets)."""
    certs = read_ca_certs(spec)
    user_data = cloudconfig.user_data(spec, keys=keys, host_home=host_home, ca_certs=certs)
    network = cloudconfig.network_config(spec)
    meta = cloudconfig.meta_data(spec, instance_id=cloud_init_id(spec, user_data, network))
    files = [
        SeedFile("user-data", _b(user_data)),
        SeedFile("meta-data", _b(meta)),
        SeedFile("network-config", _b(network)),
        SeedFile("lima.env", _b(cloudconfig.lima_env(spec, iid=iid, host_home=host_home))),
        SeedFile("param.env", _b(cloudconfig.param_env(spec))),
        SeedFile("etc_environment", _b(cloudconfig.etc_environment(spec, host_env))),
        SeedFile("boot.sh", (ASSETS / "boot.sh").read_bytes(), executable=True),
    ]
    shares = cloudconfig.fstab(spec, host_home)
    if shares:
        files.append(SeedFile("fstab", _b(shares)))
    for sub in ("boot", "util"):
        folder = ASSETS / sub
        if folder.is_dir():
            for asset in sorted(folder.iterdir()):
                if asset.is_file():
                    files.append(SeedFile(f"{sub}/{asset.name}", asset.read_bytes(), True))
    files += _provision_files(spec)
    return files


def cloud_init_id(spec: InstanceSpec, user_data: str, network_config: str) -> str:
    """meta-data's instance-id: the same for two seeds that give cloud-init the same
    user-data, network-config and hostname, another as soon as one of them differs."""
    digest = hashlib.sha256()
    for part in (cloudconfig.hostname(spec), user_data, network_config):
        digest.update(_b(part) + b"\0")
    return f"iid-seed-{digest.hexdigest()[:16]}"


def _provision_files(spec: InstanceSpec) -> list[SeedFile]:
    out: list[SeedFile] = []
    params = spec.param
    for i, p in enumerate(spec.provision):
        where = f"provision[{i}]"
        num = f"{i:08d}"
        if p.mode in ("system", "user", "dependency", "boot"):
            if p.script is None:
                raise SpecError(f"{where}: mode {p.mode} needs a script")
            script = _b(cloudconfig.expand_params(p.script, params, what=where))
            if p.mode == "boot":
                out.append(SeedFile(f"boot/{_BOOT_PROVISION_PREFIX}-{num}", script, True))
            else:
                out.append(SeedFile(f"provision.{p.mode}/{num}", script, True))
        elif p.mode == "data":
            content = cloudconfig.expand_params(p.content or "", params, what=where)
            path = cloudconfig.expand_params(p.path or "", params, what=where)
            writer = cloudconfig.data_writer_script(replace(p, path=path), i)
            out.append(SeedFile(f"provision.data/{num}", _b(content)))
            out.append(SeedFile(f"provision.data/{num}.sh", _b(writer), True))
        elif p.mode == "yq":
            expression = cloudconfig.expand_params(p.expression or "", params, what=where)
            yq = replace(p, expression=expression)
            cloudconfig.yq_format(yq, i)  # an unsupported format fails the build, by name
            out.append(SeedFile(f"provision.yq/{num}", _b(expression)))
            out.append(SeedFile(f"provision.yq/{num}.json", _b(cloudconfig.yq_program(yq, i))))
        elif p.mode == "ansible":
            continue  # run from the host once the guest is up (lima.drivers.postboot)
        else:
            raise SpecError(f"{where}.mode: unknown provision mode {p.mode!r}")
    if spec.provision:
        out.append(SeedFile("provision.labels", _b(_labels(spec, out))))
    return out


def _labels(spec: InstanceSpec, files: list[SeedFile]) -> str:
    """provision.labels: "<seed path>\t<label>" per runnable file, so that boot.sh names a
    failing step the way lima.yaml does (cloudconfig.provision_label)."""
    lines = []
    for f in files:
        base = f.path.rsplit("/", 1)[-1]
        digits = base.split(".")[0].rsplit("-", 1)[-1]
        if not digits.isdigit() or f.path.endswith((".json",)) or not (
                f.executable or f.path.startswith("provision.yq/")):
            continue
        i = int(digits)
        step = cloudconfig.expanded(spec.provision[i], spec.param, i)
        lines.append(f"{f.path}\t{cloudconfig.provision_label(step, i)}\n")
    return "".join(lines)


def read_ca_certs(spec: InstanceSpec) -> list[str]:
    """The PEM texts of caCerts.files (read now, on the host, as Lima does) then
    caCerts.certs. A file that cannot be read is a SpecError naming it."""
    ca = spec.raw.get("caCerts")
    if not isinstance(ca, dict):
        return []
    out: list[str] = []
    for i, name in enumerate(ca.get("files") or []):
        path = Path(os.path.expanduser(str(name)))
        try:
            out.append(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(f"caCerts.files[{i}]: cannot read {path}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    out += [str(c) for c in ca.get("certs") or []]
    return out


def _b(text: str) -> bytes:
    return text.encode()


def build_cidata(
    spec: InstanceSpec,
    inst_dir: Path,
    *,
    iid: str,
    identity: Identity,
    host_env: Mapping[str, str] | None = None,
) -> Path:
    """Write inst_dir/cidata.iso (atomically) and inst_dir/cloud-config.yaml; return the ISO.

    `identity` is the one from `ensure_identity()`; ~/.ssh keys are added when the
    spec asks. `host_env` defaults to os.environ (proxy variables).
    """
    env = os.environ if host_env is None else host_env
    host_home = str(Path.home())
    keys = authorized_keys(spec, identity=identity)
    files = seed_files(spec, iid=iid, keys=keys, host_env=env, host_home=host_home)
    iso_path = inst_dir / paths.CIDATA_ISO
    write_iso(files, iso_path)
    reference = cloudconfig.user_data(spec, keys=keys, boot_hook=False, host_home=host_home,
                                      ca_certs=read_ca_certs(spec))
    atomic_write(inst_dir / paths.CLOUD_CONFIG, reference, mode=0o444)
    return iso_path


def write_iso(files: list[SeedFile], dest: Path) -> None:
    """Pack `files` into an ISO9660 + Rock Ridge + Joliet image labelled `cidata`."""
    for f in files:
        for part in f.path.split("/"):
            if len(part) > MAX_NAME:
                raise SpecError(
                    f"cidata: file name {part!r} ({f.path}) is {len(part)} characters long; "
                    f"the seed allows at most {MAX_NAME}"
                )
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="cidata", rock_ridge="1.09", joliet=3)
    names = _IsoNames()
    made_dirs: set[str] = set()
    try:
        for f in files:
            parent, _, base = f.path.rpartition("/")
            if parent and parent not in made_dirs:
                iso.add_directory(
                    names.dir_path(parent),
                    rr_name=parent,
                    joliet_path="/" + parent,
                    file_mode=DIR_MODE,
                )
                made_dirs.add(parent)
            iso.add_fp(
                io.BytesIO(f.data),
                len(f.data),
                names.file_path(parent, base),
                rr_name=base,
                joliet_path="/" + f.path,
                file_mode=EXEC_MODE if f.executable else FILE_MODE,
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_writer(dest) as out:
            iso.write_fp(out)
    finally:
        iso.close()


class _IsoNames:
    """Plain ISO9660 names (level 3: d-characters, one dot, <= 30 chars), unique per dir."""

    _BAD = re.compile(r"[^A-Z0-9_]")

    def __init__(self) -> None:
        self._dirs: dict[str, str] = {}
        self._taken: dict[str, set[str]] = {}

    def dir_path(self, rr_dir: str) -> str:
        if rr_dir not in self._dirs:
            name = self._unique("", self._BAD.sub("_", rr_dir.upper())[:MAX_NAME], "")
            self._dirs[rr_dir] = "/" + name
        return self._dirs[rr_dir]

    def file_path(self, rr_dir: str, base: str) -> str:
        stem, dot, ext = base.rpartition(".")
        if not dot:
            stem, ext = base, ""
        stem = self._BAD.sub("_", stem.upper()) or "_"
        ext = self._BAD.sub("_", ext.upper())
        room = MAX_NAME - len(ext) - 1
        name = self._unique(rr_dir, stem[:room], ext)
        prefix = self._dirs[rr_dir] if rr_dir else ""
        return f"{prefix}/{name}.{ext};1"

    def _unique(self, where: str, stem: str, ext: str) -> str:
        taken = self._taken.setdefault(where, set())
        candidate, n = stem, 0
        while f"{candidate}.{ext}" in taken:
            n += 1
            suffix = f"_{n}"
            candidate = stem[: MAX_NAME - len(ext) - 1 - len(suffix)] + suffix
        taken.add(f"{candidate}.{ext}")
        return candidate
