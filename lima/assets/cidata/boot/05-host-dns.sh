#!/bin/sh
# hostResolver: the guest resolves names through the host agent's DNS server, which
# answers host.lima.internal, lima-NAME and hostResolver.hosts (see
# lima/drivers/hostagent/dns.py). QEMU's guestfwd carries only TCP, hence `use-vc`, and
# glibc's resolver is pointed at it directly (systemd-resolved has no TCP-only mode).
# Without LIMA_CIDATA_HOST_RESOLVER (hostResolver.enabled: false, or `dns:` set) a file
# this script wrote earlier is replaced by the system's own again. As Lima does,
# host.lima.internal is also put in /etc/hosts, so it resolves either way.
[ "$(id -u)" -eq 0 ] || exit 0
if [ -n "${LIMA_CIDATA_SLIRP_GATEWAY:-}" ]; then
	hosts=$(grep -v "host\.lima\.internal" /etc/hosts 2>/dev/null)
	printf '%s\n%s\thost.lima.internal\n' "$hosts" "$LIMA_CIDATA_SLIRP_GATEWAY" >/etc/hosts.lima
	cat /etc/hosts.lima >/etc/hosts && rm -f /etc/hosts.lima
fi
conf=/etc/resolv.conf
marker="# limapy hostResolver"
stub=/run/systemd/resolve/stub-resolv.conf

if [ -z "${LIMA_CIDATA_HOST_RESOLVER:-}" ]; then
	grep -qs "^$marker" "$conf" || exit 0
	rm -f "$conf"
	if [ -f "$stub" ]; then
		ln -s ../run/systemd/resolve/stub-resolv.conf "$conf"
	else
		echo "nameserver ${LIMA_CIDATA_SLIRP_DNS:-}" >"$conf"
	fi
	exit 0
fi

tmp="$conf.lima.$$"
{
	echo "$marker: the host agent's DNS server, over TCP (QEMU guestfwd)"
	echo "nameserver $LIMA_CIDATA_HOST_RESOLVER"
	echo "options use-vc"
} >"$tmp" && chmod 644 "$tmp" || exit 1
# A symlink (systemd-resolved's stub) is replaced by the file, not written through.
rm -f "$conf" && mv -f "$tmp" "$conf"
