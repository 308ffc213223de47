#!/bin/sh
# lima-guestagent.sh: the guest agent for guests without python3 (build:tiny, busybox).
#
# Installed and started by boot/30-guestagent.sh when python3 is missing. It speaks the
# protocol documented in util/lima-guestagent (one JSON line per report with "ports",
# "added", "removed"; "agent": "sh") on the virtio port io.lima-vm.guest_agent.0, from a
# poll of /proc/net/{tcp,tcp6,udp,udp6} every LIMA_GA_INTERVAL seconds (0.5). POSIX sh,
# awk, sort, cmp and sleep only (busybox applets on build:tiny).
set -u
NAME=io.lima-vm.guest_agent.0
INTERVAL="${LIMA_GA_INTERVAL:-0.5}"
RESEND="${LIMA_GA_RESEND:-6}" # polls without a change before the state is sent again
STATE="${LIMA_GA_STATE:-/run/lima-guestagent}"

find_port() {
	if [ -e "/dev/virtio-ports/$NAME" ]; then
		echo "/dev/virtio-ports/$NAME"
		return 0
	fi
	for d in /sys/class/virtio-ports/*; do
		[ "$(cat "$d/name" 2>/dev/null)" = "$NAME" ] && { echo "/dev/${d##*/}"; return 0; }
	done
	return 1
}

# "proto ip port" per listening TCP / unconnected UDP socket, sorted, unique.
list_ports() {
	awk '
	function hex(s,   i, v) {
		v = 0
		for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789ABCDEF", toupper(substr(s, i, 1))) - 1
		return v
	}
	function ip4(h) {
		return hex(substr(h, 7, 2)) "." hex(substr(h, 5, 2)) "." hex(substr(h, 3, 2)) "." hex(substr(h, 1, 2))
	}
	function ip6(h,   w, word, b, out) {
		out = ""
		for (w = 0; w < 4; w++) {
			word = substr(h, w * 8 + 1, 8)
			b = substr(word, 7, 2) substr(word, 5, 2) substr(word, 3, 2) substr(word, 1, 2)
			out = out (w ? ":" : "") substr(b, 1, 4) ":" substr(b, 5, 4)
		}
		return out
	}
	FNR == 1 { next }
	{
		proto = (FILENAME ~ /udp/) ? "udp" : "tcp"
		want = (proto == "tcp") ? "0A" : "07"
		if ($4 != want) next
		n = split($2, a, ":")
		ip = (length(a[1]) == 32) ? ip6(a[1]) : ip4(a[1])
		print proto, ip, hex(a[2])
	}' /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 2>/dev/null | sort -u
}

# One protocol line from the previous ($1) and the current ($2) lists.
report() {
	awk -v seq="$3" '
	function item(line,   f) { split(line, f, " "); return "{\"proto\":\"" f[1] "\",\"ip\":\"" f[2] "\",\"port\":" f[3] "}" }
	function join(arr, n,   i, s) { s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? "," : "") arr[i]; return s }
	FILENAME == ARGV[1] { old[$0] = 1; next }
	{ cur[++nc] = $0; seen[$0] = 1 }
	END {
		for (i = 1; i <= nc; i++) { all[i] = item(cur[i]); if (!(cur[i] in old)) add[++na] = item(cur[i]) }
		for (k in old) if (!(k in seen)) rem[++nr] = item(k)
		printf "{\"v\":1,\"agent\":\"sh\",\"seq\":%d,\"ports\":[%s],\"added\":[%s],\"removed\":[%s]}\n", seq, join(all, nc), join(add, na), join(rem, nr)
	}' "$1" "$2"
}

mkdir -p "$STATE"
until dev=$(find_port); do sleep 1; done
exec 3>"$dev"
: >"$STATE/old"
seq=0
quiet=0
while :; do
	list_ports >"$STATE/new"
	if [ "$seq" -eq 0 ] || [ "$quiet" -ge "$RESEND" ] || ! cmp -s "$STATE/old" "$STATE/new"; then
		seq=$((seq + 1))
		# The write waits while no host agent is connected; the state goes out again later.
		report "$STATE/old" "$STATE/new" "$seq" >&3 || exit 1
		mv -f "$STATE/new" "$STATE/old"
		quiet=0
	else
		quiet=$((quiet + 1))
	fi
	sleep "$INTERVAL"
done
