#!/bin/sh
# Set the hostname from meta-data on guests where nothing else did (no cloud-init).
[ "$(id -u)" -eq 0 ] || exit 0
want=$(sed -n 's/^local-hostname: *//p' "${LIMA_CIDATA_MNT}/meta-data")
[ -n "$want" ] || exit 0
[ "$(hostname 2>/dev/null)" = "$want" ] && exit 0
hostname "$want" || exit 1
echo "$want" >/etc/hostname
grep -qs "[[:space:]]$want\$" /etc/hosts || echo "127.0.1.1 $want" >>/etc/hosts
