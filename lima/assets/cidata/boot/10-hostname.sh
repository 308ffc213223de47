#!/bin/sh
# Set the hostname from meta-data on guests where nothing else did (no cloud-init).
# Shell builtins until there is something to change: under TCG each program started costs
# the guest tens of ms of CPU, and on most boots the name is already set.
# Root only: boot.sh's effective uid (LIMA_BOOT_UID, read from /proc), else id(1).
[ "${LIMA_BOOT_UID:-$(id -u)}" -eq 0 ] || exit 0
# local-hostname's value, as `$(sed -n 's/^local-hostname: *//p' meta-data)` gave it.
want="" nl="
"
while IFS= read -r line || [ -n "$line" ]; do
	case "$line" in local-hostname:*) ;; *) continue ;; esac
	line="${line#local-hostname:}"
	while :; do
		case "$line" in " "*) line="${line# }" ;; *) break ;; esac
	done
	want="$want$line$nl"
done 2>/dev/null <"${LIMA_CIDATA_MNT}/meta-data"
while :; do
	case "$want" in *"$nl") want="${want%"$nl"}" ;; *) break ;; esac
done
[ -n "$want" ] || exit 0
# The kernel's name, which hostname(1) prints.
have=""
read -r have 2>/dev/null </proc/sys/kernel/hostname || have=$(hostname 2>/dev/null)
[ "$have" = "$want" ] && exit 0
hostname "$want" || exit 1
echo "$want" >/etc/hostname
grep -qs "[[:space:]]$want\$" /etc/hosts || echo "127.0.1.1 $want" >>/etc/hosts
