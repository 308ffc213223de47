#!/bin/sh
# lima-guestagent.sh: the guest agent for guests without python3 (build:tiny, busybox).
#
# Installed and started by boot/30-guestagent.sh when python3 is missing. It speaks the
# protocol documented in util/lima-guestagent (one JSON line per report with "ports",
# "added", "removed"; "agent": "sh") on the virtio port io.lima-vm.guest_agent.0, from a
# poll of /proc/net/{tcp,tcp6,udp,udp6} every LIMA_GA_INTERVAL seconds (0.5). POSIX sh,
# awk, mkfifo, mv and sleep only (busybox applets on build:tiny).
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

# One awk pass per poll: the previous state ($1), then the /proc/net tables. When the set
# changed (or -v force=1) it writes the new state to `out` and prints one protocol line;
# otherwise it prints nothing. Few processes per poll: forks are dear in a TCG guest.
PROG='
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
function item(key,   f) {
	split(key, f, " ")
	return "{\"proto\":\"" f[1] "\",\"ip\":\"" f[2] "\",\"port\":" f[3] "}"
}
FILENAME == ARGV[1] { old[$0] = 1; next }
FNR == 1 { next }
{
	proto = (FILENAME ~ /udp/) ? "udp" : "tcp"
	if ($4 != ((proto == "tcp") ? "0A" : "07")) next
	split($2, a, ":")
	key = proto " " ((length(a[1]) == 32) ? ip6(a[1]) : ip4(a[1])) " " hex(a[2])
	if (!(key in cur)) { cur[key] = 1; keys[++nc] = key }
}
END {
	changed = force
	all = ""; add = ""; rem = ""
	for (i = 1; i <= nc; i++) {
		all = all (i > 1 ? "," : "") item(keys[i])
		if (!(keys[i] in old)) { add = add (add == "" ? "" : ",") item(keys[i]); changed = 1 }
	}
	for (k in old) if (!(k in cur)) { rem = rem (rem == "" ? "" : ",") item(k); changed = 1 }
	if (!changed) exit 0
	printf "" > out
	for (i = 1; i <= nc; i++) print keys[i] > out
	close(out)
	printf "{\"v\":1,\"agent\":\"sh\",\"seq\":%d,\"ports\":[%s],\"added\":[%s],\"removed\":[%s]}\n", seq, all, add, rem
}'

mkdir -p "$STATE"
: >"$STATE/old"
TABLES=""
for t in tcp tcp6 udp udp6; do
	[ -r "${LIMA_GA_PROC:-/proc}/net/$t" ] && TABLES="$TABLES ${LIMA_GA_PROC:-/proc}/net/$t"
done
# A pause without a process when the shell's read takes a fractional -t (busybox ash).
pause() { sleep "$INTERVAL"; }
rm -f "$STATE/tick"
if mkfifo "$STATE/tick" 2>/dev/null && exec 4<>"$STATE/tick"; then
	(read -t 0.01 x <&4) 2>/dev/null
	# A timeout is 1 in busybox ash, above 128 in bash; dash has no -t (2).
	rc=$?
	if [ "$rc" -eq 1 ] || [ "$rc" -gt 128 ]; then
		pause() { read -t "$INTERVAL" x <&4; }
	fi
fi
[ -n "${LIMA_GA_ONCE:-}" ] && {
	# For tests: print one report of the current state and exit.
	# shellcheck disable=SC2086 # TABLES is a list of paths without spaces
	awk -v seq=1 -v force=1 -v out="$STATE/new" "$PROG" "$STATE/old" $TABLES
	exit 0
}

until dev=$(find_port); do sleep 1; done
exec 3>"$dev"
seq=0
quiet=0
while :; do
	force=0
	{ [ "$seq" -eq 0 ] || [ "$quiet" -ge "$RESEND" ]; } && force=1
	# shellcheck disable=SC2086
	line=$(awk -v seq=$((seq + 1)) -v force=$force -v out="$STATE/new" "$PROG" "$STATE/old" $TABLES)
	if [ -n "$line" ]; then
		seq=$((seq + 1))
		# The write waits while no host agent is connected; the state goes out again later.
		printf '%s\n' "$line" >&3 || exit 1
		mv -f "$STATE/new" "$STATE/old"
		quiet=0
	else
		quiet=$((quiet + 1))
	fi
	pause
done
