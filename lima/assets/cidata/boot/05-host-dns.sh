#!/bin/sh
# hostResolver: the guest resolves names through the host agent's DNS server, which
# answers host.lima.internal, lima-NAME and hostResolver.hosts (see
# lima/drivers/hostagent/dns.py). QEMU's guestfwd carries only TCP, hence `use-vc`, and
# glibc's resolver is pointed at it directly (systemd-resolved has no TCP-only mode).
# Without LIMA_CIDATA_HOST_RESOLVER (hostResolver.enabled: false, or `dns:` set) a file
# this script wrote earlier is replaced by the system's own again. As Lima does,
# host.lima.internal is also put in /etc/hosts, so it resolves either way.
# Shell builtins where they do: under TCG each program started costs the guest tens of
# ms of CPU while cloud-init's last stages run. On a boot, the one program is mv.
# Overrides (tests): LIMA_BOOT_HOSTS (/etc/hosts), LIMA_BOOT_RESOLV_CONF
# (/etc/resolv.conf), LIMA_BOOT_RESOLVED_STUB (/run/systemd/resolve/stub-resolv.conf).

# Root only: boot.sh's effective uid (LIMA_BOOT_UID, read from /proc), else id(1).
[ "${LIMA_BOOT_UID:-$(id -u)}" -eq 0 ] || exit 0

hosts_file="${LIMA_BOOT_HOSTS:-/etc/hosts}"
conf="${LIMA_BOOT_RESOLV_CONF:-/etc/resolv.conf}"
stub="${LIMA_BOOT_RESOLVED_STUB:-/run/systemd/resolve/stub-resolv.conf}"
marker="# limapy hostResolver"
nl="
"

if [ -n "${LIMA_CIDATA_SLIRP_GATEWAY:-}" ]; then
	# Every line but host.lima.internal's, without trailing empty lines (as
	# `$(grep -v ...)` gave them), then its line. Written in place, its inode kept.
	hosts=""
	while IFS= read -r line || [ -n "$line" ]; do
		case "$line" in *host.lima.internal*) ;; *) hosts="$hosts$line$nl" ;; esac
	done 2>/dev/null <"$hosts_file"
	while :; do
		case "$hosts" in *"$nl") hosts="${hosts%"$nl"}" ;; *) break ;; esac
	done
	printf '%s\n%s\thost.lima.internal\n' "$hosts" "$LIMA_CIDATA_SLIRP_GATEWAY" >"$hosts_file"
fi

if [ -z "${LIMA_CIDATA_HOST_RESOLVER:-}" ]; then
	ours=""
	while IFS= read -r line || [ -n "$line" ]; do
		case "$line" in "$marker"*) ours=1 && break ;; esac
	done 2>/dev/null <"$conf"
	[ -n "$ours" ] || exit 0
	rm -f "$conf"
	if [ -f "$stub" ]; then
		ln -s "${LIMA_BOOT_RESOLVED_STUB:-../run/systemd/resolve/stub-resolv.conf}" "$conf"
	else
		echo "nameserver ${LIMA_CIDATA_SLIRP_DNS:-}" >"$conf"
	fi
	exit 0
fi

# Mode 644 by the umask, not chmod (nothing after it creates a file). A symlink
# (systemd-resolved's stub) is replaced by the file, not written through: rename(2)
# replaces the link itself.
tmp="$conf.lima.$$"
umask 022
{
	echo "$marker: the host agent's DNS server, over TCP (QEMU guestfwd)"
	echo "nameserver $LIMA_CIDATA_HOST_RESOLVER"
	echo "options use-vc"
} >"$tmp" || exit 1
mv -f "$tmp" "$conf"
